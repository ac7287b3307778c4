"""Simulated time for tests that would otherwise depend on how busy the machine is.

Time moves only when the code under test waits (`sleep`) or when a `CostedRunner` runs a call: then it moves by
the bundle's fixed stage costs (manifest latency_ms, see bundle_edit.set_stage_costs) of the stages that ran.
The stages themselves are real TFLite interpreters; only the clock is simulated. A meter's background sampler
is waited for (`wait_for_samples`), never slept for.
"""
import threading
from typing import Any, Callable, List, Optional

from edgekit.bench.meters import Clock


class SimulatedClock:
    def __init__(self, on_advance: Optional[Callable[[float], None]] = None) -> None:
        """on_advance(now) runs after every step, under the clock's lock (e.g. to move a sensor's counter)."""
        self.t = 0.0
        self.on_advance = on_advance
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds
            if self.on_advance is not None:
                self.on_advance(self.t)

    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


class CostedRunner:
    """An EarlyExitRunner whose calls take the bundle's stage costs in simulated time. `after_call(n)` runs after
    the n-th call (1-based), to break a sensor or stall the machine at a known point of a run."""

    def __init__(self, runner: Any, clock: SimulatedClock,
                 after_call: Optional[Callable[[int], None]] = None) -> None:
        self.runner, self.clock, self.after_call = runner, clock, after_call
        self.costs_s = [float(s.latency_ms) / 1000.0 for s in runner.manifest.stages]   # type: List[float]
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        """Everything but run() is the wrapped runner's (its manifest, thresholds, interpreter...)."""
        return getattr(self.runner, name)

    def run(self, x: Any, full_depth: bool = False, **how: Any) -> Any:
        r = self.runner.run(x, full_depth=full_depth, **how)
        self.clock.advance(sum(self.costs_s[:len(r.stage_ms)]))
        self.calls += 1
        if self.after_call is not None:
            self.after_call(self.calls)
        return r


def wait_for_samples(session: Any, count: int, timeout_s: float = 60.0) -> None:
    """Wait until a meter session holds `count` samples: a test that needs the background sampler to have run
    waits for it to have run, instead of sleeping and hoping. The timeout only guards against a hang."""
    import time

    deadline = time.monotonic() + timeout_s
    while len(session.samples) < count:
        assert time.monotonic() < deadline, "the sampler took {} of {} samples in {:g} s".format(
            len(session.samples), count, timeout_s)
        time.sleep(0.005)
