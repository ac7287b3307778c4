"""A load controller: shifts every early exit's threshold by one offset, online, to hold a target mean
(or p95) latency while input difficulty changes, never leaving the bounds fitted with the thresholds.

Too slow -> lower thresholds (more samples leave early); too fast -> raise them (more accuracy).
A stochastic-approximation (integral) controller: every call moves the offset by gain x the call's
relative error (mean target), or by gain x (exceeded - 0.05) x 20 (p95 target, quantile tracking), so it
settles where the expected error is zero. Its state is observable with state().
Cost is the measured wall time of each call ("wall") or the bundle's stage costs summed up to the exit
each sample took ("model": deterministic, for tests and for planning). Python 3.8, numpy only.
"""
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import ConfigError

STATISTICS = ("mean", "p95")
COSTS = ("wall", "model")


class LoadController:
    def __init__(self, runner: Any, target_ms: float, statistic: str = "mean", gain: float = 0.005,
                 window: int = 128, cost: str = "wall",
                 bounds: Optional[Sequence[Tuple[float, float]]] = None) -> None:
        if not target_ms > 0:
            raise ConfigError("target latency must be > 0 ms, got {!r}".format(target_ms))
        if statistic not in STATISTICS:
            raise ConfigError("unknown statistic {!r}; allowed: {}".format(statistic, ", ".join(STATISTICS)))
        if cost not in COSTS:
            raise ConfigError("unknown cost {!r}; allowed: {}".format(cost, ", ".join(COSTS)))
        self.runner, self.target_ms, self.statistic, self.gain, self.cost = runner, float(target_ms), statistic, \
            float(gain), cost
        self.base = runner.thresholds()[:-1]
        fitted = runner.manifest.extra.get("thresholds", {}).get("bounds")
        self.bounds = [tuple(b) for b in (bounds or fitted or [(0.0, 1.0)] * len(self.base))]
        if len(self.bounds) != len(self.base):
            raise ConfigError("{} threshold bounds given for {} early exits".format(len(self.bounds), len(self.base)))
        self._cum = np.cumsum([s.latency_ms or 0.0 for s in runner.manifest.stages])
        self._window = deque(maxlen=window)   # type: Deque[float]
        self.offset = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def thresholds(self) -> List[float]:
        ths = [min(max(b + self.offset, lo), hi) for b, (lo, hi) in zip(self.base, self.bounds)]
        return ths + [0.0]

    def run(self, x: Any) -> Any:
        import time

        with self._lock:
            ths = self.thresholds()
        t0 = time.perf_counter()
        result = self.runner.run(x, thresholds=ths)
        wall = (time.perf_counter() - t0) * 1000.0
        cost = wall / len(result.outputs) if self.cost == "wall" else float(np.mean(self._cum[result.exits]))
        self.observe(cost)
        return result

    def observe(self, cost_ms: float) -> None:
        with self._lock:
            self._window.append(cost_ms)
            self.calls += 1
            if self.statistic == "mean":
                error = (cost_ms - self.target_ms) / self.target_ms
            else:
                error = ((1.0 if cost_ms > self.target_ms else 0.0) - 0.05) * 20.0
            # the offsets that still move some threshold (beyond them everything sits on a bound)
            lo = min(lo_b - b for b, (lo_b, _) in zip(self.base, self.bounds))
            hi = max(hi_b - b for b, (_, hi_b) in zip(self.base, self.bounds))
            self.offset = float(min(max(self.offset - self.gain * error, min(lo, 0.0)), max(hi, 0.0)))

    def _statistic(self) -> float:
        vals = np.asarray(self._window, dtype=np.float64)
        return float(vals.mean() if self.statistic == "mean" else np.percentile(vals, 95))

    def state(self) -> Dict[str, Any]:
        with self._lock:
            return {"target_ms": self.target_ms, "statistic": self.statistic,
                    "observed_ms": self._statistic() if self._window else None, "offset": self.offset,
                    "thresholds": self.thresholds(), "bounds": [list(b) for b in self.bounds],
                    "calls": self.calls, "cost": self.cost}


def load_controller(runner: Any, target_ms: Optional[float], full_depth: bool = False,
                    budgeted: bool = False) -> Optional[LoadController]:
    """The controller `--target-ms` asks for (wall-clock cost, mean statistic), or None without a target. It moves
    the exit thresholds, so it does not combine with a full-depth run or a latency budget."""
    if target_ms is None:
        return None
    if full_depth or budgeted:
        raise ConfigError("--target-ms {:g} moves the early exits' thresholds; got it with {}; allowed: --target-ms "
                          "alone, or --full-depth, or --budget-ms/--anytime".format(
                              target_ms, "--full-depth" if full_depth else "--budget-ms/--anytime"))
    if isinstance(target_ms, bool) or not isinstance(target_ms, (int, float)) or not 0 < target_ms < float("inf"):
        raise ConfigError("--target-ms must be a finite number of milliseconds > 0, got {!r}".format(target_ms))
    return LoadController(runner, float(target_ms))


def controller_line(state: Dict[str, Any]) -> str:
    """One line on what the load controller did: its target, the latency it saw, where it left the thresholds."""
    seen = "n/a" if state["observed_ms"] is None else "{:.3f}".format(state["observed_ms"])
    return "load controller: target {:g} ms ({}), observed {} ms over the last calls, offset {:+.4f}, thresholds " \
        "{}".format(state["target_ms"], state["statistic"], seen, state["offset"],
                    " ".join("{:.3f}".format(t) for t in state["thresholds"][:-1]))
