"""The one cost-measurement protocol: every decision that uses a stage's cost measures it here.

Thresholds, budget mode, pruning and precision by latency and the thread count per stage all compare
candidates (stages, thread counts, builds). They are measured the same way: warmed up, then called
interleaved round by round, in a new random order each round (seeded): drift and load from other processes
hit every candidate alike, and no candidate always runs after the same one (a rotating order keeps each
candidate's predecessor fixed, and a predecessor with large weights leaves it cold caches), in chunks of rounds until every candidate's median moves by less than `rel_tol` from one chunk to the
next (bounded by `max_rounds` and `max_seconds`), and recorded with their spread (p10, p25, p75, p90),
the number of calls and the machine. Runs on the board too: numpy only, Python 3.8 syntax.
"""
import os
import platform
import random
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence

import numpy as np

from edgekit.errors import ConfigError

CONVERTING_MACHINE = "converting-machine"
BOARD = "board"
MEASURED_ON = (CONVERTING_MACHINE, BOARD)
FEWER_THREADS_MARGIN = 0.05     # more threads must be this much faster (median) to be chosen over fewer


@dataclass(frozen=True)
class CostProtocol:
    warmup: int = 5              # discarded calls per candidate
    chunk: int = 10              # rounds between two stability checks
    min_rounds: int = 20
    max_rounds: int = 300
    rel_tol: float = 0.03        # the median is stable when a chunk moves it by less than this fraction
    max_seconds: float = 20.0    # the whole measurement stops here, stable or not

    def check(self) -> "CostProtocol":
        if self.warmup < 0 or self.chunk < 1 or self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ConfigError("cost protocol {}: allowed warmup >= 0, chunk >= 1, 1 <= min_rounds <= "
                              "max_rounds".format(asdict(self)))
        if not 0.0 < self.rel_tol < 1.0 or not self.max_seconds > 0:
            raise ConfigError("cost protocol {}: allowed 0 < rel_tol < 1 and max_seconds > 0".format(asdict(self)))
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), interleaved=True, batch=1, statistic="median")


@dataclass(frozen=True)
class Cost:
    """One candidate's measured cost, in milliseconds."""
    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    calls: int
    stable: bool                 # the median settled within rel_tol before the bounds stopped it

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), iqr_ms=self.iqr_ms)

    @classmethod
    def of(cls, times_ms: Sequence[float], stable: bool) -> "Cost":
        q = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 10, 25, 75, 90])
        return cls(*(float(v) for v in q), calls=len(times_ms), stable=stable)


def machine() -> Dict[str, Any]:
    """Where a measurement ran: host name, CPU model, architecture and core count."""
    info = {}   # type: Dict[str, str]
    try:
        with open("/proc/cpuinfo", "r") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    # x86: "model name"; arm64 boards: "Model" (e.g. Raspberry Pi 5 Model B) or "Hardware"; "model" alone on
    # x86 is a number
    model = info.get("model name") or info.get("hardware") or (info.get("model", "") if not
                                                                info.get("model", "").isdigit() else "")
    return {"hostname": socket.gethostname(), "cpu_model": model or platform.processor() or "unknown",
            "arch": platform.machine(),
            "cores": os.cpu_count() or 1}


def _stable(times: List[List[float]], before: int, rel_tol: float) -> bool:
    if before < 1:
        return False
    for t in times:
        old, new = float(np.median(t[:before])), float(np.median(t))
        if new <= 0 or abs(new - old) > rel_tol * new:
            return False
    return True


def measure_candidates(calls: Mapping[Hashable, Callable[[], Any]], protocol: Optional[CostProtocol] = None,
                       clock: Callable[[], float] = time.perf_counter, seed: int = 0) -> Dict[Hashable, Cost]:
    """Time every candidate (a call with no arguments) under the protocol; the cost of each, by key.
    clock: seconds (injectable, so tests use a fake clock and never real time); seed: the order of the calls
    in each round."""
    proto = (protocol or CostProtocol()).check()
    keys = list(calls)
    if not keys:
        return {}
    fns = [calls[k] for k in keys]
    for _ in range(proto.warmup):
        for fn in fns:
            fn()
    times = [[] for _ in keys]   # type: List[List[float]]
    rng, order = random.Random(seed), list(range(len(fns)))
    start = clock()
    rounds, stable = 0, False
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


def choose_threads(by_threads: Mapping[int, Cost]) -> int:
    """The thread count with the least median; fewer threads win unless more are clearly faster."""
    best = None   # type: Optional[int]
    for t in sorted(by_threads):
        if best is None or by_threads[t].median_ms < by_threads[best].median_ms * (1.0 - FEWER_THREADS_MARGIN):
            best = t
    if best is None:
        raise ConfigError("no thread count was measured")
    return best


def thread_candidates(upper: int, cores: Optional[int] = None) -> List[int]:
    """1 .. min(upper, cores): a profile's default_threads is an upper bound, the machine's cores another."""
    return list(range(1, max(1, min(int(upper), int(cores or os.cpu_count() or 1))) + 1))


def costs_section(table: Sequence[Mapping[int, Cost]], measured_on: str, protocol: CostProtocol,
                  where: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The manifest's `costs` record: per stage, each thread count's cost and the count chosen."""
    if measured_on not in MEASURED_ON:
        raise ConfigError("measured_on {!r}; allowed: {}".format(measured_on, ", ".join(MEASURED_ON)))
    stages = []
    for by_threads in table:
        chosen = choose_threads(by_threads)
        stages.append({"threads": chosen, "latency_ms": round(by_threads[chosen].median_ms, 5),
                       "by_threads": {str(t): by_threads[t].to_dict() for t in sorted(by_threads)}})
    return {"measured_on": measured_on, "machine": where or machine(), "protocol": protocol.to_dict(),
            "stages": stages}


def stage_cost_table(backend: Any, models: Sequence[bytes], feeds: Sequence[Mapping[str, np.ndarray]],
                     threads: Sequence[int], protocol: Optional[CostProtocol] = None,
                     clock: Callable[[], float] = time.perf_counter) -> List[Dict[int, Cost]]:
    """Every stage (TFLite bytes, its batch-1 inputs by name) at every thread count, measured together
    under one protocol run: per stage, {threads: Cost}."""
    from edgekit.runtime.interpreter import StageCall

    calls = {}   # type: Dict[Hashable, Callable[[], Any]]
    for k, (blob, feed) in enumerate(zip(models, feeds)):
        for t in threads:
            call = StageCall(backend.interpreter(model_content=blob, num_threads=int(t)).get_signature_runner())
            values = [np.ascontiguousarray(feed[n][:1]) for n in call.input_names]
            fetch = call.indices(list(call.output_details))
            calls[(k, int(t))] = (lambda c=call, v=values, f=fetch: c.invoke(v, f))
    costs = measure_candidates(calls, protocol, clock)
    return [{int(t): costs[(k, int(t))] for t in threads} for k in range(len(models))]


def resolve_stage_threads(runtime: Mapping[str, Any], stages: int, override: Optional[int] = None,
                          cores: Optional[int] = None) -> List[int]:
    """Interpreter threads per stage. An explicit override applies to every stage as given. Otherwise the
    counts measured per stage (runtime.stage_threads, written by convert or `edgekit profile`), else the
    profile's num_threads; both capped by this machine's cores, since the profile's count is an upper bound."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or not 1 <= override <= 256:
            raise ConfigError("threads {!r}: allowed an integer from 1 to 256".format(override))
        return [override] * stages
    cap = max(1, min(int(runtime.get("num_threads") or 1), int(cores or os.cpu_count() or 1)))
    per = runtime.get("stage_threads")
    if isinstance(per, list) and len(per) == stages:
        return [max(1, min(int(t), cap)) for t in per]
    return [cap] * stages


def model_costs(backend: Any, models: Mapping[Hashable, bytes], feed: Mapping[str, np.ndarray], threads: int = 1,
                protocol: Optional[CostProtocol] = None) -> Dict[Hashable, float]:
    """Median batch-1 cost (ms) of candidate builds that take the same inputs, measured together (interleaved)."""
    keys = list(models)
    table = stage_cost_table(backend, [models[k] for k in keys], [feed] * len(keys), [threads], protocol)
    return {k: row[threads].median_ms for k, row in zip(keys, table)}
