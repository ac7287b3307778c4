"""The search: each technique alone first (measured), then combinations in the order cheap proxies rank them,
then the most promising operating points timed end to end.

Proxies: a combination's cost is the baseline's times the product of its techniques' measured cost ratios (each
technique's best accurate-enough point over the baseline at full depth), and its accuracy loss the sum of their
measured losses. Only combinations whose proxy loss fits the constraint and whose proxy cost beats the best
point measured so far are converted, best proxy first, at most `max_combinations` of them: a Pareto-guided
search, not a grid. Every conversion and measurement goes through the cache.
"""
import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from edgekit.optimize.cache import Cache, cache_key
from edgekit.optimize.measure import (ConvertFn, Splits, build, end_to_end_board, end_to_end_here, points,
                                      write_point)
from edgekit.optimize.pareto import Point, feasible
from edgekit.optimize.space import NATIVE, Candidate, OptimizeOptions, rungs

Progress = Callable[[str, int, int, str], None]     # phase, done, total, what


@dataclass
class Context:
    opts: OptimizeOptions
    target: Any
    cache: Cache
    keys: Dict[str, Any]          # model hash, target, board, data hashes, settings
    convert_fn: ConvertFn
    splits: Splits
    min_accuracy: float
    progress: Progress
    conversions: int = 0          # conversions actually run (not found in the cache)
    cache_hits: int = 0
    log: List[Dict[str, Any]] = field(default_factory=list)

    def key(self, cand: Candidate, **more: Any) -> str:
        return cache_key(candidate=cand.to_dict(), **dict(self.keys, **more))


def bundle_for(ctx: Context, cand: Candidate) -> str:
    key = ctx.key(cand, what="bundle")
    got = ctx.cache.bundle(key)
    if got is not None:
        ctx.cache_hits += 1
        return got
    work = ctx.cache.work_dir()
    try:
        built = build(ctx.opts, cand, work, ctx.convert_fn)
        ctx.conversions += 1
        return ctx.cache.put_bundle(key, built)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def measure(ctx: Context, cand: Candidate, why: str) -> List[Point]:
    key = ctx.key(cand, what="points", shares=list(ctx.opts.space.drop_shares), max_drop=ctx.opts.max_drop)
    got = ctx.cache.result(key)
    if got is None:
        bundle = bundle_for(ctx, cand)
        got = {"points": [p.to_dict() for p in points(bundle, cand, ctx.splits, ctx.opts.max_drop,
                                                       ctx.opts.space.drop_shares, ctx.target)]}
        ctx.cache.put_result(key, got)
    else:
        ctx.cache_hits += 1
    ctx.log.append({"candidate": cand.key, "why": why})
    return [Point.from_dict(d) for d in got["points"]]


def baseline(model_exits: int, precisions: List[str]) -> Candidate:
    """Uniform int8 (the first precision tried where int8 is not), the model's own exits, not pruned. A
    single-output model gets one exit (auto:1): convert cuts a model at its exits and needs at least one cut;
    at full depth that exit's head is the only difference from the plain model."""
    return Candidate(exits=model_exits, prune=None, precision="int8" if "int8" in precisions else precisions[0])


def singles(ctx: Context, base: Candidate, plain: bool) -> List[Candidate]:
    """Each technique alone: precision rungs, pruning fractions, exit counts (on a single-output model)."""
    space = ctx.opts.space
    out = [base] + [replace(base, precision=r) for r in rungs(space, ctx.target, ctx.opts.budget)
                    if r != base.precision]
    out += [replace(base, prune=p) for p in space.prune_fractions]
    out += [replace(base, exits=n, place=pl) for pl in space.exit_places for n in space.exit_counts
            if (n, pl) != (base.exits, base.place)] if plain else []
    return out


def _ratio(pts: List[Point], base_full: Point, metric: str, min_acc: float, ref: float) -> Tuple[float, float]:
    """(cost ratio over the baseline at full depth, accuracy lost) of the cheapest accurate-enough point among
    pts (the most accurate when none is)."""
    ok = feasible(pts, min_acc)
    best = min(ok, key=lambda p: p.metric(metric)) if ok else max(pts, key=lambda p: p.accuracy)
    return best.metric(metric) / max(base_full.metric(metric), 1e-12), max(0.0, ref - best.accuracy)


def technique_ratios(ctx: Context, base: Candidate, measured: Dict[Candidate, List[Point]], ref: float,
                     metric: str) -> Dict[str, Dict[Any, Tuple[float, float]]]:
    """Per technique and setting, (cost ratio, accuracy lost) as measured alone: exits from the thresholded
    points of the unpruned baseline-precision conversions (keyed by count and placement), pruning and precision from
    their full-depth points."""
    base_full = [p for p in measured[base] if p.drop_share is None][0]
    out: Dict[str, Dict[Any, Tuple[float, float]]] = {"exits": {}, "prune": {None: (1.0, 0.0)},
                                                      "precision": {base.precision: (1.0, 0.0)}}
    for cand, pts in measured.items():
        full = [p for p in pts if p.drop_share is None]
        exits = [p for p in pts if p.drop_share is not None]
        if cand.prune is None and cand.precision == base.precision and exits:
            out["exits"][(cand.exits, cand.place)] = _ratio(exits, base_full, metric, ctx.min_accuracy, ref)
        elif (cand.exits, cand.place) == (base.exits, base.place) and \
                (cand.prune is None) != (cand.precision == base.precision):
            dim = "prune" if cand.prune is not None else "precision"
            out[dim][getattr(cand, dim)] = _ratio(full, base_full, metric, ctx.min_accuracy, ref)
    return out


def combinations(ctx: Context, base: Candidate, measured: Dict[Candidate, List[Point]], ref: float,
                 metric: str) -> List[Tuple[float, float, Candidate]]:
    """Untried candidates with their proxy (cost, loss), best proxy first."""
    by_dim = technique_ratios(ctx, base, measured, ref, metric)
    base_cost = [p for p in measured[base] if p.drop_share is None][0].metric(metric)
    out = []
    for e, p, q in itertools.product(by_dim["exits"], by_dim["prune"], by_dim["precision"]):
        cand = Candidate(e[0], p, q, e[1])
        if cand in measured:
            continue
        parts = [by_dim["exits"][e], by_dim["prune"][p], by_dim["precision"][q]]
        out.append((base_cost * float(np.prod([r for r, _ in parts])), sum(d for _, d in parts), cand))
    return sorted(out, key=lambda t: (t[0], t[1]))


def pruned_too_far(measured: Dict[Candidate, List[Point]], cand: Candidate, min_accuracy: float) -> bool:
    """Successive halving along the pruning axis: a FLOPs fraction is not tried once a larger one (less pruned,
    otherwise the same) was below the accuracy floor even at full depth."""
    if cand.prune is None:
        return False
    return any(c.prune is not None and c.prune > cand.prune and replace(c, prune=cand.prune) == cand and
               max(p.accuracy for p in pts if p.drop_share is None) < min_accuracy for c, pts in measured.items())


def search(ctx: Context, model_exits: int, ref: float) -> Tuple[List[Point], Candidate]:
    """Every measured operating point (the verified ones timed end to end) and the baseline candidate."""
    metric = ctx.opts.budget.metric
    base = baseline(model_exits, rungs(ctx.opts.space, ctx.target, ctx.opts.budget))
    measured: Dict[Candidate, List[Point]] = {}
    todo = singles(ctx, base, model_exits != NATIVE)   # one conversion gives full depth and exits at once
    for i, cand in enumerate(todo):
        if pruned_too_far(measured, cand, ctx.min_accuracy):
            ctx.log.append({"candidate": cand.key, "why": "skipped: a larger FLOPs fraction already lost too much"})
            continue
        ctx.progress("singles", i, len(todo), cand.key)
        measured[cand] = measure(ctx, cand, "single technique")
    ctx.progress("singles", len(todo), len(todo), "done")
    combos = [c for c in combinations(ctx, base, measured, ref, metric)
              if c[1] <= ctx.opts.max_drop + 1e-12]
    tried = 0
    for cost, loss, cand in combos:
        best = min((p.metric(metric) for pts in measured.values() for p in feasible(pts, ctx.min_accuracy)),
                   default=float("inf"))
        if tried >= ctx.opts.space.max_combinations or cost >= best:
            continue
        ctx.progress("combinations", tried, min(len(combos), ctx.opts.space.max_combinations), cand.key)
        measured[cand] = measure(ctx, cand, "proxy cost {:.4g}, proxy loss {:.4f}".format(cost, loss))
        tried += 1
    ctx.log.append({"combinations_ranked": len(combos), "combinations_converted_or_cached": tried})
    return [p for pts in measured.values() for p in pts], base


def verify(ctx: Context, pts: List[Point], base: Candidate) -> List[Point]:
    """The `verify` cheapest accurate-enough points (distinct bundles), the cheapest point of each technique
    alone and the baseline at full depth, timed end to end together (cached as one measurement)."""
    metric = ctx.opts.budget.metric
    if metric == "size_bytes":
        return pts
    ok = sorted(feasible(pts, ctx.min_accuracy), key=lambda p: p.metric(metric))
    chosen: List[Point] = [p for p in pts if p.candidate == base and p.drop_share is None]
    for p in ok:
        if len(chosen) > ctx.opts.space.verify:
            break
        if all((q.candidate, q.thresholds) != (p.candidate, p.thresholds) for q in chosen):
            chosen.append(p)
    for technique in ("exits", "pruning", "precision"):   # so the choice is compared with each technique alone
        single = next((p for p in ok if p.techniques(base) == (technique,)), None)
        if single is not None and all((q.candidate, q.thresholds) != (single.candidate, single.thresholds)
                                      for q in chosen):
            chosen.append(single)
    ctx.progress("end-to-end", 0, len(chosen), "{} points, interleaved".format(len(chosen)))
    timed = measure_end_to_end(ctx, chosen)
    ctx.progress("end-to-end", len(chosen), len(chosen), "done")
    return with_overhead([p for p in pts if p not in chosen], chosen, timed, ctx) + timed


def stage_calls(p: Point) -> float:
    """Stage calls per inference at the point's exit fractions."""
    return float(sum((k + 1) * f for k, f in enumerate(p.exit_fractions)))


def with_overhead(rest: List[Point], before: List[Point], after: List[Point], ctx: Context) -> List[Point]:
    """The points not timed end to end, on the same footing as those that were: their stage-cost latency plus a
    per-stage-call overhead (the runtime's own work around each interpreter call) fitted by least squares to
    what timing added to the timed points' stage costs."""
    calls = np.array([stage_calls(p) for p in before])
    extra = np.array([a.latency_ms - b.latency_ms for a, b in zip(after, before)])
    per_call = max(0.0, float(calls @ extra / max(float(calls @ calls), 1e-12)))
    ctx.log.append({"overhead_ms_per_stage_call": per_call, "fitted_on_points": len(after)})
    out = []
    for p in rest:
        ms = p.latency_ms + per_call * stage_calls(p)
        out.append(replace(p, latency_ms=ms, latency_from="modelled: stage costs + {:.4f} ms per stage call".format(
            per_call), energy_mj=p.energy_mj * ms / max(p.latency_ms, 1e-12)))
    return out


def measure_end_to_end(ctx: Context, chosen: List[Point]) -> List[Point]:
    key = cache_key(what="end-to-end", points=[ctx.key(p.candidate, share=p.drop_share) for p in chosen],
                    max_drop=ctx.opts.max_drop, **ctx.keys)
    got = ctx.cache.result(key)
    if got is not None:
        ctx.cache_hits += 1
        return [Point.from_dict(d) for d in got["points"]]
    bundles = [point_bundle(ctx, p) for p in chosen]
    if ctx.opts.board is not None:
        timed = [end_to_end_board(b, p, ctx.splits, ctx.opts.board, ctx.target) for b, p in zip(bundles, chosen)]
    else:
        timed = end_to_end_here(bundles, chosen, ctx.splits, ctx.target)
    ctx.cache.put_result(key, {"points": [p.to_dict() for p in timed]})
    return timed


def point_bundle(ctx: Context, p: Point) -> str:
    """The cached bundle of the point: the candidate's bundle with the point's thresholds."""
    key = ctx.key(p.candidate, what="point-bundle", share=p.drop_share, max_drop=ctx.opts.max_drop)
    got = ctx.cache.bundle(key)
    if got is not None:
        return got
    import os
    import shutil

    work = ctx.cache.work_dir()
    try:
        made = write_point(bundle_for(ctx, p.candidate), p, os.path.join(work, "b"), ctx.opts.calib_path,
                           ctx.opts.eval_path, ctx.opts.max_drop)
        return ctx.cache.put_bundle(key, made)
    finally:
        shutil.rmtree(work, ignore_errors=True)
