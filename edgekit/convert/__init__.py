"""convert(...): the one place that knows the order of the pipeline stages.

load -> split (verified against the original) -> quantize each stage -> measure -> bundle.
Needs TensorFlow; nothing here is imported by the runtime.
"""
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import edgekit
from edgekit.data import check_input_shape, load_data
from edgekit.errors import ConfigError, ModelError
from edgekit.convert.exits import ExitOptions
from edgekit.convert.provenance import ALL, HELD_OUT, data_record, training_part
from edgekit.convert.prune import PruneOptions
from edgekit.runtime.policy import DEFAULT_RULE, EXIT_RULES
from edgekit.manifest import REPORT_NAME, ExitSpec, InputSpec, Manifest, StageSpec, TensorSpec, load_bundle

warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")

PARITY_TOL = 1e-4
PARITY_SAMPLES = 32


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
    rungs: Optional[tuple] = None          # adaptive: restrict the ladder (names from precision.ladder.LADDER)
    objective: Optional[str] = None        # adaptive: latency (default), size or accuracy (precision.objective)
    exits: Optional[ExitOptions] = None    # attach and train exit heads on a single-output model (issue 4)
    prune: Optional[PruneOptions] = None   # structured channel pruning after exits, before split (issue 5)


@dataclass(frozen=True)
class ConvertResult:
    bundle_dir: str
    manifest: Manifest
    report: Dict[str, Any]


Progress = Callable[[int, int, str], None]


def _spec(t, name: str, quant: Optional[Dict[str, Any]] = None) -> TensorSpec:
    return _typed(TensorSpec(name=name, shape=(None,) + tuple(int(d) for d in t.shape[1:])), quant)


def _typed(spec: TensorSpec, quant: Optional[Dict[str, Any]]) -> TensorSpec:
    """The spec of a carried tensor that crosses its boundary as an integer (convert/boundaries.py)."""
    q = (quant or {}).get(spec.name)
    return spec if q is None else TensorSpec(spec.name, spec.shape, q.dtype, (q.scale, q.zero_point))


def _integer_boundaries(blobs: List[bytes], stages) -> Tuple[List[bytes], List[Dict[str, Any]]]:
    from edgekit.convert.boundaries import integer_boundaries

    return integer_boundaries(blobs, [st.input_names for st in stages], [st.carried_names for st in stages])


def check_options(opts: ConvertOptions):
    """Every check that needs neither TensorFlow nor the model: target, precision, options, output; returns
    (target, precision)."""
    from edgekit.convert.bundle import check_writable
    from edgekit.convert.quantize import check_precision
    from edgekit.targets import get_target

    target = get_target(opts.target)
    from edgekit.convert.precision import ADAPTIVE, check_convert_options

    check_convert_options(opts, target)
    precision = ADAPTIVE if opts.precision == ADAPTIVE else check_precision(opts.precision or target.default_precision)
    if precision not in target.precisions + (ADAPTIVE,):
        raise ConfigError("precision {!r} is not supported on {}; allowed there: {}".format(
            precision, target.name, ", ".join(target.precisions)))
    if not 0.0 <= opts.threshold <= 1.0:
        raise ConfigError("threshold {} is outside [0, 1]".format(opts.threshold))
    if opts.exit_rule is not None and opts.exit_rule not in EXIT_RULES:
        raise ConfigError("unknown exit rule {!r}; allowed: {}".format(opts.exit_rule, ", ".join(EXIT_RULES)))
    if opts.max_drop is not None:
        from edgekit.convert.calibrate import check_options as check_fit

        check_fit(_calibrate_options(opts, opts.out_dir))
    check_writable(opts.out_dir, target.name, opts.force)
    return target, precision


def convert(opts: ConvertOptions, progress: Optional[Progress] = None) -> ConvertResult:
    from edgekit.convert import measure
    from edgekit.convert.flops import model_flops
    from edgekit.convert.load import load_model
    from edgekit.convert.split import run_stages_keras, split_model, stage_inputs

    from edgekit.convert.tf import tensorflow

    step = progress or (lambda done, total, label: None)
    target, precision = check_options(opts)           # before TensorFlow: a typo is refused at once
    calib = load_data(opts.calib_path)
    step(0, 0, "load: TensorFlow and {}".format(os.path.basename(opts.model_path)))
    tensorflow()
    if opts.model_path.lower().endswith(".onnx"):
        return _convert_onnx(opts, target, precision, calib, step)
    if opts.input_shape or opts.onnx_exits:
        raise ConfigError("--input-shape and exit tensor names apply to .onnx models; got {}".format(opts.model_path))
    model = load_model(opts.model_path)
    input_name = model.inputs[0].name
    check_input_shape(calib.x, (None,) + tuple(model.inputs[0].shape[1:]), "calibration data " + opts.calib_path)
    x = calib.x.astype(np.float32)
    train_part = training_part(calib, _splitting(opts))  # never the part thresholds are fitted on
    trained = []
    attached = None
    if opts.exits is not None:                         # after load, before split: heads trained, backbone frozen
        from edgekit.convert.exits import attach_exits

        attached = attach_exits(model, opts.exits, train_part, progress=_phase(step, "exit heads"))
        model = attached.model
        trained.append(("exit heads", load_data(opts.exits.data_path) if opts.exits.data_path else train_part,
                        opts.exits.data_path or opts.calib_path))
    pruned = None
    if opts.prune is not None:                         # after exits, before split: channels physically removed
        from edgekit.convert.prune import prune

        pruned = prune(model, opts.prune.resolved(target, precision), train_part, progress=_phase(step, "prune"))
        model = pruned.model
        if opts.prune.recover_epochs:
            trained.append(("pruning recovery", train_part, opts.calib_path))

    stages = split_model(model)
    step(1, 1, "split: {} stages".format(len(stages)))
    reference = _exit_outputs(model, stages, x[:PARITY_SAMPLES])
    split_err = measure.max_abs_error(run_stages_keras(stages, x[:PARITY_SAMPLES], input_name), reference)
    if max(split_err) > PARITY_TOL:
        raise ModelError("chained stages differ from the model by {:.3g} (> {}); the exits may not be in depth "
                         "order".format(max(split_err), PARITY_TOL))

    feeds = stage_inputs(stages, x[:200], input_name)
    plan = _precision_plan(opts, stages, target, x, calib.y, input_name, step) if precision == "adaptive" else None
    blobs: List[bytes] = []
    float_ops: Dict[str, Any] = {}
    for st, feed in zip(stages, feeds):
        blobs.append(plan.blobs[st.index] if plan else _quantize(st.model, precision, feed, target, st.index,
                                                                 float_ops))
        step(len(blobs), len(stages), "quantize: stage {} -> {}".format(st.index, precision))
    blobs, quant = _integer_boundaries(blobs, stages)
    step(0, 0, "measure: accuracy and stage costs here")
    threads = target.default_threads if target.arch == "x86_64" else 1
    float_out = _exit_outputs(model, stages, x)
    lite_out = measure.full_depth_outputs(blobs, stages, x, input_name, threads)
    costs = measure.stage_costs(blobs, stages, x, input_name, target.default_threads)
    latency = [c["latency_ms"] for c in costs["stages"]]
    specs = []
    for st, blob, ms, out, q in zip(stages, blobs, latency, lite_out, quant):
        outputs = {t.name: t for t in [_spec(v, k, q) for k, v in st.model.output.items()]}
        specs.append(StageSpec(
            index=st.index, file="stage_{}.tflite".format(st.index), sha256=hashlib.sha256(blob).hexdigest(),
            precision=plan.precisions[st.index] if plan else precision,
            inputs=tuple(_spec(t, t.name, q) for t in st.model.inputs),
            outputs=tuple(outputs[n] for n in st.carried_names + (st.exit_name,) + ((st.score_name,) if st.score_name
                                                                                      else ())),
            exit=ExitSpec(name=st.exit_name, threshold=opts.threshold if st.index < len(stages) - 1 else 0.0,
                          classes=int(out.shape[-1]), rule=_rule(opts, st),
                          score=st.score_name),
            flops=model_flops(st.model), size_bytes=len(blob), latency_ms=ms))
    manifest = Manifest(
        model_name=model.name, target=target.name, edgekit_version=edgekit.__version__,
        input=InputSpec(name=input_name, shape=(None,) + tuple(int(d) for d in model.inputs[0].shape[1:]),
                        dtype="float32", preprocessing={"layout": "NHWC"}),
        stages=tuple(specs),
        extra=_board_extra(target, costs))
    report = _report(opts, target, precision, manifest, calib, split_err,
                     measure.max_abs_error(lite_out, float_out), measure.exit_accuracies(lite_out, calib.y),
                     measure.exit_accuracies(float_out, calib.y))
    files = {s.file: b for s, b in zip(specs, blobs)}
    report["data"] = data_record(calib, opts.calib_path, opts.model_path, trained)
    if float_ops:
        report["int8_float_ops"] = dict(float_ops, measured_on="the converting machine, batch 1, interleaved")
    if attached is not None:
        report["exits"] = attached.report
    if pruned is not None:
        report["prune"] = pruned.report
    if plan is not None:
        report["precision_plan"] = plan.report
        report["notes"] = report.get("notes", []) + plan.report.get("notes", [])   # printed by the CLI
        if plan.plot_png:
            files["precision.png"] = plan.plot_png
    result = _write(opts, manifest, files, report, step)
    step(1, 1, "write: bundle written")
    return result


def _phase(step: Progress, name: str) -> Progress:
    """A library step's progress reported as one phase of convert."""
    return lambda done, total, what: step(done, total, "{}: {}".format(name, what))


def _quantize(source, precision: str, feed: Dict[str, np.ndarray], target, index: int,
              float_ops: Dict[str, Any]) -> bytes:
    """One stage (a keras.Model, or a SavedModel path on the ONNX path) at a uniform precision. int8 keeps some
    ops float32 when that measures faster here, on the target's interpreter package when it is installed
    (quantize.int8_stage); what it kept, and with which interpreter, is added to float_ops."""
    from edgekit.convert import measure
    from edgekit.convert.quantize import int8_stage, quantize_saved_model, quantize_stage
    from edgekit.runtime.interpreter import available_backends

    if precision != "int8":
        return quantize_saved_model(source, precision, feed) if isinstance(source, str) else \
            quantize_stage(source, precision, feed)
    wanted = target.runtime_package.replace("-", "_")
    backend = wanted if wanted in available_backends() else None
    threads = target.default_threads if target.arch == "x86_64" else 1
    built = int8_stage(source, feed, lambda blobs: measure.interleaved_ms(blobs, feed, threads, backend=backend),
                       backend)
    if built.measured_ms:
        float_ops[str(index)] = {"float32_ops": list(built.float_ops), "median_ms": built.measured_ms,
                                 "interpreter": backend or "default"}
    return built.blob


def _precision_plan(opts: ConvertOptions, stages, target, x: np.ndarray, y, input_name: str, step: Progress):
    from edgekit.convert.precision import choose_precision, options_from

    return choose_precision(stages, target, x, y, options_from(opts), input_name,
                            lambda what: step(0, 0, "precision: " + what))


def _rule(opts: ConvertOptions, st) -> str:
    """A stage with a learned score output uses it; others the asked rule (default max_softmax)."""
    if st.score_name:
        return "learned"
    if opts.exit_rule == "learned":
        raise ModelError("--exit-rule learned needs a score output per exit (a model output named {}_score); "
                         "allowed here: {}".format(st.exit_name, ", ".join(r for r in EXIT_RULES if r != "learned")))
    return opts.exit_rule or DEFAULT_RULE


def _exit_outputs(model, stages, x: np.ndarray) -> List[np.ndarray]:
    """The original model's exit outputs on x, in stage order (score outputs left out)."""
    from edgekit.convert.split import _sanitize

    outs = model([x], training=False)
    by_name = {_sanitize(n): np.asarray(o) for n, o in zip(model.output_names, outs)}
    return [by_name[st.exit_name] for st in stages]


def _board_extra(target, costs: Dict[str, Any]) -> Dict[str, Any]:
    """What the board needs from its profile, carried in the manifest: threads (per stage as measured, the
    profile's count as their upper bound) and delegates for the runtime, the measured stage costs the threads
    were chosen from, the energy meter and power model for `python -m edgekit.bench` (the board has no targets/)."""
    from edgekit.bench.energy import manifest_energy

    return {"runtime": {"num_threads": target.default_threads,
                        "stage_threads": [s["threads"] for s in costs["stages"]],
                        "delegates": [{"name": d.name, "library": d.library, "options": dict(d.options)}
                                      for d in target.delegates]},
            "costs": costs, "energy": manifest_energy(target)}


def _write(opts: ConvertOptions, manifest: Manifest, files: Dict[str, bytes], report: Dict[str, Any],
           step: Progress) -> ConvertResult:
    """Write the bundle (fitting thresholds into it first when asked) and return what was written."""
    from edgekit.convert.bundle import write_bundle

    bundle_dir = write_bundle(opts.out_dir, manifest, files, report, opts.force, finalize=_fit(opts, step))
    if opts.max_drop is not None:                      # thresholds were fitted into the written bundle
        manifest = load_bundle(bundle_dir)
        with open(os.path.join(bundle_dir, REPORT_NAME), "r", encoding="utf-8") as f:
            report = json.load(f)
    return ConvertResult(bundle_dir=bundle_dir, manifest=manifest, report=report)


def _calibrate_options(opts: ConvertOptions, bundle_dir: str):
    from edgekit.convert.calibrate import CalibrateOptions

    return CalibrateOptions(bundle_dir=bundle_dir, data_path=opts.threshold_data or opts.calib_path,
                            max_drop=opts.max_drop if opts.max_drop is not None else 0.0,
                            holdout_path=opts.holdout, rule=opts.exit_rule, part=HELD_OUT if _splitting(opts) else ALL)


def _splitting(opts: ConvertOptions) -> bool:
    """Thresholds fitted without --threshold-data use a held-out part of the calibration data."""
    return opts.max_drop is not None and opts.threshold_data is None


def _fit(opts: ConvertOptions, step: Progress) -> Optional[Callable[[str], None]]:
    """Threshold fitting on the written (not yet swapped-in) bundle, when an accuracy drop is asked for."""
    if opts.max_drop is None:
        return None
    from edgekit.convert.calibrate import fit_bundle

    def finalize(tmp_dir: str) -> None:
        step(0, 0, "thresholds: fitting for at most {:g} accuracy lost".format(opts.max_drop))
        fit_bundle(_calibrate_options(opts, tmp_dir))

    return finalize


def _report(opts: ConvertOptions, target, precision: str, manifest: Manifest, calib, split_err: List[float],
            lite_err: List[float], lite_acc: List[Optional[float]], float_acc: List[Optional[float]]) -> Dict:
    return {
        "model": opts.model_path, "model_name": manifest.model_name, "target": target.name,
        "precision": precision, "bundle_id": manifest.bundle_id,
        "calibration": {"path": opts.calib_path, "samples": len(calib), "labelled": calib.y is not None,
                        "input_range": [float(np.min(calib.x)), float(np.max(calib.x))]},
        "bundle_size_bytes": sum(s.size_bytes for s in manifest.stages),
        "latency_measured_on": "{} ({}), batch 1, threads per stage {}".format(
            manifest.extra["costs"]["measured_on"], manifest.extra["costs"]["machine"]["cpu_model"],
            manifest.extra["runtime"]["stage_threads"]),
        "stages": [{"index": s.index, "exit": s.exit.name, "flops": s.flops, "size_bytes": s.size_bytes,
                    "latency_ms": s.latency_ms, "split_max_abs_error": split_err[i],
                    "tflite_max_abs_error_vs_float": lite_err[i], "calib_accuracy_tflite": lite_acc[i],
                    "calib_accuracy_float": float_acc[i]} for i, s in enumerate(manifest.stages)],
    }


def _onnx_exits_and_notes(opts: ConvertOptions, target, precision: str):
    """ONNX models do not load as Keras models (onnx2tf builds TensorFlow graphs): what needs one is said, not done."""
    exits = getattr(opts, "exits", None)              # issue 4's ExitOptions: layer names = exit tensor names here
    if exits is not None and getattr(exits, "auto", 0):
        raise ModelError("--exits auto:N attaches and trains exit heads, which needs a Keras model; {} is ONNX and "
                         "does not load as one: name the exit tensors (--exits a,b,c)".format(opts.model_path))
    names = tuple(opts.onnx_exits) or tuple(getattr(exits, "layers", ()) or ())
    prune = sorted(k for k, v in vars(opts).items() if k.startswith("prune") and v)
    notes = ["pruning ({}) needs a Keras model; {} is ONNX and does not load as one: not pruned".format(
        ", ".join(prune), opts.model_path)] if prune else []
    if precision == "adaptive":
        precision = target.default_precision
        notes.append("adaptive precision needs a Keras model; {} is ONNX and does not load as one: every stage is "
                     "{} (the target's default)".format(opts.model_path, precision))
    return names, precision, notes


def _convert_onnx(opts: ConvertOptions, target, precision: str, calib, step: Progress) -> ConvertResult:
    """ONNX (issue 7): split at the ONNX level, onnx2tf per stage (offline, in a child process), then the same
    quantize, measure, threshold and bundle steps as a Keras model. Interfaces are channels-last (NHWC)."""
    import tempfile

    from edgekit.convert import measure
    from edgekit.convert.onnx import onnx_report, onnx_to_saved_models
    from edgekit.convert.onnx_split import split_onnx
    from edgekit.convert.quantize import CALIBRATION_SAMPLES

    exit_names, precision, notes = _onnx_exits_and_notes(opts, target, precision)
    split = split_onnx(opts.model_path, exit_names, opts.input_shape)
    x = split.to_bundle(calib.x, "calibration data " + opts.calib_path)
    float_out = list(split.values(x, split.exit_names).values())          # onnxruntime on the whole model
    split_err = measure.max_abs_error(split.chained(x[:PARITY_SAMPLES]), [o[:PARITY_SAMPLES] for o in float_out])
    if max(split_err) > PARITY_TOL:
        raise ModelError("chained ONNX stages differ from the model by {:.3g} (> {})".format(max(split_err), PARITY_TOL))
    step(1, 1, "split: {} ONNX stages".format(len(split.stages)))
    feeds = split.values(x[:CALIBRATION_SAMPLES], sorted({n for s in split.stages for n in s.input_names}
                                                         - {split.input_name}))
    feeds[split.input_name] = x[:CALIBRATION_SAMPLES]
    blobs: List[bytes] = []
    float_ops: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as work:
        saved = onnx_to_saved_models(split, x, work)
        step(1, 1, "onnx2tf: {} SavedModels".format(len(saved)))
        for st in split.stages:
            feed = {n: feeds[n] for n in st.input_names}
            blobs.append(_quantize(saved[st.index].path, precision, feed, target, st.index, float_ops))
            step(len(blobs), len(split.stages), "quantize: stage {} -> {}".format(st.index, precision))
    blobs, quant = _integer_boundaries(blobs, split.stages)
    step(0, 0, "measure: accuracy and stage costs here")
    threads = target.default_threads if target.arch == "x86_64" else 1
    lite_out = measure.full_depth_outputs(blobs, split.stages, x, split.input_name, threads)
    costs = measure.stage_costs(blobs, split.stages, x, split.input_name, target.default_threads)
    latency = [c["latency_ms"] for c in costs["stages"]]
    specs = tuple(StageSpec(
        index=st.index, file="stage_{}.tflite".format(st.index), sha256=hashlib.sha256(blob).hexdigest(),
        precision=precision, inputs=tuple(_typed(TensorSpec(n, sm.inputs[n]), q) for n in st.input_names),
        outputs=tuple(_typed(TensorSpec(n, sm.outputs[n]), q) for n in st.carried_names + (st.exit_name,)),
        exit=ExitSpec(name=st.exit_name, threshold=opts.threshold if st.index < len(split.stages) - 1 else 0.0,
                      classes=int(out.shape[-1]), rule=_rule(opts, st)),
        flops=st.flops, size_bytes=len(blob), latency_ms=ms)
        for st, sm, blob, ms, out, q in zip(split.stages, saved, blobs, latency, lite_out, quant))
    manifest = Manifest(
        model_name=split.name, target=target.name, edgekit_version=edgekit.__version__,
        input=InputSpec(name=split.input_name, shape=split.bundle_shape, dtype="float32",
                        preprocessing=split.preprocessing()),
        stages=specs, extra=_board_extra(target, costs))
    report = _report(opts, target, precision, manifest, calib, split_err, measure.max_abs_error(lite_out, float_out),
                     measure.exit_accuracies(lite_out, calib.y), measure.exit_accuracies(float_out, calib.y))
    report.update(onnx=onnx_report(split, saved), notes=notes,
                  data=data_record(calib, opts.calib_path, opts.model_path, []))
    if float_ops:
        report["int8_float_ops"] = dict(float_ops, measured_on="the converting machine, batch 1, interleaved")
    result = _write(opts, manifest, {s.file: b for s, b in zip(specs, blobs)}, report, step)
    step(1, 1, "write: bundle written")
    return result
