"""prune(model, options, calib) -> PruneResult: structured channel pruning with physical removal.

Dependency groups (pruning/groups.py) -> channel importance (pruning/importance.py) -> each group's
output distortion at a grid of ratios, measured on calibration data (pruning/distortion.py) -> per-group
channel counts by exact DP under a FLOPs / parameter / latency budget, with the uniform-ratio baseline
computed alongside (pruning/allocate.py) -> surgery (pruning/surgery.py), checked against the masked
original -> optional distillation recovery (pruning/recover.py). The result is an ordinary Keras model
with the same input, output names and exits.
"""
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.pruning.allocate import Table, check_reachable, keep_options, solve, solve_uniform
from edgekit.convert.pruning.budgets import BUDGETS
from edgekit.convert.pruning.compensate import Compensator
from edgekit.convert.pruning.distortion import DistortionProbe, run_eager
from edgekit.convert.pruning.groups import find_groups
from edgekit.convert.pruning.importance import channel_importance, check_importance
from edgekit.convert.pruning.recover import recover
from edgekit.convert.pruning.report import build_report, to_json_safe
from edgekit.convert.pruning.surgery import rebuild
from edgekit.convert.quantize import check_precision
from edgekit.data import Dataset, check_input_shape
from edgekit.errors import ConfigError, DataError, ModelError
from edgekit.rungs import INT8, PRECISIONS

MIN_SAMPLES = 16               # fewer calibration samples cannot rank channels or measure distortion
MIN_RECOVERY_SAMPLES = 32      # recovery holds out a tenth (at least 8) for early stopping
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ALLOCATIONS = ("dp", "uniform")
SURGERY_TOL = 1e-4             # rebuilt model vs masked original, relative to the output scale

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PruneOptions:
    fraction: float = 0.5              # keep this fraction of the budget quantity, in (0, 1]
    budget: str = "flops"              # flops | params | latency (see pruning/budgets.py BUDGETS)
    importance: str = "l1"             # see pruning/importance.py IMPORTANCE
    allocation: str = "dp"             # dp (the method) | uniform (the baseline)
    ratios: Tuple[float, ...] = DEFAULT_RATIOS   # pruning ratios at which each group's distortion is measured
    channel_multiple: Optional[int] = None       # None: 1, or the target's when converting
    samples: int = 256                 # calibration samples used for ranking and distortion
    recover_epochs: int = 0            # 0: no recovery fine-tune
    compensate: bool = True            # fold removed channels' mean contribution into the next bias / BN mean
    latency_precision: Optional[str] = None      # layers timed at this precision (None: int8, or the convert's)
    resolution: int = 1000             # budget discretisation of the DP
    seed: int = 0

    def check(self) -> "PruneOptions":
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0.0 < float(self.fraction) <= 1.0:
            raise ConfigError("prune budget {}={!r} is outside (0, 1]; it is the fraction of the model's {} to "
                              "keep".format(self.budget, self.fraction, self.budget))
        if self.budget not in BUDGETS:
            raise ConfigError("unknown prune budget {!r}; allowed: {}".format(self.budget, ", ".join(BUDGETS)))
        check_importance(self.importance)
        if self.allocation not in ALLOCATIONS:
            raise ConfigError("unknown allocation {!r}; allowed: {}".format(self.allocation, ", ".join(ALLOCATIONS)))
        if not self.ratios or any(not 0.0 < r < 1.0 for r in self.ratios):
            raise ConfigError("prune ratios {} must be a non-empty list of values in (0, 1)".format(list(self.ratios)))
        if self.channel_multiple is not None and not 1 <= int(self.channel_multiple) <= 64:
            raise ConfigError("channel multiple {} is outside 1..64".format(self.channel_multiple))
        if self.samples < MIN_SAMPLES:
            raise ConfigError("prune samples {} is below {}, too few to rank channels".format(self.samples, MIN_SAMPLES))
        if not isinstance(self.compensate, bool):
            raise ConfigError("compensate {!r}: allowed true or false".format(self.compensate))
        if self.recover_epochs < 0:
            raise ConfigError("recover epochs {} is negative; allowed: 0 (no recovery) or more".format(
                self.recover_epochs))
        if self.resolution < 10:
            raise ConfigError("budget resolution {} is below 10".format(self.resolution))
        if self.latency_precision is not None:
            check_precision(self.latency_precision)
        return self

    def resolved(self, target=None, precision: Optional[str] = None) -> "PruneOptions":
        """Fill the settings left to the context: the target's channel multiple, the converted precision."""
        multiple = self.channel_multiple
        if multiple is None:
            multiple = target.channel_multiple if target is not None else 1
        timed = self.latency_precision or (precision if precision in PRECISIONS else INT8)
        return replace(self, channel_multiple=int(multiple), latency_precision=timed).check()

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ratios"] = list(self.ratios)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruneOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError("unknown prune option(s) {}; allowed: {}".format(", ".join(unknown), ", ".join(sorted(known))))
        d = dict(d)
        if "ratios" in d:
            d["ratios"] = tuple(float(r) for r in d["ratios"])
        return cls(**d).check()


@dataclass(frozen=True)
class PruneResult:
    model: Any                          # the pruned (and recovered) keras.Model
    keep: Dict[str, int]                # group name -> channels kept (prunable groups only)
    report: Dict[str, Any]              # JSON-ready: groups, layers, FLOPs, params, allocations, accuracy


def _inputs(model, calib: Dataset, opts: PruneOptions) -> np.ndarray:
    check_input_shape(calib.x, (None,) + tuple(model.inputs[0].shape[1:]), "calibration data " + (calib.source or ""))
    if len(calib) < MIN_SAMPLES:
        raise DataError("calibration data {} has {} samples; ranking channels needs at least {}".format(
            calib.source or "(in memory)", len(calib), MIN_SAMPLES))
    if opts.recover_epochs and len(calib) < MIN_RECOVERY_SAMPLES:
        raise DataError("calibration data {} has {} samples; recovery needs at least {}".format(
            calib.source or "(in memory)", len(calib), MIN_RECOVERY_SAMPLES))
    return calib.x[:opts.samples].astype(np.float32)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def _removed(scores: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(-scores, kind="stable")[k:])


def prune(model, options: PruneOptions, calib: Dataset, progress: Optional[Progress] = None,
          eval_data: Optional[Dataset] = None) -> PruneResult:
    """Prune `model` to options.fraction of its budget quantity; the input model is left unchanged."""
    opts = options.resolved()
    multiple = int(opts.channel_multiple)
    x = _inputs(model, calib, opts)
    graph = find_groups(model)
    cands = [g for g in graph.prunable if len(keep_options(g.channels, opts.ratios, multiple)) > 1]
    if not cands:
        raise ModelError("model {!r} has no channel group that can be pruned ({} groups; {}); unsupported layers: {}"
                         .format(model.name, len(graph.groups), _why_none(graph, multiple),
                                 ", ".join("{} ({})".format(n, r) for n, r in graph.unsupported[:5]) or "none"))
    total = len(cands) + 4 + opts.recover_epochs
    step = progress or (lambda done, n, label: None)
    step(1, total, "importance ({})".format(opts.importance))
    scores = channel_importance(opts.importance, model, graph, x)
    cost = BUDGETS[opts.budget](model, graph, opts.latency_precision)
    check_reachable(cost.evaluate({g.index: keep_options(g.channels, opts.ratios, multiple)[-1] / g.channels
                                   for g in cands}), cost.full(), opts.fraction * cost.full())
    step(2, total, "{} cost model".format(opts.budget))
    probe = DistortionProbe(model, graph, x, Compensator(model, graph, x) if opts.compensate else None)
    tables = []
    for i, g in enumerate(cands):
        tables.append(_table(g, scores[g.index], cost, probe, opts.ratios, multiple))
        step(3 + i, total, "distortion of group {}/{} ({})".format(i + 1, len(cands), g.name))
    plans = _allocate(tables, cost, opts, multiple, scores, probe, model, graph, eval_data)
    chosen = plans[opts.allocation]
    step(3 + len(cands), total, "allocation ({})".format(opts.allocation))
    pruned = _surgery(model, graph, chosen["keep_sets"], probe)
    step(4 + len(cands), total, "surgery")
    recovery, acc_pruned = None, _accuracy(pruned, calib, eval_data)
    if opts.recover_epochs:
        pruned, recovery = _recover(pruned, model, calib, opts, step, 4 + len(cands), total)
    report = _report(model, pruned, graph, cost, opts, multiple, tables, plans, calib, eval_data, recovery,
                     acc_pruned)
    keep = {g.name: int(len(chosen["keep_sets"][g.index])) for g in cands}
    step(total, total, "pruned")
    return PruneResult(model=pruned, keep=keep, report=to_json_safe(report))


def _why_none(graph, multiple: int) -> str:
    if graph.prunable:
        return "every prunable group has at most {} channel(s), the channel multiple".format(multiple)
    reasons = sorted({g.reason for g in graph.groups if g.reason})
    return "all are frozen: " + "; ".join(reasons[:4])


def _table(g, scores: np.ndarray, cost, probe, ratios: Sequence[float], multiple: int):
    keeps = keep_options(g.channels, ratios, multiple)
    full = cost.full()
    dist = np.array([0.0 if k == g.channels else probe.measure({g.index: _removed(scores, int(k))}) for k in keeps])
    saving = np.array([full - cost.alone(g.index, k / g.channels) for k in keeps])
    return Table(group=g.index, channels=g.channels, keeps=keeps, distortion=dist, saving=saving)


def _allocate(tables, cost, opts: PruneOptions, multiple: int, scores, probe, model, graph,
              eval_data: Optional[Dataset]) -> Dict[str, Dict[str, Any]]:
    """Both allocations (the DP and the uniform baseline), each with its exact cost and its joint
    distortion measured with all groups pruned at once (on calibration data, and on eval data if given)."""
    full, target = cost.full(), opts.fraction * cost.full()

    def exact(keeps: Sequence[int]) -> float:
        return cost.evaluate({t.group: k / t.channels for t, k in zip(tables, keeps)})

    dp = solve(tables, exact, full, target, opts.resolution)
    ratio, uniform = solve_uniform(tables, exact, full, target, multiple, max(opts.ratios))
    # the DP again, held to the uniform baseline's actual cost: a comparison at no more FLOPs than uniform
    dp_eq = solve(tables, exact, full, min(target, exact(uniform)), opts.resolution) \
        if exact(uniform) >= exact([int(t.keeps[-1]) for t in tables]) else None
    eval_probe = None
    if eval_data is not None and len(eval_data) > 0:
        eval_probe = DistortionProbe(model, graph, eval_data.x[:opts.samples].astype(np.float32), probe.compensator)
    plans = {}
    for name, keeps in (("dp", dp), ("uniform", uniform), ("dp_at_uniform_cost", dp_eq)):
        if keeps is None:
            continue
        removed = {t.group: _removed(scores[t.group], k) for t, k in zip(tables, keeps)}
        plans[name] = {
            "keeps": [int(k) for k in keeps],
            "keep_sets": {t.group: _top(scores[t.group], k) for t, k in zip(tables, keeps)},
            "cost": exact(keeps), "cost_fraction": exact(keeps) / full,
            "distortion_calib": probe.measure(removed),
            "distortion_eval": None if eval_probe is None else eval_probe.measure(removed),
        }
    plans["uniform"]["ratio"] = ratio
    plans["dp"]["predicted_distortion"] = float(sum(
        t.distortion[list(t.keeps).index(k)] for t, k in zip(tables, dp)))
    return plans


def _surgery(model, graph, keep_sets: Dict[int, np.ndarray], probe):
    """Rebuild, then check the rebuilt model against the masked original on the calibration inputs."""
    removed = {g: np.setdiff1d(np.arange(graph.groups[g].channels), k) for g, k in keep_sets.items()}
    pruned = rebuild(model, graph, keep_sets, probe.compensator.adjustments(removed) if probe.compensator else ())
    masked = probe.masked_outputs(removed, batches=1)
    got = run_eager(pruned, np.asarray(probe.batches[0]))
    for m, o in zip(masked, got):
        scale = float(np.max(np.abs(m))) or 1.0
        err = float(np.max(np.abs(np.asarray(o, np.float64) - m))) / scale
        if err > SURGERY_TOL:
            raise ModelError("surgery check failed on {!r}: the rebuilt model differs from the masked original by "
                             "{:.3g} (relative; allowed {})".format(model.name, err, SURGERY_TOL))
    return pruned


def _recover(pruned, teacher, calib: Dataset, opts: PruneOptions, step: Progress, done: int, total: int):
    rep = recover(pruned, teacher, calib.x.astype(np.float32), calib.y, opts.recover_epochs, opts.seed,
                  lambda e, n, label: step(done + e, total, label))
    return rebuild(pruned, find_groups(pruned), {}), rep        # a clean, uncompiled copy


def _accuracy(model, calib: Dataset, eval_data: Optional[Dataset]) -> Optional[List[float]]:
    data = eval_data if eval_data is not None else calib
    if data.y is None:
        return None

    outs = run_eager(model, data.x.astype(np.float32))
    return [float(np.mean(np.argmax(o.reshape(len(data), -1), axis=-1) == data.y)) for o in outs]


def _report(model, pruned, graph, cost, opts, multiple, tables, plans, calib, eval_data, recovery,
            acc_pruned) -> Dict[str, Any]:
    return build_report(model=model, pruned=pruned, graph=graph, cost=cost, options=opts, multiple=multiple,
                        tables=tables, plans=plans, recovery=recovery,
                        accuracy={"unpruned": _accuracy(model, calib, eval_data), "pruned": acc_pruned,
                                  "recovered": _accuracy(pruned, calib, eval_data) if recovery else None,
                                  "on": "eval data" if eval_data is not None else "calibration data"
                                  if calib.y is not None else None})
