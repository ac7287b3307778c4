"""What `edgekit optimize` writes: OUT/pareto.csv, OUT/pareto.png, OUT/report.json and the chosen bundle in
OUT/<target>/, all into a temporary directory beside OUT that is renamed into place at the end. OUT must not
exist: an optimizer run never overwrites one."""
import csv
import io
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from edgekit.errors import ConfigError
from edgekit.optimize.pareto import Point

LABELS = {"latency_ms": "latency (ms)", "energy_mj": "energy (mJ)", "size_bytes": "size (bytes)"}
COLUMNS = ("candidate", "thresholds", "accuracy", "latency_ms", "latency_from", "energy_mj", "energy_kind",
           "size_bytes", "exit_fractions", "costs_measured_on", "on_front", "chosen")


def check_out(out_dir: str) -> None:
    if os.path.lexists(out_dir):
        raise ConfigError("output {} exists; optimize never overwrites: give a directory that does not exist yet"
                          .format(out_dir))
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ConfigError("output {}: its parent directory {} does not exist".format(out_dir, parent))


def csv_text(pts: Sequence[Point], front: Sequence[Point], chosen: Point) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for p in sorted(pts, key=lambda p: (p.latency_ms, -p.accuracy)):
        w.writerow((p.candidate.key, "full-depth" if p.drop_share is None else " ".join(
            "{:.4f}".format(t) for t in p.thresholds), "{:.6f}".format(p.accuracy), "{:.6f}".format(p.latency_ms),
            p.latency_from, "{:.6f}".format(p.energy_mj), p.energy_kind, p.size_bytes,
            " ".join("{:.4f}".format(f) for f in p.exit_fractions), p.costs_measured_on,
            int(p in front), int(p == chosen)))
    return buf.getvalue()


def plot(path: str, pts: Sequence[Point], front: Sequence[Point], chosen: Point, base: Optional[Point],
         metric: str, limit: float, min_accuracy: float) -> None:
    from edgekit.bench.plots import _figure, _save

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p.metric(metric) for p in pts], [100 * p.accuracy for p in pts], s=14, c="#999999",
               label="measured points")
    ax.plot([p.metric(metric) for p in front], [100 * p.accuracy for p in front], "-o", c="#1f77b4", ms=4,
            label="Pareto front")
    if base is not None:
        ax.scatter([base.metric(metric)], [100 * base.accuracy], marker="s", s=60, c="#d62728",
                   label="uniform {} full depth".format(base.candidate.precision))
    ax.scatter([chosen.metric(metric)], [100 * chosen.accuracy], marker="*", s=180, c="#2ca02c", label="chosen")
    ax.axvline(limit, ls="--", c="#555555", lw=1, label="budget")
    ax.axhline(100 * min_accuracy, ls=":", c="#555555", lw=1, label="accuracy floor")
    ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))
    ax.set_xlabel(LABELS[metric])
    ax.set_ylabel("accuracy on eval data (%)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def write(out_dir: str, target: str, bundle: str, pts: List[Point], front: List[Point], chosen: Point,
          base: Optional[Point], report: Dict[str, Any], metric: str, limit: float, min_accuracy: float) -> str:
    """Write everything into a temporary directory, then rename it to out_dir; returns the bundle's path."""
    check_out(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    tmp = tempfile.mkdtemp(prefix=".{}.tmp-".format(os.path.basename(os.path.abspath(out_dir))), dir=parent)
    try:
        shutil.copytree(bundle, os.path.join(tmp, target))
        with open(os.path.join(tmp, "pareto.csv"), "w", encoding="utf-8") as f:
            f.write(csv_text(pts, front, chosen))
        plot(os.path.join(tmp, "pareto.png"), pts, front, chosen, base, metric, limit, min_accuracy)
        with open(os.path.join(tmp, "report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        check_out(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(out_dir, target)
