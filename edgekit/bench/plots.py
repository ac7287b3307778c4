"""The report's PNG plots, drawn on matplotlib's Agg canvas (no display, no pyplot global state).

Laptop only: imported by edgekit.bench.report when a report is written; matplotlib is imported here.
"""
import os
from typing import Any, Dict, List

import numpy as np

from edgekit.errors import EdgekitError

MODES = ("early_exit", "full_depth")
LABELS = {"early_exit": "early exit", "full_depth": "full depth"}
COLORS = {"early_exit": "#1f77b4", "full_depth": "#d62728"}


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise EdgekitError("the report's plots need matplotlib ({}); install it with pip install "
                           "'edgekit[report]'".format(exc))
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _nothing(fig: Any, ax: Any, path: str, message: str) -> None:
    """Save the figure as a message that there is nothing to plot."""
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    _save(fig, path)


def _save(fig: Any, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")


def _subtitle(result: Dict[str, Any]) -> str:
    b, env = result.get("bundle", {}), result["environment"]
    return "{} on {} ({} {}, {} thread(s))".format(b.get("model_name", "?"), env.get("machine", "?"),
                                                 env["interpreter"]["name"], env["interpreter"]["version"],
                                                 env["threads"])


def log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Plain-number labels on a log axis, few enough not to run into each other: 1-2-5 steps over up to two and a
    half decades, powers of ten beyond; minor ticks unlabelled (matplotlib labels them too on short ranges, as
    2x10^-1 3x10^-1 ..., which overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: "{:g}".format(v)))
    axis.set_minor_formatter(NullFormatter())


def latency_figure(result: Dict[str, Any]) -> Any:
    raw = {m: np.asarray(result["raw_ms"][m], dtype=np.float64) for m in MODES}
    both = np.concatenate([raw[m] for m in MODES])
    lo, hi = max(float(both.min()), 1e-6), float(both.max())
    log = hi / lo > 20.0              # heavy tails or modes far apart: log-spaced bins on a log axis
    bins = np.geomspace(lo, hi * 1.0001, 60) if log else np.linspace(lo, hi + 1e-6, 60)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for m in MODES:
        lat = result[m]["latency_ms"]
        ax.hist(np.clip(raw[m], lo, None), bins=bins, alpha=0.55, color=COLORS[m],
                label="{}: p50 {:.3f}  p99 {:.3f} ms (n={})".format(LABELS[m], lat["p50"], lat["p99"], len(raw[m])))
        ax.axvline(lat["p50"], color=COLORS[m], linestyle="--", linewidth=1)
    if log:
        ax.set_xscale("log")
        log_ticks(ax.xaxis, lo, hi)
    ax.set_xlabel("end-to-end latency per call, ms (batch 1{}; dashed: p50)".format(", log scale" if log else ""))
    ax.set_ylabel("calls")
    ax.set_title("Latency per policy, interleaved in one run\n" + _subtitle(result), fontsize=10)
    ax.legend(fontsize=8)
    return fig


def latency_histogram(result: Dict[str, Any], path: str) -> None:
    _save(latency_figure(result), path)


def accuracy_latency(result: Dict[str, Any], path: str) -> None:
    curve = result.get("curve") or {}
    pts = [p for p in curve.get("points", []) if p["accuracy"] is not None]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if not pts:
        _nothing(fig, ax, path, "no labels in the data: no accuracy to plot")
        return
    xs, ys = [p["estimated_ms"] for p in pts], [p["accuracy"] for p in pts]
    ax.plot(xs, ys, "-o", markersize=3, color="#555555", label="shared threshold sweep (estimated ms)")
    ch = curve["chosen"]
    ax.plot([ch["estimated_ms"]], [ch["accuracy"]], "*", markersize=16, color="#ff7f0e",
            label="chosen: bundle thresholds {}".format(", ".join("{:.3g}".format(t) for t in ch["thresholds"][:-1])))
    for m in MODES:
        r = result[m]
        if r["accuracy"] is not None:
            ax.plot([r["latency_ms"]["mean"]], [r["accuracy"]], "s", color=COLORS[m], markersize=7,
                    label="{} measured mean".format(LABELS[m]))
    ax.set_xlabel("mean latency per sample, ms")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against latency\n" + _subtitle(result), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def exit_distribution(result: Dict[str, Any], path: str) -> None:
    names = result.get("bundle", {}).get("exits") or [
        "exit{}".format(i) for i in range(len(result["early_exit"]["exit_histogram"]))]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    idx = np.arange(len(names))
    for j, m in enumerate(MODES):
        hist = np.asarray(result[m]["exit_histogram"], dtype=np.float64)
        frac = hist / (hist.sum() or 1.0)
        bars = ax.bar(idx + (j - 0.5) * 0.38, frac, width=0.38, color=COLORS[m], label=LABELS[m])
        for rect, h in zip(bars, hist):
            ax.annotate(str(int(h)), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(idx)
    ax.set_xticklabels(names)
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.1)
    ax.set_title("Where samples leave the network (whole data set)\n" + _subtitle(result), fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def energy_figure(result: Dict[str, Any]) -> Any:
    """Bars per mode in the mode's colour (as in every other plot), grouped as total and above idle."""
    e = result.get("energy")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if not e:
        ax.text(0.5, 0.5, "no energy figures in this result", ha="center", va="center")
        ax.set_axis_off()
        return fig
    groups = (("joules_total", "total"), ("joules_above_idle", "above idle"))
    idx = np.arange(len(groups))
    for j, m in enumerate(MODES):
        values = [e[m][key] * 1e3 for key, _ in groups]
        bars = ax.bar(idx + (j - 0.5) * 0.38, values, width=0.38, color=COLORS[m], label=LABELS[m])
        for rect, v in zip(bars, values):
            ax.annotate("{:.3g}".format(v), (rect.get_x() + rect.get_width() / 2, max(rect.get_height(), 0)),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(idx)
    ax.set_xticklabels(["{} per inference".format(name) for _, name in groups])
    ax.set_ylabel("mJ per inference")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("Energy per inference - meter {} ({}), idle {:.2f} W\n{}".format(
        e["meter"], e["kind"].upper(), e["idle"]["mean_watts"], _subtitle(result)), fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, ("measured by a sensor" if e["measured"] else "ESTIMATED from the board profile's power "
                          "model, not measured") + "; idle baseline measured in the same run", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def energy(result: Dict[str, Any], path: str) -> None:
    energy_figure(result).savefig(path, format="png")


def draw_all(result: Dict[str, Any], directory: str) -> List[str]:
    out = []
    for name, fn in (("latency_histogram.png", latency_histogram), ("accuracy_latency.png", accuracy_latency),
                     ("exit_distribution.png", exit_distribution), ("energy.png", energy)):
        fn(result, os.path.join(directory, name))
        out.append(name)
    return out
