"""The per-layer precision table as a PNG plot (matplotlib Agg); `edgekit inspect` prints it as text."""
import io
from typing import Any, Dict, Optional, Sequence

from edgekit.rungs import RUNGS

PLOT_NAME = "precision.png"
_COLORS = {r.name: r.color for r in RUNGS}


def plot_png(layers: Sequence[Dict[str, Any]], report: Dict[str, Any]) -> Optional[bytes]:
    """Bars: chosen rung per layer (colour) with exit SQNR at each measured rung; None without matplotlib."""
    try:
        import matplotlib  # lazy: matplotlib is optional (no plot without it)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: as above, and after use("Agg")
    except ImportError:
        return None
    names = ["{}:{}".format(r["stage"], r["layer"]) for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.2))
    xs = range(len(names))
    for rung, color in _COLORS.items():
        ys = [r["sensitivity"].get(rung, {}).get("sqnr_db") for r in layers]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=3, color=color, alpha=0.5,
                    label="{} (measured)".format(rung))
    chosen = [min(r["sqnr_db"], 150.0) if r.get("sqnr_db") is not None else 0.0 for r in layers]
    ax.bar(list(xs), chosen, color=[_COLORS.get(r["rung"], "#999999") for r in layers], alpha=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("exit SQNR (dB) with only this layer quantized")
    ax.set_title("adaptive precision ({}): bar colour = chosen rung".format(report.get("mode", "?")))
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
