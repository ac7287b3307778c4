"""Build one candidate with the conversion pipeline and measure its operating points.

Conversion is `edgekit.convert.convert` (exits, pruning, precision, thresholds as convert does them); stage
costs are the ones convert measured with the cost protocol on this machine, or, with a board, the ones the
board's runtime measures (`edgekit profile --host`: the bundle is flashed there first). Thresholds are
fitted per drop share on the calibration data's held-out part (never on --eval); accuracy and exit fractions
come from running the bundle's quantized stages on --eval.
"""
import os
import shutil
from dataclasses import dataclass, replace
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.bench.energy import EnergyOptions
from edgekit.fit.provenance import HELD_OUT
from edgekit.fit.thresholds import DEFAULT_Z, NEVER, apply_thresholds, correctness, fit_thresholds
from edgekit.data import Dataset
from edgekit.manifest import MANIFEST_NAME, Manifest, load_bundle
from edgekit.optimize.pareto import Point
from edgekit.optimize.space import Candidate, OptimizeOptions
from edgekit.runtime.policy import exit_rule
from edgekit.runtime.runner import EarlyExitRunner, evaluate, exit_outputs

ConvertFn = Callable[..., Any]       # edgekit.convert.convert's signature: (ConvertOptions, progress) -> result
STAGE_COSTS = "stage costs"
BOARD_ENERGY = EnergyOptions(blocks=2, block_seconds=1.0, idle_seconds=1.0)   # the meter's, labelled; short
END_TO_END = "end to end"


@dataclass(frozen=True)
class Splits:
    fit: Dataset                  # thresholds are fitted here (the calibration data's held-out part)
    eval: Dataset                 # accuracy is measured here
    eval_path: str


def convert_options(opts: OptimizeOptions, cand: Candidate, out_dir: str):
    """The ConvertOptions that build `cand`: the same stages `edgekit convert` runs, nothing re-implemented."""
    from edgekit.convert import ConvertOptions
    from edgekit.convert.exits import ExitOptions
    from edgekit.convert.prune import PruneOptions

    adaptive = cand.precision.startswith("adaptive:")
    return ConvertOptions(
        model_path=opts.model_path, target=opts.target, calib_path=opts.calib_path, out_dir=out_dir,
        precision="adaptive" if adaptive else cand.precision,
        objective=cand.precision.split(":", 1)[1] if adaptive else None,
        max_drop=opts.max_drop,          # heads and recovery then train only on the part thresholds never see
        exits=ExitOptions(auto=cand.exits, epochs=opts.space.head_epochs, place=cand.place) if cand.exits > 0
        else None,
        prune=None if cand.prune is None else PruneOptions(fraction=cand.prune, budget="flops",
                                                          recover_epochs=opts.space.recover_epochs))


def build(opts: OptimizeOptions, cand: Candidate, work: str, convert_fn: ConvertFn) -> str:
    """Convert `cand` into work/<target>/ and, with a board, write the board's stage costs into it."""
    result = convert_fn(convert_options(opts, cand, work))
    if opts.board is not None:
        from edgekit.bench.profile import write_costs
        from edgekit.deploy import flash
        from edgekit.deploy.board_runs import profile_board

        flash(result.bundle_dir, opts.board)
        write_costs(result.bundle_dir, profile_board(opts.board, result.bundle_dir, opts.eval_path))
    return result.bundle_dir


def _scores(runner: EarlyExitRunner, ds: Dataset) -> Tuple[np.ndarray, np.ndarray]:
    outs = exit_outputs(runner, ds.x)
    rules = [s.exit.rule for s in runner.manifest.stages]
    scores = np.stack([exit_rule(r)(raw) for r, (_, raw) in zip(rules, outs)])
    preds = np.stack([np.argmax(o.reshape(len(o), -1), axis=-1) for o, _ in outs])
    return scores, correctness(preds, ds.y, "accuracy")


def energy_mj(latency_ms: float, target: Any) -> float:
    """Estimated energy per inference: the latency at the power model's full-load watts (ms x W = mJ)."""
    return float(latency_ms) * float(target.power_model.active_w)


def stage_costs(manifest: Manifest) -> List[float]:
    return [float(s.latency_ms or max(s.flops, 1) / 1e6) for s in manifest.stages]


def points(bundle: str, cand: Candidate, splits: Splits, max_drop: float, shares: Sequence[float],
           target: Any) -> List[Point]:
    """The candidate's operating points on --eval: full depth, and thresholds fitted at each drop share."""
    runner = EarlyExitRunner(bundle)
    m = runner.manifest
    costs = stage_costs(m)
    size = sum(s.size_bytes for s in m.stages)
    where = str((m.extra.get("costs") or {}).get("measured_on", "converting-machine"))

    def point(share: Optional[float], ths: Sequence[float], acc: float, ms: float, fr: Sequence[float]) -> Point:
        return Point(cand, share, tuple(float(t) for t in ths), float(acc), float(ms), STAGE_COSTS,
                     energy_mj(ms, target), "estimated", int(size), tuple(float(f) for f in fr), where)

    if len(m.stages) < 2:
        acc = evaluate(runner, splits.eval.x, splits.eval.y, full_depth=True)["accuracy"]
        return [point(None, (), acc, sum(costs), (1.0,))]
    e_scores, e_right = _scores(runner, splits.eval)
    full = apply_thresholds([NEVER] * (len(costs) - 1), e_scores, e_right, costs)
    out = [point(None, full.thresholds, full.accuracy, full.cost_ms, full.exit_fractions)]
    f_scores, f_right = _scores(runner, splits.fit)
    seen = {tuple(full.thresholds)}
    for share in shares:
        fit = fit_thresholds(f_scores, f_right, costs, share * max_drop, DEFAULT_Z)
        if tuple(fit.chosen.thresholds) in seen:       # the same bundle as a smaller share: one point
            continue
        seen.add(tuple(fit.chosen.thresholds))
        got = apply_thresholds(fit.chosen.thresholds, e_scores, e_right, costs)
        out.append(point(share, fit.chosen.thresholds, got.accuracy, got.cost_ms, got.exit_fractions))
    return out


def write_point(src: str, p: Point, dest: str, calib_path: str, eval_path: str, max_drop: float) -> str:
    """A copy of the candidate's bundle at dest with the point's thresholds: fitted again by `calibrate`'s own
    fit (the same data part and drop, so the same thresholds, recorded in report.json), or never exiting."""
    from edgekit.fit.threshold_fit import CalibrateOptions, fit_bundle

    shutil.copytree(src, dest)
    m = load_bundle(dest)
    if p.drop_share is not None:
        fit_bundle(CalibrateOptions(dest, calib_path, p.drop_share * max_drop, eval_path, part=HELD_OUT))
    elif len(m.stages) > 1:
        stages = tuple(replace(s, exit=replace(s.exit, threshold=NEVER if k < len(m.stages) - 1 else 0.0))
                       for k, s in enumerate(m.stages))
        with open(os.path.join(dest, MANIFEST_NAME), "w", encoding="utf-8") as f:
            f.write(replace(m, stages=stages).to_json())
    got = tuple(s.exit.threshold for s in load_bundle(dest).stages[:-1])
    if p.drop_share is not None and not np.allclose(got, p.thresholds):
        from edgekit.errors import BundleError

        raise BundleError("thresholds written {} differ from the ones measured {}".format(got, p.thresholds))
    return dest


def end_to_end_board(bundle: str, p: Point, splits: Splits, board: Any, target: Any, runs: int = 200) -> Point:
    """The point timed end to end on the board by `edgekit bench` there (after flashing): latency and energy
    (the board's meter, or its power model: labelled)."""
    from edgekit.deploy.board_runs import board_bench
    from edgekit.bench.latency import Protocol
    from edgekit.deploy import flash

    flash(bundle, board)
    got = board_bench(board, bundle, splits.eval_path, Protocol(runs=runs), BOARD_ENERGY)
    e = got.get("energy") or {}
    mean = got["early_exit"]["latency_ms"]["mean"]
    joules = (e.get("early_exit") or {}).get("joules_total")
    if joules is not None:
        return replace(p, latency_ms=mean, latency_from=END_TO_END, energy_mj=float(joules) * 1e3,
                       energy_kind=str(e.get("kind", "estimated")))
    return replace(p, latency_ms=mean, latency_from=END_TO_END, energy_mj=energy_mj(mean, target))


def end_to_end_here(bundles: Sequence[str], pts: Sequence[Point], splits: Splits, target: Any) -> List[Point]:
    """The points timed together on this machine, in a child process that never ran TensorFlow
    (edgekit/optimize/timing.py): the mean latency per inference over every --eval sample."""
    import json
    import subprocess
    import sys

    from edgekit.errors import EdgekitError

    got = subprocess.run([sys.executable, "-m", "edgekit.optimize.timing", splits.eval_path] + list(bundles),
                         capture_output=True, text=True)
    if got.returncode != 0:
        lines = [ln for ln in got.stderr.splitlines() if ln.startswith("edgekit: error: ")] or \
            got.stderr.strip().splitlines()[-1:] or ["exit code {}".format(got.returncode)]
        raise EdgekitError("timing the candidates end to end failed: {}".format(lines[-1].replace(
            "edgekit: error: ", "")))
    means = json.loads(got.stdout)["mean_ms"]
    return [replace(p, latency_ms=float(ms), latency_from=END_TO_END, energy_mj=energy_mj(ms, target))
            for p, ms in zip(pts, means)]
