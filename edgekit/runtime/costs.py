"""Per-stage latency learnt online on the device, seeded from the manifest's stage costs.

predict(k, n) is conservative: the larger of a moving average and a high percentile of recent
batch-1 observations, scaled by the batch size. Python 3.8, numpy only.
"""
import threading
from collections import deque
from typing import Deque, List, Optional, Sequence

import numpy as np

WINDOW = 64
ALPHA = 0.2
QUANTILE = 98.0


class StageCosts:
    def __init__(self, seeds_ms: Sequence[Optional[float]]) -> None:
        known = [s for s in seeds_ms if s is not None and s > 0]
        fallback = float(np.median(known)) if known else 1.0
        self._ema = [float(s) if s is not None and s > 0 else fallback for s in seeds_ms]   # type: List[float]
        self._recent = [deque(maxlen=WINDOW) for _ in seeds_ms]                             # type: List[Deque[float]]
        self._lock = threading.Lock()

    def observe(self, k: int, ms: float, batch: int = 1) -> None:
        per = ms / max(batch, 1)
        with self._lock:
            self._ema[k] = (1 - ALPHA) * self._ema[k] + ALPHA * per
            self._recent[k].append(per)

    def predict(self, k: int, batch: int = 1) -> float:
        with self._lock:
            recent = self._recent[k]
            high = float(np.percentile(recent, QUANTILE)) if len(recent) >= 8 else max(list(recent) + [0.0])
            return max(self._ema[k], high) * max(batch, 1)

    def mean(self, k: int) -> float:
        return self._ema[k]

    def snapshot(self) -> List[float]:
        with self._lock:
            return list(self._ema)
