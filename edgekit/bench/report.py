"""The bench report: `edgekit bench ... --report DIR` writes JSON, CSV and PNG plots, atomically.

Runs on the laptop (matplotlib, Agg canvas, imported only when plots are drawn); the board sends the
result dict (`python -m edgekit.bench --json`), and this module turns it into files:

    report.json            the whole result: protocol, environment, latency, energy, curve, raw per-call ms
    latency.csv            per mode: calls, accuracy, mean/std/p50/p90/p99/min/max ms, throughput, stage means
    latency_raw.csv        every timed call: mode, index, ms, the exit it took, each stage's ms (empty: not run)
    energy.csv             per mode: meter, measured/estimated, calls, seconds, J total and above idle, watts
    curve.csv              the shared-threshold sweep (and the chosen point): accuracy, estimated ms, exits
    exits.csv              exit distribution per mode
    latency_histogram.png  accuracy_latency.png  exit_distribution.png  energy.png

The files go to a temporary directory beside DIR, which is then renamed to DIR: a failure leaves nothing
half-written. An existing DIR is refused unless force=True; a DIR that is a file is always refused.
"""
import csv
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgekit.atomic import swap_in
from edgekit.errors import EdgekitError

MODES = ("early_exit", "full_depth")
PLOTS = ("latency_histogram.png", "accuracy_latency.png", "exit_distribution.png", "energy.png")


class ReportError(EdgekitError):
    """The report directory cannot be written, or the result lacks what a report needs."""


def check_report_dir(directory: str, force: bool) -> str:
    """The absolute report path, or ReportError; called before a run so that a bad DIR fails at once."""
    path = os.path.abspath(directory)
    if os.path.isfile(path) or (os.path.exists(path) and not os.path.isdir(path)):
        raise ReportError("report directory {} is a file; allowed: a new directory, or an existing report "
                          "directory with --force".format(directory))
    if os.path.isdir(path) and not force:
        raise ReportError("report directory {} already exists; allowed: a new directory, or --force to "
                          "replace it".format(directory))
    parent = os.path.dirname(path)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ReportError("report directory {}: its parent {} is a file".format(directory, parent))
    return path


def write_report(result: Dict[str, Any], directory: str, force: bool = False) -> List[str]:
    """Write every file into a temp dir beside `directory`, then rename it into place; the file names."""
    dest = check_report_dir(directory, force)
    for key in MODES + ("raw_ms", "protocol", "environment"):
        if key not in result:
            raise ReportError("the bench result has no {!r}; a report needs latency, raw times and the protocol "
                              "(from edgekit bench or python -m edgekit.bench --json)".format(key))
    parent = os.path.dirname(dest)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".{}.tmp-".format(os.path.basename(dest)), dir=parent)
        os.chmod(tmp, 0o755)          # mkdtemp makes it 0700; a report is for reading
    except OSError as exc:
        raise ReportError("cannot create the report directory {}: {}".format(directory, exc))
    try:
        names = _write_all(result, tmp)
        _move_into_place(tmp, dest, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def _move_into_place(tmp: str, dest: str, force: bool) -> None:
    if os.path.isdir(dest) and not force:
        raise ReportError("report directory {} appeared during the run; not replaced without --force".format(dest))
    try:
        swap_in(tmp, dest)
    except OSError as exc:
        raise ReportError("cannot move the report into {}: {}".format(dest, exc))


def _write_all(result: Dict[str, Any], d: str) -> List[str]:
    with open(os.path.join(d, "report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    _csv(os.path.join(d, "latency.csv"), _latency_rows(result))
    _csv(os.path.join(d, "latency_raw.csv"), _raw_rows(result))
    if result.get("energy"):
        _csv(os.path.join(d, "energy.csv"), _energy_rows(result["energy"]))
    if result.get("curve", {}).get("points"):
        _csv(os.path.join(d, "curve.csv"), _curve_rows(result["curve"]))
    _csv(os.path.join(d, "exits.csv"), _exit_rows(result))
    from edgekit.bench import plots

    plots.draw_all(result, d)
    return sorted(os.listdir(d))


def _csv(path: str, rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def _num(v: Optional[float], fmt: str = "{:.6f}") -> str:
    return "" if v is None else fmt.format(v)


def _latency_rows(result: Dict[str, Any]) -> List[Sequence[Any]]:
    stages = len(result["full_depth"]["stage_mean_ms"])
    head = ["mode", "calls", "accuracy", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
            "throughput_per_s"] + ["stage{}_mean_ms".format(k) for k in range(stages)]
    rows = [head]   # type: List[Sequence[Any]]
    for m in MODES:
        r = result[m]
        lat = r["latency_ms"]
        rows.append([m, r["calls"], _num(r["accuracy"])] + [_num(lat.get(k)) for k in
                                                             ("mean", "std", "p50", "p90", "p99", "min", "max")]
                    + [_num(r["throughput_per_s"])] + [_num(s) for s in r["stage_mean_ms"]])
    return rows


def _raw_rows(result: Dict[str, Any]) -> List[Sequence[Any]]:
    """Every timed call: mode, index, ms, exit, stage<k>_ms (empty where the call stopped before stage k). A result
    from an edgekit older than the per-call record has the first three columns only."""
    stages = len(result["full_depth"]["stage_mean_ms"])
    calls = result.get("raw_calls")
    rows = [["mode", "call", "ms"] + (["exit"] + ["stage{}_ms".format(k) for k in range(stages)] if calls else [])]
    for m in MODES:
        for i, ms in enumerate(result["raw_ms"][m]):
            row = [m, i, "{:.6f}".format(ms)]   # type: List[Any]
            if calls:
                per = calls[m]["stage_ms"][i]
                row += [calls[m]["exits"][i]] + ["{:.6f}".format(per[k]) if k < len(per) else "" for k in range(stages)]
            rows.append(row)
    return rows


def _energy_rows(e: Dict[str, Any]) -> List[Sequence[Any]]:
    rows = [["mode", "meter", "measured_or_estimated", "inferences", "seconds", "joules_per_inference",
             "joules_per_inference_above_idle", "mean_watts", "idle_watts", "blocks"]]   # type: List[Sequence[Any]]
    for m in MODES:
        r = e[m]
        rows.append([m, e["meter"], e["kind"], r["inferences"], _num(r["seconds"]), _num(r["joules_total"], "{:.9f}"),
                     _num(r["joules_above_idle"], "{:.9f}"), _num(r["mean_watts"]), _num(r["idle_watts"]),
                     len(r.get("blocks", []))])
    return rows


def _curve_rows(c: Dict[str, Any]) -> List[Sequence[Any]]:
    k = len(c["chosen"]["exit_fraction"]) if c.get("chosen") else len(c["points"][0]["exit_fraction"])
    rows = [["point", "thresholds", "accuracy", "estimated_ms"] + ["exit{}_fraction".format(i) for i in range(k)]]
    pts = [("sweep", p) for p in c["points"]] + ([("chosen", c["chosen"])] if c.get("chosen") else [])
    for kind, p in pts:
        rows.append([kind, " ".join("{:.6g}".format(t) for t in p["thresholds"]), _num(p["accuracy"]),
                     _num(p["estimated_ms"])] + [_num(f) for f in p["exit_fraction"]])
    return rows


def _exit_rows(result: Dict[str, Any]) -> List[Sequence[Any]]:
    names = result.get("bundle", {}).get("exits") or ["exit{}".format(i) for i in
                                                      range(len(result["early_exit"]["exit_histogram"]))]
    rows = [["mode", "exit", "name", "count", "fraction"]]   # type: List[Sequence[Any]]
    for m in MODES:
        hist = np.asarray(result[m]["exit_histogram"], dtype=np.float64)
        total = hist.sum() or 1.0
        rows += [[m, i, names[i] if i < len(names) else "exit{}".format(i), int(h), _num(h / total)]
                 for i, h in enumerate(hist)]
    return rows
