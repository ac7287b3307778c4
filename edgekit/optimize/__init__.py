"""`edgekit optimize`: from a model and a board budget to the best dynamic deployment.

The order of the phases lives here only: check everything -> reference accuracy -> each technique alone ->
combinations the proxies rank promising -> the cheapest accurate-enough points timed end to end -> choose within
the budget -> write OUT (pareto.csv, pareto.png, report.json, OUT/<target>/). Conversions are
`edgekit.convert.convert`'s; this package decides which to run and measures what they give.
"""
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from edgekit.fit.provenance import HELD_OUT, part_of
from edgekit.fit.thresholds import check_drop
from edgekit.data import load_data
from edgekit.errors import ConfigError, EdgekitError
from edgekit.manifest import sha256_file
from edgekit.optimize.cache import Cache
from edgekit.optimize.measure import ConvertFn, Splits
from edgekit.optimize.output import check_out, write
from edgekit.optimize.pareto import Point, best_single, choose, pareto_front
from edgekit.optimize.search import Context, Progress, point_bundle, search, verify
from edgekit.optimize.space import NATIVE, Budget, OptimizeOptions, SearchSpace

__all__ = ["Budget", "OptimizeOptions", "OptimizeResult", "SearchSpace", "optimize"]
TECHNIQUES = ("exits", "pruning", "precision")
PLAIN_EXITS = 1                   # a single-output model's baseline: one exit (convert needs a cut)


@dataclass(frozen=True)
class OptimizeResult:
    out_dir: str
    bundle_dir: str
    chosen: Point
    front: List[Point]
    report: Dict[str, Any]
    conversions: int              # conversions run in this call (0 when everything came from the cache)


def _check(opts: OptimizeOptions):
    from edgekit.targets import get_target

    opts.budget.check()
    opts.space.check()
    check_drop(opts.max_drop)
    target = get_target(opts.target)
    if not opts.model_path.lower().endswith(".keras") or not os.path.isfile(opts.model_path):
        raise ConfigError("model {!r}: optimize needs a Keras .keras file that exists (exits and pruning train "
                          "and cut Keras layers)".format(opts.model_path))
    check_out(opts.out_dir)
    calib, ev = load_data(opts.calib_path), load_data(opts.eval_path)
    if ev.y is None or calib.y is None:
        raise ConfigError("{} has no labels (y); optimize measures accuracy: allowed .npz files with x and y".format(
            opts.eval_path if ev.y is None else opts.calib_path))
    return target, Splits(fit=part_of(calib, HELD_OUT), eval=ev, eval_path=opts.eval_path)


def _reference(opts: OptimizeOptions, cache: Cache, keys: Dict[str, Any], splits: Splits) -> Dict[str, Any]:
    """The model as given (float, full depth) on --eval, and whether its outputs are exits already."""
    from edgekit.optimize.cache import cache_key

    key = cache_key(what="reference", model=keys["model"], eval=keys["eval"])
    got = cache.result(key)
    if got is None:
        import numpy as np

        from edgekit.convert.load import load_model

        model = load_model(opts.model_path)
        out = model.predict(splits.eval.x.astype(np.float32), verbose=0, batch_size=128)
        last = out[-1] if isinstance(out, (list, tuple)) else out
        got = {"accuracy": float(np.mean(np.argmax(np.asarray(last).reshape(len(last), -1), -1) == splits.eval.y)),
               "outputs": len(model.outputs)}
        cache.put_result(key, got)
    return got


def optimize(opts: OptimizeOptions, progress: Optional[Progress] = None,
             convert_fn: Optional[ConvertFn] = None) -> OptimizeResult:
    """Search, choose the cheapest point within --max-accuracy-drop that meets the budget, write OUT."""
    t0 = time.monotonic()
    target, splits = _check(opts)
    if convert_fn is None:
        from edgekit.convert import convert as convert_fn
    cache = Cache(opts.cache_dir)
    keys = {"model": sha256_file(opts.model_path), "target": target.name,
            "board": None if opts.board is None else opts.board.label,
            "calib": sha256_file(opts.calib_path), "eval": sha256_file(opts.eval_path),
            "space": {k: v for k, v in asdict(opts.space).items() if k in ("recover_epochs", "head_epochs")}}
    ref = _reference(opts, cache, keys, splits)
    ctx = Context(opts, target, cache, keys, convert_fn, splits, ref["accuracy"] - opts.max_drop,
                  progress or (lambda phase, done, total, what: None))
    pts, base = search(ctx, NATIVE if ref["outputs"] > 1 else PLAIN_EXITS, ref["accuracy"])
    pts = verify(ctx, pts, base)
    metric = opts.budget.metric
    timed = [p for p in pts if p.latency_from == "end to end"] if metric != "size_bytes" else pts
    base_full = next((p for p in timed if p.candidate == base and p.drop_share is None), None)
    limit = opts.budget.resolve(None if base_full is None else base_full.metric(metric))
    chosen, closest = choose(timed, metric, limit, ctx.min_accuracy)
    if chosen is None:
        raise EdgekitError("no candidate meets {} <= {:.4g}{} with accuracy >= {:.2%} (the model's {:.2%} less {:g}); "
                           "closest: {} at {} {:.4g}, accuracy {:.2%}".format(
                               metric, limit, opts.budget.describe(), ctx.min_accuracy, ref["accuracy"],
                               opts.max_drop, closest.name, metric, closest.metric(metric), closest.accuracy))
    front = pareto_front(pts, metric)
    report = _report(opts, ctx, ref, pts, front, chosen, base, base_full, time.monotonic() - t0)
    report["budget"]["resolved"] = limit
    bundle = write(opts.out_dir, target.name, point_bundle(ctx, chosen), pts, front, chosen, base_full, report,
                   metric, limit, ctx.min_accuracy)
    return OptimizeResult(opts.out_dir, bundle, chosen, front, report, ctx.conversions)


def _report(opts: OptimizeOptions, ctx: Context, ref: Dict[str, Any], pts: List[Point], front: List[Point],
            chosen: Point, base, base_full: Optional[Point], seconds: float) -> Dict[str, Any]:
    metric = opts.budget.metric
    singles = {t: best_single(pts if metric == "size_bytes" else [p for p in pts if p.latency_from == "end to end"]
                              or pts, metric, ctx.min_accuracy, base, t) for t in TECHNIQUES}
    return {
        "model": opts.model_path, "target": opts.target, "calib": opts.calib_path, "eval": opts.eval_path,
        "board": None if opts.board is None else opts.board.label,
        "budget": {"metric": metric, "limit": opts.budget.limit, "relative": opts.budget.relative},
        "max_accuracy_drop": opts.max_drop, "reference_accuracy": ref["accuracy"],
        "min_accuracy": ctx.min_accuracy, "baseline": base.key,
        "baseline_full_depth": None if base_full is None else base_full.to_dict(),
        "chosen": chosen.to_dict(), "front": [p.to_dict() for p in front], "points": [p.to_dict() for p in pts],
        "best_single_technique": {t: None if p is None else p.to_dict() for t, p in singles.items()},
        "search": {"log": ctx.log, "conversions_run": ctx.conversions, "cache_hits": ctx.cache_hits,
                   "cache": ctx.cache.root, "seconds": seconds, "space": asdict(opts.space)},
        "latency": "end to end, batch 1, mean ms on --eval as `edgekit bench` times it ({}); other points: expected "
                   "from the stage costs (cost protocol) and the exit fractions on --eval".format(
                       "on the board " + opts.board.label if opts.board is not None else "on this machine"),
        "energy": "estimated: latency x the target power model's full-load watts, unless a board bench measured it "
                  "(energy_kind per point)",
    }
