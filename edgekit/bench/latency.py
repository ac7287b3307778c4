"""The latency protocol: early exit and full depth, interleaved, batch 1, in one run.

1. load the bundle; 2. warm-up runs of both modes, discarded; 3. a steady-state window of at least
`runs` calls per mode and at least `min_seconds`, whichever is longer; the two modes alternate call by
call (and swap order every call) so that drift (thermal, frequency, other load) hits both equally;
4. per-call end-to-end and per-stage latency and the exit taken; p50/p90/p99/mean/std/min/max and throughput
per mode. Before the warm-up, the first call of each mode is timed on its own (lazy allocation, cold caches: what
a process that answers once pays), and the caller may time the runner's construction (`timed_runner`); the
process's peak resident memory is read at the end.
Accuracy is measured separately on the whole data set (batched), so timing stays batch 1.
numpy only; runs on the board.
"""
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgekit.bench.jetson_env import jetson_environment
from edgekit.errors import ConfigError
from edgekit.runtime.runner import EarlyExitRunner, evaluate

MODES = ("early_exit", "full_depth")


@dataclass(frozen=True)
class Protocol:
    runs: int = 200
    warmup: int = 20
    min_seconds: float = 0.0

    def check(self) -> "Protocol":
        if self.runs < 1:
            raise ConfigError("--runs must be at least 1, got {}".format(self.runs))
        if self.warmup < 0:
            raise ConfigError("--warmup must be 0 or more, got {}".format(self.warmup))
        if self.min_seconds < 0:
            raise ConfigError("--seconds must be 0 or more, got {}".format(self.min_seconds))
        return self


def percentiles(ms: List[float]) -> Dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()),
            "max": float(a.max()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def timed_runner(bundle: str, backend: Optional[str] = None, num_threads: Optional[int] = None,
                 clock: Callable[[], float] = time.perf_counter) -> Tuple[EarlyExitRunner, float]:
    """The bundle's runner and how long making it took, in ms (the bundle's checks and one interpreter per stage:
    benchmark_model's init time)."""
    t0 = clock()
    runner = EarlyExitRunner(bundle, backend=backend, num_threads=num_threads)
    return runner, (clock() - t0) * 1000.0


def peak_rss_mb() -> Optional[float]:
    """The process's peak resident set so far (MiB): the runtime, its interpreters, numpy and the data; None
    where getrusage is missing."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0     # kilobytes on Linux


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except OSError:
        return None


def environment(runner: EarlyExitRunner) -> Dict[str, Any]:
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    return {
        "machine": platform.machine(), "python": sys.version.split()[0],
        "interpreter": {"name": runner.backend.name, "version": runner.backend.version},
        "threads": runner.num_threads, "stage_threads": list(runner.stage_threads),
        "delegates": list(runner.delegate_status),
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_temp_c": None if temp is None or not temp.lstrip("-").isdigit() else int(temp) / 1000.0,
        "cpu_count": os.cpu_count(),
        "jetson": jetson_environment(),          # nvpmodel mode and jetson_clocks; None on other machines
    }


def measure(runner: Any, x: np.ndarray, protocol: Protocol,
            clock: Callable[[], float] = time.perf_counter) -> Dict[str, Dict[str, Any]]:
    """Raw timings: per mode, the first call's ms, then of every steady-state call the end-to-end ms, the exit and
    each stage's ms. `clock` (seconds) times the calls and the window."""
    protocol.check()
    n = len(x)
    samples = [x[i:i + 1] for i in range(n)]
    raw = {m: {"ms": [], "exits": [], "stage_ms": []} for m in MODES}   # type: Dict[str, Dict[str, Any]]
    for full in (False, True):
        raw[MODES[int(full)]]["first_call_ms"] = _timed_call(runner, samples[0], full, clock)[0]
    for i in range(1, protocol.warmup):       # the first calls count as warm-up
        for full in (False, True):
            runner.run(samples[i % n], full_depth=full)
    start = clock()
    i = 0
    while i < protocol.runs or clock() - start < protocol.min_seconds:
        order = (False, True) if i % 2 == 0 else (True, False)
        for full in order:
            dt, r = _timed_call(runner, samples[i % n], full, clock)
            rec = raw[MODES[int(full)]]
            rec["ms"].append(dt)
            rec["exits"].append(int(r.exits[0]))
            rec["stage_ms"].append(r.stage_ms)
        i += 1
    return raw


def _timed_call(runner: Any, sample: np.ndarray, full: bool, clock: Callable[[], float]) -> Tuple[float, Any]:
    t0 = clock()
    r = runner.run(sample, full_depth=full)
    return (clock() - t0) * 1000.0, r


def _stage_means(stage_ms: List[List[float]], stages: int) -> List[Optional[float]]:
    out = []
    for k in range(stages):
        vals = [s[k] for s in stage_ms if len(s) > k]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def bench(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray], protocol: Protocol,
          clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    raw = measure(runner, x, protocol, clock)
    result = {}  # type: Dict[str, Any]
    for mode in MODES:
        ev = evaluate(runner, x, y, full_depth=(mode == "full_depth"))
        ms = raw[mode]["ms"]
        result[mode] = {
            "latency_ms": percentiles(ms), "throughput_per_s": 1000.0 / float(np.mean(ms)),
            "accuracy": ev["accuracy"], "exit_histogram": ev["exit_histogram"],
            "stage_mean_ms": _stage_means(raw[mode]["stage_ms"], runner.num_stages), "calls": len(ms),
        }
    result["speedup"] = result["full_depth"]["latency_ms"]["mean"] / result["early_exit"]["latency_ms"]["mean"]
    result["thresholds"] = runner.thresholds()
    result["protocol"] = dict(asdict(protocol), batch=1, interleaved=True, samples=len(x))
    result["environment"] = environment(runner)
    result["startup"] = {"init_ms": None, "first_call_ms": {m: raw[m]["first_call_ms"] for m in MODES}}
    result["memory"] = {"peak_rss_mb": peak_rss_mb(), "source": "getrusage ru_maxrss of this process at the end "
                                                                 "of the latency window"}
    result["raw_ms"] = {m: raw[m]["ms"] for m in MODES}
    result["raw_calls"] = {m: {"exits": raw[m]["exits"], "stage_ms": raw[m]["stage_ms"]} for m in MODES}
    return result
