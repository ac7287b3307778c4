"""The plan's report: the per-layer table, the notes the CLI prints, report.json's precision_plan, and the table
as a PNG plot (matplotlib Agg); `edgekit inspect` prints it as text."""
import io
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from edgekit.convert.pack import stored_bytes
from edgekit.convert.precision.allocate import op_latency
from edgekit.convert.precision.costs import OP_PROTOCOL
from edgekit.convert.precision.kernels import FORMS
from edgekit.convert.precision.ladder import weight_bytes
from edgekit.rungs import FLOAT16, INT4W, RUNG, RUNGS

if TYPE_CHECKING:
    from edgekit.convert.precision.measure import Profile

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


def notes_of(report: Dict[str, Any]) -> List[str]:
    """One line each for what the user should know (the CLI prints them)."""
    out = ["adaptive precision: op {} ({}, stage {}) has no int8 kernel: kept float32".format(
        f["layer"], f["op"], f["stage"]) for f in report["kernel_fallbacks"]]
    v, b = report["verification"], report["budget"] or {}
    if not v["holds"]:
        out.append("adaptive precision: held-out {} dropped by more than {:g} on some exit after {} back-off(s): "
                   "float {} vs chosen {}".format(v["metric"], v["max_drop"], len(v["backoff"]),
                                                  _pcts(v["float"]), _pcts(v["chosen"])))
    if b.get("holds") is False:
        got = b["built_bytes"] if report["mode"] == "size" else b["measured_ms"]
        out.append("adaptive precision: the {} budget {:g} {} does not hold: {:.4g} {} measured on the built stages "
                   "(estimated {:.4g})".format(report["mode"], b["limit"], b["unit"], got, b["unit"], b["estimated"]))
    if report["rungs_skipped"]:
        out.append("adaptive precision: {} (op or stage, rung) builds did not convert or run and were left out "
                   "(report.json precision_plan.rungs_skipped)".format(len(report["rungs_skipped"])))
    return out


def _pcts(values: Sequence[float]) -> str:
    return "/".join("{:.1%}".format(v) for v in values)


def layer_table(prof: "Profile", choice, f16: List[str], target) -> List[Dict[str, Any]]:
    rows, est = [], []
    for ly in prof.layers:
        rung, reason = (FLOAT16, f16[ly.stage]) if f16[ly.stage] else choice[ly.key]
        lat = op_latency(ly, rung, prof.costs[ly.stage], target.fp16_compute)
        est.append(lat)
        loss = prof.costs[ly.stage].losses.get(FLOAT16) if rung == FLOAT16 else ly.loss(rung)
        rows.append({"stage": ly.stage, "layer": ly.name, "op": ly.op, "rung": rung, "reason": reason,
                     "params": ly.params, "size_bytes": int(weight_bytes(rung, ly.params)),
                     "kl": loss.kl if loss else None, "sqnr_db": loss.sqnr_db if loss else None,
                     "layer_sqnr_db": loss.layer_sqnr_db if loss else None, "latency_ms_est": lat,
                     "sensitivity": {r: ly.losses[r].to_dict() for r in ly.rungs if r in ly.losses},
                     "kernel": ly.kernels.get(rung, "-"), "form": _form(ly, rung),
                     "ms_vs_int8": _finite(ly.costs.get(rung)),
                     "ms_vs_int8_by_rung": {r: _finite(c) for r, c in ly.costs.items()},
                     "kernel_by_rung": dict(ly.kernels)})
    total = sum(est) or 1.0
    for row, lat in zip(rows, est):
        row["latency_share"] = lat / total
    return rows


def _form(ly, rung: str) -> str:
    """The kernel form of the op at its rung; 4-bit weights inside the int8 build have their own."""
    if rung == INT4W and ly.four_bit:
        return FOUR_BIT_FORMS.get(ly.op, FORMS[rung])
    return FORMS.get(rung, rung)


FOUR_BIT_FORMS = {
    "FULLY_CONNECTED": "INT4 channelwise weights, static int8 activations, inside the int8 build",
    "CONV_2D": "4-bit values in an int8 filter (int8 kernel and memory; stored nibble-packed in the bundle)",
}


def _finite(v: Optional[float]) -> Optional[float]:
    """JSON has no infinity: a rung that did not build or run has no time (None)."""
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else float(v)


def plan_report(prof: "Profile", options, target, rungs, notes, budget, verification, table, labels, blobs) -> Dict:
    return {
        "mode": options.mode, "tolerance_nats": budget.get("tolerance"),
        "budget": {k: v for k, v in budget.items() if k not in ("mode", "tolerance")} or None,
        "ladder": [{"rung": r, "description": RUNG[r].description} for r in rungs],
        "left_out": notes, "fp16_compute": target.fp16_compute,
        "loss": "KL divergence (nats) between softmax of float and quantized exit outputs, the largest over "
                "the exits an op feeds; SQNR (dB) the smallest over them; layer_sqnr_db at the op's output",
        "sensitivity_samples": int(len(prof.chain.exits[0])), "cache_hits": prof.cache_hits,
        "sensitivity_measured": "every op at every rung" if options.measure == "all" or options.mode != "tolerance"
        else "each op's rungs lowest first up to the first within the tolerance (higher ones when backing off)",
        "latency_note": "measured on the converting machine (a proxy for the board; batch 1, 1 thread, "
                        "interleaved, median): whole-stage builds at each rung, and each op's extra ms over an "
                        "all-int8 build of its stage with only that op moved (ms_vs_int8, 0 within the noise); "
                        "latency_share is the op's share of multiply-adds",
        "timing_protocol": OP_PROTOCOL.to_dict(),
        "boundaries": "float32 tensors between stages (each stage quantizes its inputs and dequantizes its outputs "
                      "inside the .tflite)",
        "kernel_fallbacks": prof.fallbacks, "rungs_skipped": prof.skipped,
        "int8_kept_float": {str(k): list(s) for k, s in enumerate(prof.kept_float) if s},
        "stages": [{"index": k, "precision": lb, "size_bytes": stored_bytes(b), "loaded_bytes": len(b),
                    "mixed_overhead_ms": prof.costs[k].mixed_ms,
                    "whole_stage": {r: {"size_bytes": c, "latency_ms": prof.costs[k].latency_ms[r],
                                        "kl": prof.costs[k].losses[r].kl if r in prof.costs[k].losses else 0.0,
                                        "sqnr_db": prof.costs[k].losses[r].sqnr_db if r in prof.costs[k].losses
                                        else None} for r, c in prof.costs[k].size_bytes.items()}}
                   for k, (lb, b) in enumerate(zip(labels, blobs))],
        "verification": verification, "layers": table,
    }
