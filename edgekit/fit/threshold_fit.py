"""Fit exit thresholds on the quantized stages: `edgekit calibrate` on a written bundle (in place, atomically; a
failure changes nothing), and `convert --max-accuracy-drop` on the stages it holds in memory, before it writes.

Runs the quantized stages (the runtime, not TensorFlow), fits thresholds with thresholds.py, reports the accuracy
actually reached on a held-out split, and returns the manifest with the thresholds and the report section.
"""
import json
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgekit.atomic import swap_in_edited_copy
from edgekit.fit.provenance import ALL, HELD_OUT, PARTS, fit_data
from edgekit.fit.thresholds import DEFAULT_Z, apply_thresholds, check_drop, correctness, fit_thresholds
from edgekit.data import Dataset, load_data
from edgekit.errors import BundleError, ConfigError
from edgekit.manifest import MANIFEST_NAME, REPORT_NAME, Manifest, load_bundle
from edgekit.runtime.cost_protocol import resolve_stage_threads
from edgekit.runtime.policy import EXIT_RULES, exit_rule
from edgekit.runtime.runner import EarlyExitRunner, exit_outputs


@dataclass(frozen=True)
class CalibrateOptions:
    bundle_dir: str
    data_path: str
    max_drop: float = 0.01
    holdout_path: Optional[str] = None
    rule: Optional[str] = None          # None: keep each exit's rule
    objective: str = "auto"
    margin_z: float = DEFAULT_Z         # standard errors of safety margin on the accuracy constraint
    threads: Optional[int] = None       # fit on the costs measured at this thread count (None: the chosen ones)
    part: str = ALL                     # fit on all of data_path, or its held-out part (convert's default split)


def check_options(opts: CalibrateOptions, data: Optional[Dataset] = None) -> Dataset:
    """Everything that can be checked before any stage runs; returns the fit data (loaded unless given)."""
    check_drop(opts.max_drop)
    if not 0.0 <= opts.margin_z <= 10.0:
        raise ConfigError("margin z must be within [0, 10] standard errors, got {!r}".format(opts.margin_z))
    if opts.threads is not None:
        resolve_stage_threads({}, 1, opts.threads)
    if opts.part not in PARTS:
        raise ConfigError("data part {!r}; allowed: {}".format(opts.part, ", ".join(PARTS)))
    if opts.rule is not None and opts.rule not in EXIT_RULES:
        raise ConfigError("unknown exit rule {!r}; allowed: {}".format(opts.rule, ", ".join(EXIT_RULES)))
    ds = data if data is not None else load_data(opts.data_path)
    correctness(np.zeros((1, 1), np.int64), ds.y if ds.y is None else ds.y[:1], opts.objective)
    return ds


def _rules(manifest: Manifest, rule: Optional[str]) -> List[str]:
    rules = [s.exit.rule for s in manifest.stages] if rule is None else [rule] * len(manifest.stages)
    for s, r in zip(manifest.stages, rules):
        if r == "learned" and s.exit.score is None:
            raise ConfigError("exit {!r} has no learned score output; allowed rules for it: {}".format(
                s.exit.name, ", ".join(n for n in EXIT_RULES if n != "learned")))
        if r != "learned" and s.exit.score is not None:
            raise ConfigError("exit {!r} carries a learned score; its rule must be 'learned'".format(s.exit.name))
    return rules


def fitted_on(bundle_dir: str, data: Optional[str], held_out: bool) -> Tuple[str, str]:
    """(data path, part) to fit on: as given, else what the bundle's thresholds were last fitted on."""
    if data is not None:
        return data, HELD_OUT if held_out else ALL
    last = _report(bundle_dir).get("thresholds") or {}
    if not isinstance(last.get("data"), str) or last.get("part", ALL) not in PARTS:
        raise ConfigError("bundle {} records no data its thresholds were fitted on; give --data".format(bundle_dir))
    return last["data"], HELD_OUT if held_out else last.get("part", ALL)


def stage_costs(manifest: Manifest, threads: Optional[int]) -> Tuple[List[float], str]:
    """The per-stage costs thresholds are fitted on, and where they were measured: the bundle's measured costs
    (at `threads` when given: `edgekit profile` must have measured that count), else each stage's FLOPs."""
    record = manifest.extra.get("costs") or {}
    where = "measured on the {}".format(record.get("measured_on", "converting-machine"))
    if threads is not None:
        try:
            return [float(st["by_threads"][str(threads)]["median_ms"]) for st in record["stages"]], \
                "{}, {} thread(s)".format(where, threads)
        except (KeyError, TypeError):
            raise ConfigError("the bundle has no stage costs measured at {} thread(s); measure them first: edgekit "
                              "profile BUNDLE --threads {}".format(threads, threads))
    if all(s.latency_ms for s in manifest.stages):
        return [float(s.latency_ms) for s in manifest.stages], where
    return [max(s.flops, 1) / 1e6 for s in manifest.stages], "FLOPs (no measured costs in the bundle)"


def _scores(runner: EarlyExitRunner, ds: Dataset, rules: List[str], objective: str):
    outs = exit_outputs(runner, ds.x)
    scores = np.stack([exit_rule(r)(raw) for r, (_, raw) in zip(rules, outs)])
    preds = np.stack([np.argmax(o.reshape(len(o), -1), axis=-1) for o, _ in outs])
    return scores, correctness(preds, ds.y, objective)


def fit_bundle(opts: CalibrateOptions, data: Optional[Dataset] = None) -> Dict[str, Any]:
    """Fit on opts.data_path (`data`: already loaded from it) and rewrite opts.bundle_dir's manifest and report in
    place (not atomic: callers work on a copy). Returns the report section."""
    ds = check_options(opts, data)
    hold = load_data(opts.holdout_path) if opts.holdout_path is not None else None
    manifest = load_bundle(opts.bundle_dir)
    check_stages(manifest, opts.bundle_dir)
    runner = EarlyExitRunner(opts.bundle_dir, num_threads=opts.threads)
    fitted, section = fit_stages(opts, manifest, runner, ds, _report(opts.bundle_dir).get("data"), hold)
    _write(opts.bundle_dir, fitted, section)
    return section


def check_stages(manifest: Manifest, where: str) -> None:
    if len(manifest.stages) < 2:
        raise ConfigError("bundle {} has a single stage and no early exit to calibrate".format(where))


def fit_stages(opts: CalibrateOptions, manifest: Manifest, runner: EarlyExitRunner, full: Dataset,
               record: Optional[Dict[str, Any]], holdout: Optional[Dataset]) -> Tuple[Manifest, Dict[str, Any]]:
    """Fit on `opts.part` of `full` (loaded from opts.data_path) with the runner over the manifest's stages.
    record: the report's data record (what the model was trained on, for overlap warnings). Returns the manifest
    with the fitted rules and thresholds, and the report section."""
    rules = _rules(manifest, opts.rule)
    costs, costs_from = stage_costs(manifest, opts.threads)
    ds, fp, warnings = fit_data(full, opts.data_path, opts.part, record)
    objective = opts.objective if opts.objective != "auto" else ("accuracy" if ds.y is not None else "agreement")
    scores, right = _scores(runner, ds, rules, objective)
    fit = fit_thresholds(scores, right, costs, opts.max_drop, opts.margin_z)
    section = {"data": opts.data_path, "part": opts.part, "fingerprint": fp, "warnings": warnings,
               "samples": len(ds), "objective": objective, "max_accuracy_drop": opts.max_drop,
               "margin_z": opts.margin_z,
               "rules": rules, "stage_costs_ms": costs, "stage_costs_from": costs_from, "fit": fit.to_dict()}
    if holdout is not None:
        section["holdout"] = _holdout(runner, holdout, opts.holdout_path, rules, objective, fit, costs)
    stages = tuple(replace(s, exit=replace(s.exit, rule=r, threshold=t))
                   for s, r, t in zip(manifest.stages, rules, list(fit.chosen.thresholds) + [0.0]))
    extra = dict(manifest.extra, thresholds={"fitted": True, "bounds": [list(b) for b in fit.bounds],
                                             "expected_accuracy": fit.chosen.accuracy,
                                             "expected_cost_ms": fit.chosen.cost_ms,
                                             "expected_exit_fractions": list(fit.chosen.exit_fractions)})
    return replace(manifest, stages=stages, extra=extra), section


def _holdout(runner: EarlyExitRunner, hold: Dataset, path: Optional[str], rules: List[str], objective: str, fit,
             costs: List[float]) -> Dict[str, Any]:
    """The accuracy the fitted thresholds reach on a second split, and at full depth."""
    h_obj = objective if hold.y is not None else "agreement"
    h_scores, h_right = _scores(runner, hold, rules, h_obj)
    return {"data": path, "samples": len(hold), "objective": h_obj,
            "reached": apply_thresholds(fit.chosen.thresholds, h_scores, h_right, costs).__dict__,
            "full_depth": apply_thresholds([1e9] * (len(costs) - 1), h_scores, h_right, costs).__dict__}


def _report(bundle_dir: str) -> Dict[str, Any]:
    report_path = os.path.join(bundle_dir, REPORT_NAME)
    if not os.path.isfile(report_path):
        return {}
    try:
        with open(report_path, "r", encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        raise BundleError("{} cannot be read: {}".format(report_path, exc))
    return report if isinstance(report, dict) else {}


def _write(bundle_dir: str, manifest: Manifest, section: Dict[str, Any]) -> None:
    report_path = os.path.join(bundle_dir, REPORT_NAME)
    report = _report(bundle_dir)
    report["thresholds"] = section
    with open(os.path.join(bundle_dir, MANIFEST_NAME), "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def calibrate(opts: CalibrateOptions) -> Dict[str, Any]:
    """Fit on a copy of the bundle, then swap the copy in; on any failure the bundle is as it was."""
    ds = check_options(opts)
    if opts.holdout_path is not None:
        load_data(opts.holdout_path)
    load_bundle(opts.bundle_dir)
    return swap_in_edited_copy(opts.bundle_dir, lambda work: fit_bundle(replace(opts, bundle_dir=work), ds),
                               ".calibrate-")
