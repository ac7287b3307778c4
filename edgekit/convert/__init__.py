"""convert(...): the one place that knows the order of the pipeline stages.

front end, one per format, each yielding the same stages (stages.py), checked against the original model:
  Keras (keras_front.py): load -> prune (prune.py) -> exits (attach and train heads, exits.py) -> split (split.py)
  ONNX (onnx_front.py): split at the ONNX level (onnx_split.py) -> onnx2tf per stage (onnx.py)
-> precision (adaptive: a rung per op and stage, precision/) -> quantize each stage (quantize.py) -> integer
boundaries (boundaries.py) -> measure (evaluate.py) -> manifest (bundle.build_manifest) -> thresholds fitted in
memory on the quantized stages when an accuracy drop is asked for (threshold_fit.py) -> bundle, written once.
Needs TensorFlow; nothing here is imported by the runtime.
"""
from edgekit.convert.tf import tensorflow  # noqa: F401  # isort:skip - first: TensorFlow is imported quietly, once

import json
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgekit.convert.boundaries import integer_boundaries
from edgekit.convert.bundle import build_manifest, check_writable, write_bundle
from edgekit.convert.evaluate import exit_accuracies, full_depth_outputs, max_abs_error, stage_costs
from edgekit.convert.exits import ExitOptions, attach_exits
from edgekit.convert.keras_front import keras_front, load_keras
from edgekit.convert.pack import Stored, store
from edgekit.convert.precision import ADAPTIVE, check_convert_options, options_from
from edgekit.convert.precision.choose import choose_precision
from edgekit.fit.provenance import ALL, HELD_OUT, data_record, training_part
from edgekit.convert.prune import PruneOptions, prune
from edgekit.convert.quantize import check_precision, host_timing, uniform_stage
from edgekit.convert.stages import Front
from edgekit.fit.threshold_fit import CalibrateOptions, check_options as check_fit_options, fit_stages
from edgekit.data import Dataset, load_data
from edgekit.errors import ConfigError
from edgekit.manifest import Manifest
from edgekit.runtime.policy import EXIT_RULES
from edgekit.runtime.runner import EarlyExitRunner
from edgekit.targets import get_target

warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")


@dataclass(frozen=True)
class ConvertOptions:
    model_path: str
    target: str
    calib_path: str
    out_dir: str
    precision: Optional[str] = None        # None: the target's preferred precision
    threshold: float = 0.9
    force: bool = False
    input_shape: Optional[Tuple[int, ...]] = None  # ONNX: input sizes after the batch, model's layout
    onnx_exits: Tuple[str, ...] = ()       # ONNX: exit tensor names in depth order (default: the graph outputs)
    max_drop: Optional[float] = None       # fit thresholds to this accuracy drop (None: use `threshold`)
    threshold_data: Optional[str] = None   # labelled data for the fit (default: the calibration data)
    holdout: Optional[str] = None          # a second split that reports the accuracy actually reached
    exit_rule: Optional[str] = None        # None: max_softmax
    tolerance: Optional[float] = None      # precision "adaptive": KL nats per layer at the exits
    size_budget: Optional[int] = None      # adaptive: bundle bytes
    latency_budget_ms: Optional[float] = None  # adaptive: full-depth batch-1 ms on the converting machine
    rungs: Optional[tuple] = None          # adaptive: restrict the ladder (names from edgekit.rungs.LADDER)
    objective: Optional[str] = None        # adaptive: latency (default), size or accuracy (precision.objective)
    exits: Optional[ExitOptions] = None    # attach and train exit heads on a single-output model
    prune: Optional[PruneOptions] = None   # structured channel pruning before attached exits and split


@dataclass(frozen=True)
class ConvertResult:
    bundle_dir: str
    manifest: Manifest
    report: Dict[str, Any]


@dataclass(frozen=True)
class _FitData:
    data: Dataset                          # what thresholds are fitted on (its part: CalibrateOptions.part)
    holdout: Optional[Dataset]             # the split that reports the accuracy reached


Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, label: str) -> None:
    return None


def convert(opts: ConvertOptions, progress: Optional[Progress] = None) -> ConvertResult:
    step = progress or _no_progress
    target, precision, fit = _check_options(opts)
    calib = fit.data if fit is not None and opts.threshold_data is None else load_data(opts.calib_path)
    if opts.model_path.lower().endswith(".onnx"):
        from edgekit.convert.onnx_front import onnx_front  # lazy: onnx, onnxruntime, onnx2tf are the [onnx] extra

        with onnx_front(opts, target, precision, calib, step) as front:
            return _convert_stages(opts, target, front, calib, fit, [], step)
    if opts.input_shape or opts.onnx_exits:
        raise ConfigError("--input-shape and exit tensor names apply to .onnx models; got {}".format(opts.model_path))
    step(0, 0, "load: {}".format(opts.model_path))
    model = load_keras(opts.model_path, calib, opts.calib_path)
    model, sections, trained = _prune_and_exits(opts, model, target, precision, calib, step)
    front = keras_front(model, calib.x.astype(np.float32), precision, sections, step)
    return _convert_stages(opts, target, front, calib, fit, trained, step)


def _check_options(opts: ConvertOptions) -> Tuple[Any, str, Optional[_FitData]]:
    """Everything that can be checked before any work; the threshold data (and hold-out split) loaded once."""
    target = get_target(opts.target)
    check_convert_options(opts, target)
    precision = ADAPTIVE if opts.precision == ADAPTIVE else check_precision(opts.precision or target.default_precision)
    if precision not in target.precisions + (ADAPTIVE,):
        raise ConfigError("precision {!r} is not supported on {}; allowed there: {}".format(
            precision, target.name, ", ".join(target.precisions)))
    if not 0.0 <= opts.threshold <= 1.0:
        raise ConfigError("threshold {} is outside [0, 1]".format(opts.threshold))
    if opts.exit_rule is not None and opts.exit_rule not in EXIT_RULES:
        raise ConfigError("unknown exit rule {!r}; allowed: {}".format(opts.exit_rule, ", ".join(EXIT_RULES)))
    fit = None
    if opts.max_drop is not None:
        data = check_fit_options(_calibrate_options(opts))
        fit = _FitData(data, load_data(opts.holdout) if opts.holdout is not None else None)
    check_writable(opts.out_dir, target.name, opts.force)
    return target, precision, fit


def _prune_and_exits(opts: ConvertOptions, model, target, precision: str, calib: Dataset, step: Progress):
    """The Keras model after channels were pruned and exits attached (both before split), their report sections,
    and what edgekit trained on (role, data, path). Pruning comes first: the heads are then trained on the features
    of the backbone that ships, and recovery distils one output. Pruned after them, the heads' features moved under
    them: on the plain digits CNN at 50% of the FLOPs with 5 recovery epochs, the recovered final exit fell to 75%
    on calibration data while its first exit's head stayed at 99.6%."""
    train_part = training_part(calib, _splitting(opts))  # never the part thresholds are fitted on
    trained: List[Tuple[str, Dataset, str]] = []
    sections: Dict[str, Any] = {}
    if opts.prune is not None:                         # channels physically removed, recovered by distillation
        pruned = prune(model, opts.prune.resolved(target, precision), train_part, progress=_phase(step, "prune"))
        model, sections["prune"] = pruned.model, pruned.report
        if opts.prune.recover_epochs:
            trained.append(("pruning recovery", train_part, opts.calib_path))
    if opts.exits is not None:                         # heads trained, backbone frozen
        positions = None
        if opts.exits.place == "latency":                # cut points where the time is, measured here
            from edgekit.convert.exit_latency import latency_positions

            positions = latency_positions(model, train_part.x, precision, target)
            step(0, 0, "exit heads: placing {} exits by measured prefix latency".format(opts.exits.auto))
        attached = attach_exits(model, opts.exits, train_part, progress=_phase(step, "exit heads"),
                                positions=positions)
        model, sections["exits"] = attached.model, attached.report
        trained.append(("exit heads", load_data(opts.exits.data_path) if opts.exits.data_path else train_part,
                        opts.exits.data_path or opts.calib_path))
    return model, sections, trained


def _convert_stages(opts: ConvertOptions, target, front: Front, calib: Dataset, fit: Optional[_FitData],
                    trained: List[Tuple[str, Dataset, str]], step: Progress) -> ConvertResult:
    """The stages a front end yielded -> quantized, measured, described, thresholds fitted, bundle written."""
    plan = choose_precision(front.stages, target, front.x, calib.y, options_from(opts), front.input.name,
                            lambda what: step(0, 0, "precision: " + what)) if front.precision == ADAPTIVE else None
    blobs, float_ops = _quantize(front, plan, target, step)
    blobs, quant = integer_boundaries(blobs, [st.input_names for st in front.stages],
                                      [st.carried_names for st in front.stages])
    step(0, 0, "measure: accuracy and stage costs here")
    lite_out = full_depth_outputs(blobs, front.stages, front.x, front.input.name, host_timing(target)[1])
    costs = stage_costs(blobs, front.stages, front.x, front.input.name, target.default_threads)
    precisions = plan.precisions if plan is not None else (front.precision,) * len(front.stages)
    # adaptive plans store 4-bit convolution filters nibble-packed (the runtime restores the int8 model)
    stored = [store(b) if plan is not None else Stored(b, None) for b in blobs]
    manifest = build_manifest(front, stored, quant, costs, lite_out, target, precisions, opts.threshold,
                              opts.exit_rule)
    report = _report(opts, target, front, manifest, calib, lite_out)
    report["data"] = data_record(calib, opts.calib_path, opts.model_path, trained)
    if float_ops:
        report["int8_float_ops"] = dict(float_ops, measured_on="the converting machine, batch 1, interleaved")
    report.update(front.report)
    files = {s.file: f.data for s, f in zip(manifest.stages, stored)}
    if plan is not None:
        report["precision_plan"] = plan.report
        report["notes"] = report.get("notes", []) + plan.report.get("notes", [])   # printed by the CLI
        if plan.plot_png:
            files["precision.png"] = plan.plot_png
    if fit is not None:
        step(0, 0, "thresholds: fitting for at most {:g} accuracy lost".format(opts.max_drop))
        manifest, report["thresholds"] = fit_stages(_calibrate_options(opts), manifest,
                                                    EarlyExitRunner.in_memory(manifest, blobs), fit.data,
                                                    report["data"], fit.holdout)
    bundle_dir = write_bundle(opts.out_dir, manifest, files, report, opts.force)
    step(1, 1, "write: bundle written")
    # the result as a reader of the bundle sees it (JSON types), without reading it back
    return ConvertResult(bundle_dir=bundle_dir, manifest=Manifest.from_json(manifest.to_json()),
                         report=json.loads(json.dumps(report)))


def _quantize(front: Front, plan, target, step: Progress) -> Tuple[List[bytes], Dict[str, Any]]:
    """Every stage's .tflite (the adaptive plan's, or one uniform precision), and what int8 kept float32."""
    blobs: List[bytes] = []
    float_ops: Dict[str, Any] = {}
    for st, feed in zip(front.stages, front.feeds):
        if plan is not None:
            blobs.append(plan.blobs[st.index])
        else:
            blob, kept = uniform_stage(st.model, front.precision, feed, target)
            blobs.append(blob)
            if kept is not None:
                float_ops[str(st.index)] = kept
        step(len(blobs), len(front.stages), "quantize: stage {} -> {}".format(st.index, front.precision))
    return blobs, float_ops


def _phase(step: Progress, name: str) -> Progress:
    """A library step's progress reported as one phase of convert ("phase: detail")."""
    return lambda done, total, what: step(done, total, "{}: {}".format(name, what))


def _calibrate_options(opts: ConvertOptions) -> CalibrateOptions:
    return CalibrateOptions(bundle_dir=opts.out_dir, data_path=opts.threshold_data or opts.calib_path,
                            max_drop=opts.max_drop if opts.max_drop is not None else 0.0,
                            holdout_path=opts.holdout, rule=opts.exit_rule, part=HELD_OUT if _splitting(opts) else ALL)


def _splitting(opts: ConvertOptions) -> bool:
    """Thresholds fitted without --threshold-data use a held-out part of the calibration data."""
    return opts.max_drop is not None and opts.threshold_data is None


def _report(opts: ConvertOptions, target, front: Front, manifest: Manifest, calib: Dataset,
            lite_out: List[np.ndarray]) -> Dict[str, Any]:
    lite_err = max_abs_error(lite_out, front.float_outputs)
    lite_acc, float_acc = exit_accuracies(lite_out, calib.y), exit_accuracies(front.float_outputs, calib.y)
    return {
        "model": opts.model_path, "model_name": manifest.model_name, "target": target.name,
        "precision": front.precision, "bundle_id": manifest.bundle_id,
        "calibration": {"path": opts.calib_path, "samples": len(calib), "labelled": calib.y is not None,
                        "input_range": [float(np.min(calib.x)), float(np.max(calib.x))]},
        "bundle_size_bytes": sum(s.size_bytes for s in manifest.stages),
        "latency_measured_on": "{} ({}), batch 1, threads per stage {}".format(
            manifest.extra["costs"]["measured_on"], manifest.extra["costs"]["machine"]["cpu_model"],
            manifest.extra["runtime"]["stage_threads"]),
        "stages": [{"index": s.index, "exit": s.exit.name, "flops": s.flops, "size_bytes": s.size_bytes,
                    "latency_ms": s.latency_ms, "split_max_abs_error": front.split_error[i],
                    "tflite_max_abs_error_vs_float": lite_err[i], "calib_accuracy_tflite": lite_acc[i],
                    "calib_accuracy_float": float_acc[i]} for i, s in enumerate(manifest.stages)],
    }
