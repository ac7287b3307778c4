"""Allocate over the profile, build the stages, verify on held-out samples, back off, and report."""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.evaluate import full_depth_outputs
from edgekit.convert.precision import allocate as al, objective as ob
from edgekit.convert.precision.costs import stage_times
from edgekit.convert.precision.kernels import FORMS
from edgekit.convert.precision.ladder import weight_bytes
from edgekit.convert.precision.measure import Profile, harmonize, op_rungs, stage_label, weighted_choices
from edgekit.convert.precision.options import DEFAULT_TOLERANCE, MAX_BACKOFF, NEGLIGIBLE, PrecisionPlan
from edgekit.convert.precision.recipes import supported
from edgekit.convert.precision.report import plot_png
from edgekit.convert.precision.timing import Protocol
from edgekit.convert.quantize import quantize_stage
from edgekit.errors import ConfigError
from edgekit.rungs import FLOAT16, FLOAT32, INT8, INT16X8, MIXED, RUNG


def allocate_all(prof: Profile, options, target, rungs: Sequence[str]):
    mode = options.mode
    layers = prof.layers
    budget: Dict[str, Any] = {"mode": mode}
    if mode == "tolerance":
        tol = options.tolerance or DEFAULT_TOLERANCE
        choice = al.by_tolerance(layers, tol)
    elif mode.startswith("objective-"):
        tol = options.tolerance or DEFAULT_TOLERANCE
        choice, limits = ob.by_objective(layers, prof.costs, mode[len("objective-"):], tol, target.fp16_compute)
        budget.update(limits)
    else:
        tol = options.tolerance or NEGLIGIBLE
        if mode == "size":
            fixed = float(sum(c.fixed_bytes for c in prof.costs))
            choice, est, low = al.by_budget(layers, options.size_budget, al.size_cost, tol, "size", fixed)
            budget.update(limit=options.size_budget, estimated=est, smallest=low, unit="bytes")
        else:
            int8 = ob.uniform_ms(prof.costs, target.fp16_compute).get(INT8, 0.0)
            choice, est, low = al.by_budget(layers, options.latency_budget_ms,
                                            lambda ly, r: ob.stage_cost(ly, r, prof.costs), tol, "latency", fixed=int8)
            budget.update(limit=options.latency_budget_ms, estimated=est, smallest=low, unit="ms")
        if low > budget["limit"]:
            raise ConfigError("{} budget {:g} {} is below the least this model can take ({:.4g} {} with every "
                              "op at its cheapest rung)".format(mode, budget["limit"], budget["unit"], low,
                                                              budget["unit"]))
    f16 = al.stage_float16(layers, choice, prof.costs, FLOAT16 in rungs, tol, target.fp16_compute)
    budget["tolerance"] = tol
    return choice, f16, budget


def _build(prof: Profile, k: int, choice, f16: List[str]) -> Tuple[bytes, str]:
    """Stage k's .tflite for the current choice (which it may raise: see _harmonized)."""
    if f16[k]:
        return prof.uniform[k][FLOAT16], FLOAT16
    pinned = [f["layer"] for f in prof.fallbacks if f["stage"] == str(k)]
    pinned_scopes = [o.scope for o in prof.ops[k] if o.layer in pinned and not o.weighted]
    rungs = _harmonized(prof, k, choice, pinned_scopes)
    weighted = weighted_choices(prof.layers, choice, k)
    label = stage_label(list(weighted.values()) or [FLOAT32])
    if label != MIXED and (label != INT8 or not pinned_scopes) and label in prof.uniform[k]:
        return prof.uniform[k][label], label
    return quantize_stage(prof.stages[k].model, MIXED, prof.feeds[k], rungs, prof.float_blobs[k], prof.qsvs[k]), MIXED


def _harmonized(prof: Profile, k: int, choice, pinned_scopes: List[str]) -> Dict[str, str]:
    """A rung per op of stage k; weighted ops that must read their input at 16 bits (measure.harmonize) are
    raised in `choice`, with the reason."""
    mine = {ly.scope: ly for ly in prof.layers if ly.stage == k}
    rungs = op_rungs(prof.ops[k], weighted_choices(prof.layers, choice, k), pinned_scopes)
    can16 = lambda o: INT16X8 in mine[o.scope].rungs if o.scope in mine else supported(o.op, INT16X8)  # noqa
    fixed = harmonize(prof.ops[k], rungs, can16)
    for scope, ly in mine.items():
        if fixed[scope] != choice[ly.key][0] and not prof.ensure(ly, fixed[scope]):
            fixed[scope] = FLOAT32              # int16x8 does not build or run for this op: float reads any width
        if fixed[scope] != choice[ly.key][0]:
            choice[ly.key] = (fixed[scope], "raised from {}: reads a tensor that a 16-bit activation op also reads "
                                            "(one activation width per tensor)".format(choice[ly.key][0]))
    return fixed


def _exits(prof: Profile, blobs: Sequence[bytes], x: np.ndarray, input_name: str) -> List[np.ndarray]:
    return full_depth_outputs(blobs, prof.stages, x, input_name, threads=2)


def _scores(outs: Sequence[np.ndarray], ref: Sequence[np.ndarray], y: Optional[np.ndarray]) -> List[float]:
    """Per exit: accuracy (labels) or top-1 agreement with float (no labels)."""
    if y is not None:
        return [float(np.mean(np.argmax(o, -1) == y)) for o in outs]
    return [float(np.mean(np.argmax(o, -1) == np.argmax(r, -1))) for o, r in zip(outs, ref)]


def build_and_verify(prof: Profile, data, options, target, rungs, notes, choice, f16, budget, input_name, say):
    built = [_build(prof, k, choice, f16) for k in range(len(prof.stages))]
    if budget["mode"] == "size":
        built = _fit_size(prof, options, target, rungs, choice, f16, budget, built)
    verification = _verify(prof, data, options, choice, f16, budget, built, input_name, say)
    timing = _timed(prof, budget, built, choice, f16, target, say)
    blobs = tuple(b for b, _ in built)
    table = layer_table(prof, choice, f16, target)
    report = _report(prof, options, target, rungs, notes, budget, verification, table, [lb for _, lb in built],
                     blobs)
    report["against_int8"] = timing
    report["notes"] = _notes(report)
    report["summary"] = ob.summary_lines(report, options)
    return PrecisionPlan(blobs=blobs, precisions=tuple(lb for _, lb in built), layers=tuple(table), report=report,
                         plot_png=plot_png(table, report))


def _size(built) -> int:
    return sum(len(b) for b, _ in built)


def _fit_size(prof: Profile, options, target, rungs, choice, f16, budget, built):
    """The size budget holds for the built files, not just the estimate: while they are larger, allocate again
    under a limit lowered by the excess, and rebuild."""
    for _ in range(3):
        excess = _size(built) - budget["limit"]
        if excess <= 0:
            break
        lower = int(budget["estimated"] - excess)
        if lower < budget["smallest"]:
            raise ConfigError("size budget {} bytes cannot be met: the stages built to {} bytes and the smallest "
                              "estimate is {:.0f} bytes (every op at its cheapest rung); allowed: a budget of at "
                              "least about {:.0f} bytes".format(budget["limit"], _size(built), budget["smallest"],
                                                                budget["smallest"] + excess))
        again, f16_again, b = allocate_all(prof, dataclasses.replace(options, size_budget=lower), target, rungs)
        choice.clear()
        choice.update(again)
        f16[:] = f16_again
        budget.update(estimated=b["estimated"], allocated_to=lower)
        built = [_build(prof, k, choice, f16) for k in range(len(prof.stages))]
    return built


def _verify(prof: Profile, data, options, choice, f16, budget, built, input_name, say) -> Dict[str, Any]:
    """Held-out check; back off the most sensitive op a rung at a time until it holds (in size mode only while
    the built files stay within the budget). Updates `built` and `choice` in place."""

    ref = _exits(prof, prof.float_blobs, data["held_x"], input_name)
    float_scores = _scores(ref, ref, data["held_y"])
    int8 = _uniform(prof, INT8)
    int8_scores = _scores(_exits(prof, int8, data["held_x"], input_name), ref, data["held_y"]) if int8 else None
    objective = budget["mode"][len("objective-"):] if budget["mode"].startswith("objective-") else None
    ceiling = ob.backoff_ceiling(objective)
    if objective and int8_scores:               # accuracy at uniform int8's (or float's, if int8 is above it)
        floors = [min(f, q) for f, q in zip(float_scores, int8_scores)]
    else:
        floors = [f - options.max_accuracy_drop for f in float_scores]
    backoff: List[Dict[str, Any]] = []
    done: List[str] = []
    undone: List[str] = []                      # raises taken back: the built files would exceed the size budget
    while True:
        scores = _scores(_exits(prof, [b for b, _ in built], data["held_x"], input_name), ref, data["held_y"])
        ok = all(s >= fl - 1e-9 for fl, s in zip(floors, scores))
        k = None if ok or not objective or not int8 else _revert_stage(prof, choice, f16, built, floors, scores, int8)
        if k is not None:
            backoff.append({"stage": k, "layer": "(every op)", "from": MIXED, "to": INT8, "scores_before": scores})
            say("back-off: stage {} -> int8".format(k))
            continue
        ly = None if ok or len(backoff) >= MAX_BACKOFF or len(backoff) + len(undone) >= 2 * MAX_BACKOFF else \
            al.backoff_pick(prof.layers, choice, done, ceiling)
        if ly is None:
            break
        old = choice[ly.key][0]
        new = al.next_rung(ly, old, ceiling)
        while not prof.ensure(ly, new):         # measure="needed": measured now; a rung that fails is dropped
            new = al.next_rung(ly, new)
        before = (dict(choice), built[ly.stage])
        choice[ly.key] = (new, "raised from {} after held-out verification".format(old))
        built[ly.stage] = _build(prof, ly.stage, choice, f16)
        if budget["mode"] == "size" and _size(built) > budget["limit"]:
            choice.clear()
            choice.update(before[0])
            built[ly.stage] = before[1]
            done.append(ly.key)
            undone.append("{} {} -> {}".format(ly.name, old, new))
            continue
        done.append(ly.key) if new == FLOAT32 or new == ceiling else None
        backoff.append({"stage": ly.stage, "layer": ly.name, "from": old, "to": new, "scores_before": scores})
        say("back-off: {} {} -> {}".format(ly.name, old, new))
    return {"samples": int(len(data["held_x"])), "metric": "accuracy" if data["held_y"] is not None
            else "top-1 agreement with float", "float": float_scores, "chosen": scores,
            "max_drop": options.max_accuracy_drop, "holds": bool(ok), "backoff": backoff,
            "undone_over_size_budget": undone, "uniform_int8": int8_scores, "floor": floors,
            "floor_from": "uniform int8 (or float, if lower)" if objective and int8_scores else "float - max_drop"}


def _revert_stage(prof: Profile, choice, f16, built, floors, scores, int8: List[bytes]) -> Optional[int]:
    """For the time objectives: the latest stage, up to the first exit below its floor, that is not its
    converter int8 build goes back to it whole (every op int8): a stage built from per-op recipes can lose
    more than its ops did one at a time. None when every such stage is int8 already."""
    first = next(e for e, (fl, sc) in enumerate(zip(floors, scores)) if sc < fl - 1e-9)
    mixed = [j for j in range(first + 1) if built[j][0] != int8[j]]
    if not mixed:
        return None
    k = mixed[-1]
    for ly in prof.layers:
        if ly.stage == k and not ly.pinned and INT8 in ly.rungs and choice[ly.key][0] != INT8:
            choice[ly.key] = (INT8, "stage {} back to int8 after held-out verification".format(k))
    f16[k] = ""
    built[k] = _build(prof, k, choice, f16)
    if built[k][0] != int8[k]:                  # ops without an int8 rung keep it mixed: take the int8 build
        built[k] = (int8[k], INT8)
    return k


def _uniform(prof: Profile, rung: str) -> Optional[List[bytes]]:
    """Every stage's whole-stage build at `rung`, or None when a stage has none."""
    blobs = [u.get(rung) for u in prof.uniform]
    return None if any(b is None for b in blobs) else blobs


def _timed(prof: Profile, budget: Dict[str, Any], built, choice, f16, target, say) -> Dict[str, Any]:
    """The built plan against the uniform builds, stage by stage, interleaved. When time is the objective and a
    stage of the plan is slower than its int8 build beyond the noise, an op of that stage goes back to int8
    (at most MAX_SLOW times): per-op costs are measured one op at a time, and small ones add up."""
    uniform = {r: b for r, b in ((r, _uniform(prof, r)) for r in (INT8, FLOAT32, FLOAT16)) if b}
    timing: Dict[str, Any] = {}
    for attempt in range(ob.MAX_SLOW + 1):
        got = stage_times(dict(uniform, plan=[b for b, _ in built]), prof.chain.inputs)
        timing = ob.against_int8(got, [len(b) for b, _ in built], prof)
        k = ob.slow_stage(got, [b for b, _ in built], uniform.get(INT8)) \
            if budget["mode"].startswith("objective-") and attempt < ob.MAX_SLOW else None
        back = [] if k is None else ob.to_int8([ly for ly in prof.layers if ly.stage == k], choice)
        if not back:
            break
        for ly in back:
            choice[ly.key] = (INT8, "back to int8: stage {} measured slower than its int8 build".format(k))
        built[k] = _build(prof, k, choice, f16)
        say("stage {} slower than int8: {} -> int8".format(k, ", ".join(ly.name for ly in back)))
    budget["built_bytes"] = int(sum(len(b) for b, _ in built))
    budget["measured_ms"] = timing["plan_ms"]
    if budget["mode"] in ("size", "latency"):
        got_v = budget["built_bytes"] if budget["mode"] == "size" else budget["measured_ms"]
        budget["holds"] = bool(got_v <= budget["limit"])
    return timing


def _notes(report: Dict[str, Any]) -> List[str]:
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


def layer_table(prof: Profile, choice, f16: List[str], target) -> List[Dict[str, Any]]:
    rows, est = [], []
    for ly in prof.layers:
        rung, reason = (FLOAT16, f16[ly.stage]) if f16[ly.stage] else choice[ly.key]
        lat = al.op_latency(ly, rung, prof.costs[ly.stage], target.fp16_compute)
        est.append(lat)
        loss = prof.costs[ly.stage].losses.get(FLOAT16) if rung == FLOAT16 else ly.loss(rung)
        rows.append({"stage": ly.stage, "layer": ly.name, "op": ly.op, "rung": rung, "reason": reason,
                     "params": ly.params, "size_bytes": int(weight_bytes(rung, ly.params)),
                     "kl": loss.kl if loss else None, "sqnr_db": loss.sqnr_db if loss else None,
                     "layer_sqnr_db": loss.layer_sqnr_db if loss else None, "latency_ms_est": lat,
                     "sensitivity": {r: ly.losses[r].to_dict() for r in ly.rungs if r in ly.losses},
                     "kernel": ly.kernels.get(rung, "-"), "form": FORMS.get(rung, rung),
                     "ms_vs_int8": _finite(ly.costs.get(rung)),
                     "ms_vs_int8_by_rung": {r: _finite(c) for r, c in ly.costs.items()},
                     "kernel_by_rung": dict(ly.kernels)})
    total = sum(est) or 1.0
    for row, lat in zip(rows, est):
        row["latency_share"] = lat / total
    return rows


def _finite(v: Optional[float]) -> Optional[float]:
    """JSON has no infinity: a rung that did not build or run has no time (None)."""
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else float(v)


def _report(prof: Profile, options, target, rungs, notes, budget, verification, table, labels, blobs) -> Dict:
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
        "timing_protocol": Protocol().to_dict(),
        "boundaries": "float32 tensors between stages (each stage quantizes its inputs and dequantizes its outputs "
                      "inside the .tflite)",
        "kernel_fallbacks": prof.fallbacks, "rungs_skipped": prof.skipped,
        "stages": [{"index": k, "precision": lb, "size_bytes": len(b),
                    "mixed_overhead_ms": prof.costs[k].mixed_ms,
                    "whole_stage": {r: {"size_bytes": c, "latency_ms": prof.costs[k].latency_ms[r],
                                        "kl": prof.costs[k].losses[r].kl if r in prof.costs[k].losses else 0.0,
                                        "sqnr_db": prof.costs[k].losses[r].sqnr_db if r in prof.costs[k].losses
                                        else None} for r, c in prof.costs[k].size_bytes.items()}}
                   for k, (lb, b) in enumerate(zip(labels, blobs))],
        "verification": verification, "layers": table,
    }
