"""Allocate over the profile, build the stages, verify on held-out samples, back off, and report."""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.evaluate import full_depth_outputs
from edgekit.convert.precision import allocate as al, objective as ob
from edgekit.convert.precision.costs import noise_ms, stage_times
from edgekit.convert.pack import stored_bytes
from edgekit.convert.precision.fc4 import OPS as FOUR_BIT_OPS, four_bit
from edgekit.convert.precision.graph import op_rungs
from edgekit.convert.precision.measure import Profile, harmonize, stage_label, weighted_choices
from edgekit.convert.precision.options import DEFAULT_TOLERANCE, MAX_BACKOFF, NEGLIGIBLE, PrecisionPlan
from edgekit.convert.precision.recipes import quantize_ops, supported
from edgekit.convert.precision.report import layer_table, notes_of, plan_report, plot_png
from edgekit.convert.precision.sensitivity import sqnr_db
from edgekit.convert.quantize import quantize_stage
from edgekit.errors import ConfigError, ModelError



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
            int8 = ob.uniform_ms(prof.costs, target.fp16_compute).get("int8", 0.0)
            choice, est, low = al.by_budget(layers, options.latency_budget_ms,
                                            lambda ly, r: ob.stage_cost(ly, r, prof.costs), tol, "latency", fixed=int8)
            budget.update(limit=options.latency_budget_ms, estimated=est, smallest=low, unit="ms")
        if low > budget["limit"]:
            raise ConfigError("{} budget {:g} {} is below the least this model can take ({:.4g} {} with every "
                              "op at its cheapest rung)".format(mode, budget["limit"], budget["unit"], low,
                                                              budget["unit"]))
    f16 = al.stage_float16(layers, choice, prof.costs, "float16" in rungs, tol, target.fp16_compute)
    budget["tolerance"] = tol
    return choice, f16, budget


def _build(prof: Profile, k: int, choice, f16: List[str]) -> Tuple[bytes, str]:
    """Stage k's .tflite for the current choice (which it may raise: see _harmonized). A stage whose ops all stay
    where the int8 build has them is that build itself (the one `convert --precision int8` makes); one whose ops
    are int8 or float32 is built by the converter, with its 4-bit fully connected and convolution ops put in
    afterwards (fc4.py); any other mix comes from per-op recipes."""
    if f16[k]:
        return prof.uniform[k]["float16"], "float16"
    if _as_int8_build(prof, k, choice):
        return prof.uniform[k]["int8"], "int8"
    pinned = [f["layer"] for f in prof.fallbacks if f["stage"] == str(k)]
    kept = prof.kept_float[k] if prof.pin_kept else ()
    pinned_scopes = [o.scope for o in prof.ops[k] if (o.layer in pinned or o.scope in kept) and not o.weighted]
    rungs = _harmonized(prof, k, choice, pinned_scopes)
    four = [ly.scope for ly in prof.layers if ly.stage == k and ly.op in FOUR_BIT_OPS and
            choice[ly.key][0] == "int4w" and rungs.get(ly.scope) == "int4w"]
    rest = dict(rungs, **{s: "int8" for s in four})
    if set(rest.values()) <= {"int8", "float32"}:           # the converter, with float fallback for single ops
        try:
            base = prof.uniform[k]["int8"] if "int8" in prof.uniform[k] and _as_int8_build(prof, k, choice, four) \
                else quantize_stage(prof.stages[k].model, "mixed", prof.feeds[k], rest)
            return four_bit(base, prof.float_blobs[k], four), "mixed"
        except ModelError:
            pass                                # its debugger refused this float set: per-op recipes below
    weighted = weighted_choices(prof.layers, choice, k)
    label = stage_label(list(weighted.values()) or ["float32"])
    if label not in ("mixed", "int8") and label in prof.uniform[k]:
        return prof.uniform[k][label], label
    # what quantize_stage(..., "mixed") does for other mixes, reusing this stage's float build and ranges
    return quantize_ops(prof.float_blobs[k], rungs, qsvs=prof.qsvs[k]), "mixed"


def _as_int8_build(prof: Profile, k: int, choice, besides: Sequence[str] = ()) -> bool:
    """Every op of stage k that the int8 build quantizes is at int8 (pinned ops are float32 in both), but for
    the ops named in `besides`."""
    return "int8" in prof.uniform[k] and (prof.pin_kept or not prof.kept_float[k]) and all(
        choice[ly.key][0] == "int8" for ly in prof.layers if ly.stage == k and not ly.pinned
        and ly.scope not in besides)


def _harmonized(prof: Profile, k: int, choice, pinned_scopes: List[str]) -> Dict[str, str]:
    """A rung per op of stage k; weighted ops that must read their input at 16 bits (measure.harmonize) are
    raised in `choice`, with the reason."""
    mine = {ly.scope: ly for ly in prof.layers if ly.stage == k}
    rungs = op_rungs(prof.ops[k], weighted_choices(prof.layers, choice, k), pinned_scopes)
    can16 = lambda o: "int16x8" in mine[o.scope].rungs if o.scope in mine else supported(o.op, "int16x8")  # noqa
    fixed = harmonize(prof.ops[k], rungs, can16)
    for scope, ly in mine.items():
        if fixed[scope] != choice[ly.key][0] and not prof.ensure(ly, fixed[scope]):
            fixed[scope] = "float32"            # int16x8 does not build or run for this op: float reads any width
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
    timing, changed = _timed(prof, budget, built, choice, f16, say)
    for _ in range(len(prof.stages)):        # a stage sent back to int8 for time: check accuracy again
        if not changed:
            break
        verification = _verify(prof, data, options, choice, f16, budget, built, input_name, say)
        timing, changed = _timed(prof, budget, built, choice, f16, say)
    blobs = tuple(b for b, _ in built)
    table = layer_table(prof, choice, f16, target)
    report = plan_report(prof, options, target, rungs, notes, budget, verification, table,
                         [lb for _, lb in built], blobs)
    report["against_int8"] = timing
    report["notes"] = notes_of(report)
    report["summary"] = ob.summary_lines(report, options)
    return PrecisionPlan(blobs=blobs, precisions=tuple(lb for _, lb in built), layers=tuple(table), report=report,
                         plot_png=plot_png(table, report))


def _size(built) -> int:
    """Bytes of the stage files: 4-bit convolution filters are stored packed (convert/pack.py)."""
    return sum(stored_bytes(b) for b, _ in built)


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
    int8 = _uniform(prof, "int8")
    int8_outs = _exits(prof, int8, data["held_x"], input_name) if int8 else None
    int8_scores = _scores(int8_outs, ref, data["held_y"]) if int8_outs else None
    objective = budget["mode"][len("objective-"):] if budget["mode"].startswith("objective-") else None
    # a count of right answers on a few held-out samples is coarse: the time objectives also keep int8's SQNR
    # (against float) at every exit
    # (or HEADROOM_DB where int8's is above it: the room 4-bit weights may take, objective.noise_room)
    sqnr_floors = [min(v, ob.HEADROOM_DB) for v in _sqnrs(int8_outs, ref)] if objective and int8_outs else None
    ceiling = ob.backoff_ceiling(objective)
    if objective and int8_scores:               # accuracy at uniform int8's (or float's, if int8 is above it)
        floors = [min(f, q) for f, q in zip(float_scores, int8_scores)]
    else:
        floors = [f - options.max_accuracy_drop for f in float_scores]
    backoff: List[Dict[str, Any]] = []
    done: List[str] = []
    undone: List[str] = []                      # raises taken back: the built files would exceed the size budget
    while True:
        outs = _exits(prof, [b for b, _ in built], data["held_x"], input_name)
        scores, sqnrs = _scores(outs, ref, data["held_y"]), _sqnrs(outs, ref)
        short = [e for e, (fl, sc) in enumerate(zip(floors, scores)) if sc < fl - 1e-9]
        short += [e for e, (fl, sq) in enumerate(zip(sqnr_floors or [], sqnrs)) if sq < fl - 1e-9]
        ok = not short
        if not ok and objective and len(backoff) < MAX_BACKOFF and \
                _quieter(prof, choice, f16, built, min(short), backoff, scores, say):
            continue
        if not ok and objective and int8 and len(backoff) < MAX_BACKOFF and \
                _compensate(prof, choice, f16, built, budget, min(short), done, backoff, scores, say):
            continue
        k = None if ok or not objective or not int8 else _revert_stage(prof, choice, f16, built, min(short), int8)
        if k is not None:
            backoff.append({"stage": k, "layer": "(every op)", "from": "mixed", "to": "int8", "scores_before": scores})
            say("back-off: stage {} -> int8".format(k))
            continue
        ly = None if ok or len(backoff) >= MAX_BACKOFF or len(backoff) + len(undone) >= 2 * MAX_BACKOFF else \
            al.backoff_pick(prof.layers, choice, done, ceiling)
        if ly is None:
            break
        _raise_one(prof, ly, choice, f16, built, budget, ceiling, (done, undone, backoff), scores, say)
    return {"samples": int(len(data["held_x"])), "metric": "accuracy" if data["held_y"] is not None
            else "top-1 agreement with float", "float": float_scores, "chosen": scores,
            "max_drop": options.max_accuracy_drop, "holds": bool(ok), "backoff": backoff,
            "undone_over_size_budget": undone, "uniform_int8": int8_scores, "floor": floors,
            "floor_from": "uniform int8 (or float, if lower)" if objective and int8_scores else "float - max_drop",
            "sqnr_db": sqnrs, "sqnr_floor_db": sqnr_floors}


def _raise_one(prof: Profile, ly, choice, f16, built, budget, ceiling, logs, scores, say) -> None:
    """One rung up for `ly` and its stage rebuilt; in size mode taken back when the files would exceed the
    budget. logs: (done, undone, backoff)."""
    done, undone, backoff = logs
    old = choice[ly.key][0]
    new = al.next_rung(ly, old, ceiling)
    while not prof.ensure(ly, new):             # measure="needed": measured now; a rung that fails is dropped
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
        return
    if new == "float32" or new == ceiling:
        done.append(ly.key)
    backoff.append({"stage": ly.stage, "layer": ly.name, "from": old, "to": new, "scores_before": scores})
    say("back-off: {} {} -> {}".format(ly.name, old, new))


def _quieter(prof: Profile, choice, f16, built, first: int, backoff, scores, say) -> bool:
    """Time objectives: the 4-bit op that adds the most noise (objective.added_noise), in the stages up to the exit
    that fell short, back to int8 and its stage rebuilt. False when there is none."""
    cands = [ly for ly in prof.layers if ly.stage <= first and choice[ly.key][0] == "int4w" and "int8" in ly.rungs]
    if not cands:
        return False
    ly = max(cands, key=lambda x: (ob.added_noise(x, "int4w"), x.params))
    choice[ly.key] = ("int8", "back to int8 after held-out verification (the 4-bit op adding most noise)")
    built[ly.stage] = _build(prof, ly.stage, choice, f16)
    backoff.append({"stage": ly.stage, "layer": ly.name, "from": "int4w", "to": "int8", "scores_before": scores})
    say("back-off: {} int4w -> int8".format(ly.name))
    return True


def _compensate(prof: Profile, choice, f16, built, budget, first: int, done: List[str], backoff, scores,
                say) -> bool:
    """Time objectives: win back accuracy with time the plan saved (objective.accuracy_for_time): one op from int8
    to float32, its stage rebuilt. False when no op fits in the time."""
    allowed = max(0.0, budget.get("limit", 0.0) - budget.get("int8_ms", 0.0))
    ly = ob.accuracy_for_time(prof.layers, choice, allowed, first, done)
    if ly is None:
        return False
    choice[ly.key] = ("float32", "raised from int8 to keep uniform int8's accuracy, within its time")
    built[ly.stage] = _build(prof, ly.stage, choice, f16)
    done.append(ly.key)
    backoff.append({"stage": ly.stage, "layer": ly.name, "from": "int8", "to": "float32", "scores_before": scores})
    say("back-off: {} int8 -> float32 (within int8's time)".format(ly.name))
    return True


def _no_gain(prof: Profile, got, built, choice, f16, int8: List[bytes], say) -> bool:
    """Time objectives: a stage that is neither smaller than its int8 build nor faster beyond the noise goes
    back to it (it would only risk accuracy). Whether any did."""
    back = [k for k, (b, _) in enumerate(built) if b != int8[k] and stored_bytes(b) >= len(int8[k]) and
            got["plan"][k].median_ms > got["int8"][k].median_ms - noise_ms(got["int8"][k])]
    for k in back:
        _to_int8_build(prof, k, choice, f16, built, int8, "as it gained neither size nor time")
        say("stage {} gains neither size nor time over its int8 build: back to it".format(k))
    return bool(back)


def _sqnrs(outs: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> List[float]:
    """Per exit: SQNR (dB) of the outputs against the float build's."""
    return [sqnr_db(r, o) for o, r in zip(outs, ref)]


def _revert_stage(prof: Profile, choice, f16, built, first: int, int8: List[bytes]) -> Optional[int]:
    """For the time objectives: the latest stage, up to the first exit below its floor, that is not its
    converter int8 build goes back to it whole (every op int8): a stage built from per-op recipes can lose
    more than its ops did one at a time. None when every such stage is int8 already."""
    mixed = [j for j in range(first + 1) if built[j][0] != int8[j]]
    if not mixed:
        return None
    _to_int8_build(prof, mixed[-1], choice, f16, built, int8, "after held-out verification")
    return mixed[-1]


def _to_int8_build(prof: Profile, k: int, choice, f16, built, int8: List[bytes], why: str) -> None:
    """Stage k becomes its int8 build (the one `convert --precision int8` makes), every op as it has it."""
    for ly in prof.layers:
        if ly.stage == k and not ly.pinned and "int8" in ly.rungs and choice[ly.key][0] != "int8":
            choice[ly.key] = ("int8", "stage {} back to its int8 build {}".format(k, why))
    f16[k] = ""
    built[k] = (int8[k], "int8")


def _uniform(prof: Profile, rung: str) -> Optional[List[bytes]]:
    """Every stage's whole-stage build at `rung`, or None when a stage has none."""
    blobs = [u.get(rung) for u in prof.uniform]
    return None if any(b is None for b in blobs) else blobs


def _timed(prof: Profile, budget: Dict[str, Any], built, choice, f16, say) -> Tuple[Dict[str, Any], bool]:
    """The built plan against the uniform builds, stage by stage, interleaved; and whether it changed the plan.
    When time is the objective, a stage of the plan slower than its int8 build beyond the noise first sends the
    op that costs most back to int8 (per-op costs are measured one op at a time, and small ones add up), and if
    it is still slower, becomes its int8 build whole: the plan is never slower than uniform int8 stage by stage."""
    uniform = {r: b for r, b in ((r, _uniform(prof, r)) for r in ("int8", "float32", "float16")) if b}
    timed = budget["mode"].startswith("objective-") and "int8" in uniform
    timing: Dict[str, Any] = {}
    tried, changed = set(), False
    for _ in range(2 * len(prof.stages) + 1):
        got = stage_times(dict(uniform, plan=[b for b, _ in built]), prof.chain.inputs)
        timing = ob.against_int8(got, [stored_bytes(b) for b, _ in built], prof, [len(b) for b, _ in built])
        k = ob.slow_stage(got, [b for b, _ in built], uniform.get("int8")) if timed else None
        if k is None:
            break
        back = [] if k in tried else ob.to_int8([ly for ly in prof.layers if ly.stage == k], choice)
        tried.add(k)
        changed = True
        if not back:
            _to_int8_build(prof, k, choice, f16, built, uniform["int8"], "after it measured slower than it")
            say("stage {} slower than its int8 build: back to it".format(k))
            continue
        for ly in back:
            choice[ly.key] = ("int8", "back to int8: stage {} measured slower than its int8 build".format(k))
        built[k] = _build(prof, k, choice, f16)
        say("stage {} slower than int8: {} -> int8".format(k, ", ".join(ly.name for ly in back)))
    if timed and timing:
        changed = _no_gain(prof, got, built, choice, f16, uniform["int8"], say) or changed
    budget["built_bytes"] = int(_size(built))
    budget["measured_ms"] = timing["plan_ms"]
    if budget["mode"] in ("size", "latency"):
        got_v = budget["built_bytes"] if budget["mode"] == "size" else budget["measured_ms"]
        budget["holds"] = bool(got_v <= budget["limit"])
    return timing, changed
