"""Text the CLI prints: the per-layer precision table, the threshold fit summary, the budget note."""
import json
import os
from typing import Any, Dict, List, Sequence

from edgekit.cli.output import table_lines
from edgekit.manifest import REPORT_NAME


def precision_lines(bundle: str) -> List[str]:
    """The per-layer precision table of an adaptive bundle (report.json), when there is one."""
    try:
        with open(os.path.join(bundle, REPORT_NAME), "r", encoding="utf-8") as f:
            plan = json.load(f).get("precision_plan")
    except (OSError, ValueError):
        return []
    if not plan or not plan.get("layers"):
        return []
    num = lambda v, fmt: "-" if v is None else fmt.format(v)  # noqa: E731
    rows = [(str(r["stage"]), r["layer"], r["op"], r["rung"], r.get("kernel", "-"), num(r.get("ms_vs_int8"),
                                                                                         "{:+.4f}"),
             num(r.get("sqnr_db"), "{:.1f}"), num(r.get("kl"), "{:.2e}"), "{:.1f}K".format(r["size_bytes"] / 1024.0))
            for r in plan["layers"]]
    packed = [r["layer"] for r in plan["layers"] if "nibble-packed" in r.get("form", "")]
    note = ["int4w on {}: 4-bit values in an int8 filter, run by the int8 kernel and held as int8 in memory; size is "
            "on disk, where the bundle stores them nibble-packed".format(", ".join(packed))] if packed else []
    return ["", "per-layer precision ({}; SQNR and KL at the exits with only that layer quantized; ms: the op's "
            "measured time over int8, batch 1, on the converting machine):".format(plan.get("mode"))] + table_lines(
        ("stage", "layer", "op", "rung", "kernel", "ms vs int8", "SQNR dB", "KL nats", "size"), rows) + \
        note + list(plan.get("summary", ()))


def threshold_text(thresholds: Sequence[float]) -> str:
    """Thresholds as printed: a never-taken exit (a threshold no score reaches) is "never"."""
    from edgekit.fit.thresholds import NEVER

    return " ".join("never" if t >= NEVER else "{:.3f}".format(t) for t in thresholds)


def threshold_lines(report: Dict[str, Any]) -> List[str]:
    """What convert says about fitted thresholds: the data they were fitted on and the accuracy it sees."""
    th = report.get("thresholds")
    if not th or "fit" not in th:
        return []
    fit = th["fit"]
    fp = th.get("fingerprint") or {}
    measure = th.get("objective", "accuracy")        # agreement with the last exit when there are no labels
    out = ["thresholds fitted on {}: {}".format(th.get("data"), fp.get("described", "{} samples".format(
        th.get("samples")))),
           "thresholds {}  expected {} {:.2%} there (full depth {:.2%}), expected cost {:.4f} ms ({})".format(
               threshold_text(fit["chosen"]["thresholds"]), measure,
               fit["chosen"]["accuracy"], fit["full_depth"]["accuracy"], fit["chosen"]["cost_ms"],
               "stage costs " + th.get("stage_costs_from", "unknown"))]
    if "holdout" in th:
        h = th["holdout"]
        out.append("on {} ({} samples): accuracy {:.2%}, full depth {:.2%}".format(
            h["data"], h["samples"], h["reached"]["accuracy"], h["full_depth"]["accuracy"]))
    return out


def budget_note(result: Dict[str, Any], budget_ms: Any) -> str:
    """`run --budget-ms`: a second line saying how many samples the budget stopped early."""
    if budget_ms is None or "budget_stopped" not in result:
        return ""
    return "\nbudget {:g} ms stopped {} of {} samples before their exit's threshold was reached".format(
        budget_ms, result["budget_stopped"], len(result["exits"]))
