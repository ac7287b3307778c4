"""Per-stage latency learnt online on the device, seeded from the manifest's measured stage costs.

predict(k, n) is the typical (median) cost of stage k for n samples: a streaming median of recent
batch-1-equivalent observations, each moving the estimate by STEP of itself towards the observation (unless it
is within half a step already). A single
stall (a preemption) moves it by STEP only, so it does not make the budget mode skip stages for the calls
after it; a machine that really became slower moves it within a few dozen calls. O(1) per call: it runs
between stages. Python 3.8, numpy only.
"""
import threading
from typing import Dict, List, Optional, Sequence

STEP = 0.03


def _step(m: float, obs: float) -> float:
    """One streaming-median step: STEP of the estimate towards the observation, none within half a step."""
    if obs > m * (1.0 + STEP / 2):
        return m * (1.0 + STEP)
    if obs < m * (1.0 - STEP / 2):
        return m * (1.0 - STEP)
    return m


class StageCosts:
    def __init__(self, seeds_ms: Sequence[Optional[float]]) -> None:
        known = sorted(float(s) for s in seeds_ms if s is not None and s > 0)
        fallback = known[len(known) // 2] if known else 1.0
        self._median = [float(s) if s is not None and s > 0 else fallback for s in seeds_ms]   # type: List[float]
        self._measured = [float(s) if s is not None and s > 0 else None for s in seeds_ms]
        self._arrival = {}   # type: Dict[int, float]
        self._lock = threading.Lock()

    def observe(self, k: int, ms: float, batch: int = 1) -> None:
        with self._lock:
            self._median[k] = _step(self._median[k], ms / max(batch, 1))

    def observe_arrival(self, k: int, ms: float) -> None:
        """A call reached stage k `ms` after it started (batch-1 calls of the budget mode)."""
        with self._lock:
            self._arrival[k] = _step(self.arrival(k), ms)

    def arrival(self, k: int) -> float:
        """The typical time (ms) from a call's start to stage k: learnt, starting from the measured costs of the
        stages before it."""
        m = self._arrival.get(k)
        return sum(self.measured(j) for j in range(k)) if m is None else m

    def predict(self, k: int, batch: int = 1) -> float:
        return self._median[k] * max(batch, 1)

    def measured(self, k: int, batch: int = 1) -> float:
        """Stage k's cost as the bundle records it (measured alone, under the cost protocol, as a full-depth call
        runs it), else the learnt typical cost."""
        m = self._measured[k]
        return (self._median[k] if m is None else m) * max(batch, 1)

    def mean(self, k: int) -> float:
        """The typical cost of stage k at batch 1 (the median estimate)."""
        return self._median[k]
