"""Interleaved timing of candidate builds: the cost protocol used for every precision decision.

Every candidate (a call with no arguments, e.g. one stage build run on one batch-1 sample) is warmed up, then
all are called round by round, in a new random order each round (seeded) so that drift and load from other
processes hit every candidate alike and no candidate always runs after the same one (a rotating order keeps
each candidate's predecessor fixed, and a predecessor with large weights leaves it cold caches), in chunks of rounds until every median moves by less than `rel_tol` from one chunk to
the next (bounded by `max_rounds` and `max_seconds`). Each candidate's cost is its median with the spread
(quartiles) and the number of calls. One function, `measure_candidates`, so that the project-wide protocol can
replace it without touching its callers.
"""
import os
import platform
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup: int = 3
    chunk: int = 10
    min_rounds: int = 20
    max_rounds: int = 300
    rel_tol: float = 0.03
    max_seconds: float = 8.0

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), interleaved=True, batch=1, threads=1, statistic="median")


@dataclass(frozen=True)
class Cost:
    median_ms: float
    p25_ms: float
    p75_ms: float
    calls: int
    stable: bool

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @classmethod
    def of(cls, times_ms: Sequence[float], stable: bool) -> "Cost":
        q = np.percentile(np.asarray(times_ms, np.float64), [50, 25, 75])
        return cls(float(q[0]), float(q[1]), float(q[2]), len(times_ms), stable)


def machine() -> Dict[str, Any]:
    """Where a measurement ran: CPU model, architecture and core count."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.lower().startswith("model name")), model)
    except OSError:
        pass
    return {"cpu_model": model, "arch": platform.machine(), "cores": os.cpu_count() or 1}


def _stable(times: List[List[float]], before: int, rel_tol: float) -> bool:
    for t in times:
        old, new = float(np.median(t[:before])), float(np.median(t))
        if new <= 0 or abs(new - old) > rel_tol * new:
            return False
    return True


def measure_candidates(calls: Mapping[Hashable, Callable[[], Any]], protocol: Optional[Protocol] = None,
                       clock: Callable[[], float] = time.perf_counter, seed: int = 0) -> Dict[Hashable, Cost]:
    """The cost of every candidate, by key. clock: seconds (injectable: tests use a fake clock); seed: the
    order of the calls in each round."""
    proto = protocol or Protocol()
    keys = list(calls)
    fns = [calls[k] for k in keys]
    if not fns:
        return {}
    for _ in range(proto.warmup):
        for fn in fns:
            fn()
    times: List[List[float]] = [[] for _ in keys]
    rng, order = random.Random(seed), list(range(len(fns)))
    start, rounds, stable = clock(), 0, False
    while rounds < proto.max_rounds:
        for _ in range(proto.chunk):
            rng.shuffle(order)
            for j in order:
                t0 = clock()
                fns[j]()
                times[j].append((clock() - t0) * 1000.0)
            rounds += 1
        if rounds >= proto.min_rounds and _stable(times, rounds - proto.chunk, proto.rel_tol):
            stable = True
            break
        if clock() - start > proto.max_seconds:
            break
    return {k: Cost.of(t, stable) for k, t in zip(keys, times)}
