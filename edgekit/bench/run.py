"""One bench run: latency (interleaved calls), energy (alternating blocks), accuracy and the
accuracy-latency curve, early exit against full depth, all on one runner in one process.

Runs on the board (`python -m edgekit.bench`) and on the laptop (`edgekit bench`): numpy only,
Python 3.8 syntax, no TensorFlow. The result is one JSON-able dict; `text_lines` renders it.
"""
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from edgekit.bench.curve import accuracy_latency
from edgekit.bench.energy import EnergyOptions, EnergyProfile, energy_rows, measure_energy, preflight
from edgekit.bench.latency import MODES, Protocol, _read, bench
from edgekit.bench.meters import Meter
from edgekit.runtime.runner import EarlyExitRunner

SCHEMA = "edgekit.bench/1"

# The protocol in words; it goes into every result (and the report) next to its parameters.
PROTOCOL_STEPS = (
    "load the bundle once; one interpreter per stage, the thread count from the bundle (or --threads); the "
    "loading is timed (init_ms)",
    "first call of each mode timed on its own (first_call_ms), then warm-up up to `warmup` calls of each mode "
    "in all, discarded",
    "latency window: at least `runs` calls per mode and at least `min_seconds`, whichever is longer; batch 1; "
    "early exit and full depth alternate call by call, the pair order swapped every call, so drift hits both",
    "per call: end-to-end wall time (perf_counter), each stage's time and the exit taken; per mode "
    "p50/p90/p99/mean/std/min/max and throughput = 1000 / mean ms; the process's peak RSS at the end",
    "accuracy and exit distribution: the whole data set once per mode, batched (not timed)",
    "energy: idle baseline (half before, half after the blocks) while the process sleeps; then `blocks` "
    "blocks per mode of at least `block_seconds` each, order A B B A ..., one meter session per block, "
    "back-to-back batch-1 calls; per mode the blocks are added up; energy per inference = joules / calls, "
    "above idle = (joules - idle W x seconds) / calls; the meter is named and marked measured or estimated",
    "a block lasting over 1.5x its length (and over +0.5 s) means the process was stalled: it is discarded "
    "and run again (at most twice), and listed",
    "a meter that fails during the run is dropped for the next available one and the energy part restarts",
    "accuracy-latency curve: every exit's score and prediction recorded per sample; one threshold shared by "
    "all exits swept over the recorded scores; latency per point estimated from the per-stage means",
    "environment: machine, Python, interpreter package and version, threads, delegates, CPU governor and "
    "temperature (cpu0 / thermal_zone0) where readable, at the start and at the end",
)


def cpu_temp_c() -> Optional[float]:
    t = _read("/sys/class/thermal/thermal_zone0/temp")
    return None if t is None or not t.lstrip("-").isdigit() else int(t) / 1000.0


def run_bench(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray], protocol: Protocol,
              energy: EnergyOptions, profile: Optional[EnergyProfile],
              meters: Optional[Mapping[str, Meter]] = None, init_ms: Optional[float] = None) -> Dict[str, Any]:
    """Latency, energy, accuracy and the curve for both modes, from one run. init_ms: how long making the runner
    took (latency.timed_runner), when the caller timed it."""
    protocol.check()
    preflight(energy, profile, meters)                # a named meter that is absent fails before timing
    result = bench(runner, x, y, protocol)           # warm-up, interleaved latency window, accuracy
    result["startup"]["init_ms"] = init_ms
    result["energy"] = measure_energy(runner, x, energy, profile, meters)
    stage_ms = result["full_depth"]["stage_mean_ms"]
    result["curve"] = accuracy_latency(runner, x, y, stage_ms)
    m = runner.manifest
    result["bundle"] = {"model_name": m.model_name, "target": m.target, "bundle_id": m.bundle_id,
                        "stages": runner.num_stages, "exits": [s.exit.name for s in m.stages]}
    result["protocol"] = {"latency": result["protocol"], "energy": energy.to_dict(),
                          "profile": None if profile is None else profile.to_dict(), "steps": list(PROTOCOL_STEPS)}
    result["environment"]["cpu_temp_c_end"] = cpu_temp_c()
    result["schema"] = SCHEMA
    return result


def _table(header: Any, rows: List[Any]) -> List[str]:
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    return [line.format(*header), line.format(*("-" * w for w in widths))] + [line.format(*r) for r in rows]


def _watts(w: Optional[float]) -> str:
    return "n/a" if w is None else "{:.2f} W".format(w)


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else "{:.2%}".format(v)


def _ms(v: Optional[float]) -> str:
    return "n/a" if v is None else "{:.3f}".format(v)


def startup_lines(result: Dict[str, Any]) -> List[str]:
    """What one answer costs a fresh process, and the memory the run took (benchmark_model's init, first
    inference and peak memory)."""
    st, mem = result.get("startup"), result.get("memory") or {}
    if not st:
        return []
    first = st["first_call_ms"]
    return ["startup: init {} ms (bundle checks, interpreters)  first call {} ms early exit, {} ms full depth  "
            "peak RSS {}".format("n/a" if st.get("init_ms") is None else "{:.1f}".format(st["init_ms"]),
                                 _ms(first.get("early_exit")), _ms(first.get("full_depth")),
                                 "n/a" if mem.get("peak_rss_mb") is None else "{:.1f} MiB".format(mem["peak_rss_mb"]))]


def text_lines(result: Dict[str, Any]) -> List[str]:
    """The human summary printed by `edgekit bench`."""
    b = result.get("bundle", {})
    env = result["environment"]
    out = ["{} (target {}, bundle {})  {} {}  threads per stage {}  governor {}  CPU {}".format(
        b.get("model_name", "?"), b.get("target", "?"), b.get("bundle_id", "?"), env["interpreter"]["name"],
        env["interpreter"]["version"], env.get("stage_threads", env["threads"]),
        env.get("cpu_governor") or "unreadable",
        "unreadable" if env.get("cpu_temp_c") is None else "{:.1f} C".format(env["cpu_temp_c"]))]
    jet = env.get("jetson")
    if jet:
        mode, clocks = jet["nvpmodel"], jet["jetson_clocks"]["on"]
        out.append("jetson: nvpmodel mode {} ({})  jetson_clocks {}".format(
            mode["id"] if mode["id"] is not None else "?", mode["name"] or mode["source"],
            "unknown" if clocks is None else "on" if clocks else "off"))
    rows = []
    for mode in MODES:
        r = result[mode]
        lat = r["latency_ms"]
        rows.append((mode, _pct(r["accuracy"]), str(r["calls"]), "{:.3f}".format(lat["mean"]),
                     _ms(lat.get("std")), "{:.3f}".format(lat["p50"]), "{:.3f}".format(lat["p90"]),
                     "{:.3f}".format(lat["p99"]), "{:.1f}".format(r["throughput_per_s"]), str(r["exit_histogram"])))
    out += _table(("mode", "accuracy", "calls", "mean ms", "std", "p50", "p90", "p99", "per s", "exits"), rows)
    out.append("speedup (full-depth mean / early-exit mean): {:.2f}x".format(result["speedup"]))
    out += startup_lines(result)
    out += ["note: " + line for line in result.get("borrowed_from_profile", [])]
    e = result.get("energy")
    if e:
        out.append("energy: meter {} ({}) - {}".format(e["meter"], e["kind"].upper(), e["source"]))
        out.append("  idle baseline {:.2f} W over {:.2f} s".format(e["idle"]["mean_watts"], e["idle"]["seconds"]))
        out += ["  " + ln for ln in _table(("mode", "mJ/inference", "mJ above idle", "mean W", "calls", "seconds"),
                                           energy_rows(e))]
        ratio = e.get("ratio_above_idle")
        out.append("  energy above idle, full depth / early exit: {}".format(
            "n/a (early exit not above idle)" if ratio is None else "{:.2f}x".format(ratio)))
        over = e.get("overrun_blocks", [])
        if over:
            out.append("  {} energy block(s) overran (process stalled) and were run again: {}".format(
                len(over), ", ".join("{} {:.1f} s".format(b["mode"], b["seconds"]) for b in over)))
        for r in e.get("rails", []):
            out.append("  rail {}: idle {}, early exit {}, full depth {}{}".format(
                r["rail"], *(_watts(r[k + "_w"]) for k in ("idle", "early_exit", "full_depth")),
                " ({})".format(r["note"]) if r.get("note") else ""))
        out += ["  warning: " + w for w in e.get("warnings", [])]
        for f in e.get("failed_during_run", []):
            out.append("  meter {} failed during the run and was dropped: {}".format(f["meter"], f["error"]))
    return out
