"""Allocate over the profile, build the stages, verify on held-out samples, back off, and report."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.precision import allocate as al
from edgekit.convert.precision.ladder import RUNGS, weight_bytes
from edgekit.convert.precision.measure import Profile, op_rungs, stage_label, weighted_choices
from edgekit.errors import ConfigError


def allocate_all(prof: Profile, options, target, rungs: Sequence[str]):
    from edgekit.convert.precision import DEFAULT_TOLERANCE, NEGLIGIBLE

    mode = options.mode
    layers = prof.layers
    budget: Dict[str, Any] = {"mode": mode}
    if mode == "tolerance":
        tol = options.tolerance or DEFAULT_TOLERANCE
        choice = al.by_tolerance(layers, tol)
    else:
        tol = options.tolerance or NEGLIGIBLE
        if mode == "size":
            fixed = float(sum(c.fixed_bytes for c in prof.costs))
            choice, est, low = al.by_budget(layers, options.size_budget, al.size_cost, tol, "size", fixed)
            budget.update(limit=options.size_budget, estimated=est, smallest=low, unit="bytes")
        else:
            cost_of = lambda ly, r: al.op_latency(ly, r, prof.costs[ly.stage], target.fp16_compute)  # noqa: E731
            choice, est, low = al.by_budget(layers, options.latency_budget_ms, cost_of, tol, "latency")
            budget.update(limit=options.latency_budget_ms, estimated=est, smallest=low, unit="ms")
        if low > budget["limit"]:
            raise ConfigError("{} budget {:g} {} is below the least this model can take ({:.4g} {} with every "
                              "op at its lowest rung)".format(mode, budget["limit"], budget["unit"], low,
                                                              budget["unit"]))
    f16 = al.stage_float16(layers, choice, prof.costs, "float16" in rungs, tol, target.fp16_compute)
    budget["tolerance"] = tol
    return choice, f16, budget


def _build(prof: Profile, k: int, choice, f16: List[str]) -> Tuple[bytes, str]:
    from edgekit.convert.quantize import quantize_stage

    if f16[k]:
        return prof.uniform[k]["float16"], "float16"
    weighted = weighted_choices(prof.layers, choice, k)
    pinned = [f["layer"] for f in prof.fallbacks if f["stage"] == str(k)]
    pinned_scopes = [o.scope for o in prof.ops[k] if o.layer in pinned and not o.weighted]
    label = stage_label(list(weighted.values()) or ["float32"])
    if label != "mixed" and (label != "int8" or not pinned_scopes) and label in prof.uniform[k]:
        return prof.uniform[k][label], label
    rungs = op_rungs(prof.ops[k], weighted, pinned_scopes)
    return quantize_stage(prof.stages[k].model, "mixed", prof.feeds[k], rungs), "mixed"


def _exits(prof: Profile, blobs: Sequence[bytes], x: np.ndarray, input_name: str) -> List[np.ndarray]:
    from edgekit.convert.measure import full_depth_outputs

    return full_depth_outputs(blobs, prof.stages, x, input_name, threads=2)


def _scores(outs: Sequence[np.ndarray], ref: Sequence[np.ndarray], y: Optional[np.ndarray]) -> List[float]:
    """Per exit: accuracy (labels) or top-1 agreement with float (no labels)."""
    if y is not None:
        return [float(np.mean(np.argmax(o, -1) == y)) for o in outs]
    return [float(np.mean(np.argmax(o, -1) == np.argmax(r, -1))) for o, r in zip(outs, ref)]


def build_and_verify(prof: Profile, data, options, target, rungs, notes, choice, f16, budget, input_name, say):
    from edgekit.convert.precision import MAX_BACKOFF, PrecisionPlan

    built = [_build(prof, k, choice, f16) for k in range(len(prof.stages))]
    ref = _exits(prof, prof.float_blobs, data["held_x"], input_name)
    float_scores = _scores(ref, ref, data["held_y"])
    backoff: List[Dict[str, Any]] = []
    raised: List[str] = []
    while True:
        scores = _scores(_exits(prof, [b for b, _ in built], data["held_x"], input_name), ref, data["held_y"])
        ok = all(f - s <= options.max_accuracy_drop + 1e-9 for f, s in zip(float_scores, scores))
        if ok or len(backoff) >= MAX_BACKOFF:
            break
        ly = al.backoff_pick(prof.layers, choice, raised)
        if ly is None:
            break
        old = choice[ly.key][0]
        new = al.next_rung(ly, old)
        if budget["mode"] == "size" and budget["estimated"] + al.size_cost(ly, new) - al.size_cost(ly, old) > \
                budget["limit"]:
            raised.append(ly.key)
            continue
        choice[ly.key] = (new, "raised from {} after held-out verification".format(old))
        raised.append(ly.key) if new == "float32" else None
        if budget["mode"] == "size":
            budget["estimated"] += al.size_cost(ly, new) - al.size_cost(ly, old)
        backoff.append({"stage": ly.stage, "layer": ly.name, "from": old, "to": new, "scores_before": scores})
        built[ly.stage] = _build(prof, ly.stage, choice, f16)
        say("back-off: {} {} -> {}".format(ly.name, old, new))
    blobs = tuple(b for b, _ in built)
    table = layer_table(prof, choice, f16, target)
    verification = {"samples": int(len(data["held_x"])), "metric": "accuracy" if data["held_y"] is not None
                    else "top-1 agreement with float", "float": float_scores, "chosen": scores,
                    "max_drop": options.max_accuracy_drop, "holds": bool(ok), "backoff": backoff}
    report = _report(prof, options, target, rungs, notes, budget, verification, table, [lb for _, lb in built],
                     blobs)
    from edgekit.convert.precision.report import plot_png

    return PrecisionPlan(blobs=blobs, precisions=tuple(lb for _, lb in built), layers=tuple(table), report=report,
                         plot_png=plot_png(table, report))


def layer_table(prof: Profile, choice, f16: List[str], target) -> List[Dict[str, Any]]:
    rows, est = [], []
    for ly in prof.layers:
        rung, reason = ("float16", f16[ly.stage]) if f16[ly.stage] else choice[ly.key]
        lat = al.op_latency(ly, rung, prof.costs[ly.stage], target.fp16_compute)
        est.append(lat)
        loss = prof.costs[ly.stage].losses.get("float16") if rung == "float16" else ly.loss(rung)
        rows.append({"stage": ly.stage, "layer": ly.name, "op": ly.op, "rung": rung, "reason": reason,
                     "params": ly.params, "size_bytes": int(weight_bytes(rung, ly.params)),
                     "kl": loss.kl if loss else None, "sqnr_db": loss.sqnr_db if loss else None,
                     "layer_sqnr_db": loss.layer_sqnr_db if loss else None, "latency_ms_est": lat,
                     "sensitivity": {r: ly.loss(r).to_dict() for r in ly.rungs if r != "float32"}})
    total = sum(est) or 1.0
    for row, lat in zip(rows, est):
        row["latency_share"] = lat / total
    return rows


def _report(prof: Profile, options, target, rungs, notes, budget, verification, table, labels, blobs) -> Dict:
    return {
        "mode": options.mode, "tolerance_nats": budget.get("tolerance"),
        "budget": {k: v for k, v in budget.items() if k not in ("mode", "tolerance")} or None,
        "ladder": [{"rung": r, "description": RUNGS[r].description} for r in rungs],
        "left_out": notes, "fp16_compute": target.fp16_compute,
        "loss": "KL divergence (nats) between softmax of float and quantized exit outputs, the largest over "
                "the exits an op feeds; SQNR (dB) the smallest over them; layer_sqnr_db at the op's output",
        "sensitivity_samples": int(len(prof.chain.exits[0])), "cache_hits": prof.cache_hits,
        "latency_note": "measured on the converting machine (batch 1, 1 thread) per whole-stage build; an op's "
                        "share is its share of the stage's multiply-adds",
        "boundaries": "float32 tensors between stages (each stage quantizes its inputs and dequantizes its outputs "
                      "inside the .tflite)",
        "kernel_fallbacks": prof.fallbacks,
        "stages": [{"index": k, "precision": lb, "size_bytes": len(b),
                    "whole_stage": {r: {"size_bytes": c, "latency_ms": prof.costs[k].latency_ms[r],
                                        "kl": prof.costs[k].losses[r].kl if r in prof.costs[k].losses else 0.0,
                                        "sqnr_db": prof.costs[k].losses[r].sqnr_db if r in prof.costs[k].losses
                                        else None} for r, c in prof.costs[k].size_bytes.items()}}
                   for k, (lb, b) in enumerate(zip(labels, blobs))],
        "verification": verification, "layers": table,
    }
