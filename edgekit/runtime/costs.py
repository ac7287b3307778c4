"""Per-stage latency learnt online on the device, seeded from the manifest's measured stage costs.

predict(k, n) is the typical (median) cost of stage k for n samples: a streaming median of recent
batch-1-equivalent observations, each moving the estimate by STEP of itself towards the observation (unless it
is within half a step already). A single
stall (a preemption) moves it by STEP only, so it does not make the budget mode skip stages for the calls
after it; a machine that really became slower moves it within a few dozen calls. O(1) per call: it runs
between stages. Python 3.8, numpy only.
"""
import threading
from typing import List, Optional, Sequence

STEP = 0.03


class StageCosts:
    def __init__(self, seeds_ms: Sequence[Optional[float]]) -> None:
        known = sorted(float(s) for s in seeds_ms if s is not None and s > 0)
        fallback = known[len(known) // 2] if known else 1.0
        self._median = [float(s) if s is not None and s > 0 else fallback for s in seeds_ms]   # type: List[float]
        self._measured = [float(s) if s is not None and s > 0 else None for s in seeds_ms]
        self._lock = threading.Lock()

    def observe(self, k: int, ms: float, batch: int = 1) -> None:
        per = ms / max(batch, 1)
        with self._lock:
            m = self._median[k]
            if per > m * (1.0 + STEP / 2):       # within half a step of the estimate: no move (no jitter)
                self._median[k] = m * (1.0 + STEP)
            elif per < m * (1.0 - STEP / 2):
                self._median[k] = m * (1.0 - STEP)

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

    def snapshot(self) -> List[float]:
        with self._lock:
            return list(self._median)
