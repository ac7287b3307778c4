"""convert(...): the one place that knows the order of the pipeline stages.

load -> split (verified against the original) -> quantize each stage -> measure -> bundle.
Needs TensorFlow; nothing here is imported by the runtime.
"""
import hashlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import edgekit
from edgekit.data import check_input_shape, load_data
from edgekit.errors import ConfigError, ModelError
from edgekit.manifest import ExitSpec, InputSpec, Manifest, StageSpec, TensorSpec

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


@dataclass(frozen=True)
class ConvertResult:
    bundle_dir: str
    manifest: Manifest
    report: Dict[str, Any]


Progress = Callable[[int, int, str], None]


def _spec(t, name: str) -> TensorSpec:
    return TensorSpec(name=name, shape=(None,) + tuple(int(d) for d in t.shape[1:]), dtype="float32")


def _check_options(opts: ConvertOptions):
    from edgekit.convert.bundle import check_writable
    from edgekit.convert.quantize import check_precision
    from edgekit.targets import get_target

    target = get_target(opts.target)
    precision = check_precision(opts.precision or target.default_precision)
    if precision not in target.precisions:
        raise ConfigError("precision {!r} is not supported on {}; allowed there: {}".format(
            precision, target.name, ", ".join(target.precisions)))
    if not 0.0 <= opts.threshold <= 1.0:
        raise ConfigError("threshold {} is outside [0, 1]".format(opts.threshold))
    check_writable(opts.out_dir, target.name, opts.force)
    return target, precision


def convert(opts: ConvertOptions, progress: Optional[Progress] = None) -> ConvertResult:
    from edgekit.convert import measure
    from edgekit.convert.bundle import write_bundle
    from edgekit.convert.flops import model_flops
    from edgekit.convert.load import load_model
    from edgekit.convert.quantize import quantize_stage
    from edgekit.convert.split import run_stages_keras, split_model, stage_inputs

    from edgekit.convert.tf import tensorflow

    tensorflow()
    step = progress or (lambda done, total, label: None)
    target, precision = _check_options(opts)
    calib = load_data(opts.calib_path)
    model = load_model(opts.model_path)
    input_name = model.inputs[0].name
    check_input_shape(calib.x, (None,) + tuple(model.inputs[0].shape[1:]), "calibration data " + opts.calib_path)
    x = calib.x.astype(np.float32)

    stages = split_model(model)
    total = len(stages) + 2
    step(1, total, "split into {} stages".format(len(stages)))
    reference = [np.asarray(o) for o in model([x[:PARITY_SAMPLES]], training=False)]
    split_err = measure.max_abs_error(run_stages_keras(stages, x[:PARITY_SAMPLES], input_name), reference)
    if max(split_err) > PARITY_TOL:
        raise ModelError("chained stages differ from the model by {:.3g} (> {}); the exits may not be in depth "
                         "order".format(max(split_err), PARITY_TOL))

    feeds = stage_inputs(stages, x[:200], input_name)
    blobs: List[bytes] = []
    for st, feed in zip(stages, feeds):
        blobs.append(quantize_stage(st.model, precision, feed))
        step(1 + len(blobs), total, "stage {} -> {}".format(st.index, precision))

    threads = target.default_threads if target.arch == "x86_64" else 1
    float_out = [np.asarray(o) for o in model([x], training=False)]
    lite_out = measure.full_depth_outputs(blobs, stages, x, input_name, threads)
    latency = measure.stage_latency_ms(blobs, stages, x, input_name, threads)
    specs = []
    for st, blob, ms, out in zip(stages, blobs, latency, lite_out):
        outputs = {t.name: t for t in [_spec(v, k) for k, v in st.model.output.items()]}
        specs.append(StageSpec(
            index=st.index, file="stage_{}.tflite".format(st.index), sha256=hashlib.sha256(blob).hexdigest(),
            precision=precision, inputs=tuple(_spec(t, t.name) for t in st.model.inputs),
            outputs=tuple(outputs[n] for n in st.carried_names + (st.exit_name,)),
            exit=ExitSpec(name=st.exit_name, threshold=opts.threshold if st.index < len(stages) - 1 else 0.0,
                          classes=int(out.shape[-1])),
            flops=model_flops(st.model), size_bytes=len(blob), latency_ms=round(ms, 4)))
    manifest = Manifest(
        model_name=model.name, target=target.name, edgekit_version=edgekit.__version__,
        input=InputSpec(name=input_name, shape=(None,) + tuple(int(d) for d in model.inputs[0].shape[1:]),
                        dtype="float32", preprocessing={"layout": "NHWC"}),
        stages=tuple(specs),
        extra={"runtime": {"num_threads": target.default_threads,
                           "delegates": [{"name": d.name, "library": d.library, "options": dict(d.options)}
                                         for d in target.delegates]}})
    report = _report(opts, target, precision, manifest, calib, split_err,
                     measure.max_abs_error(lite_out, float_out), measure.exit_accuracies(lite_out, calib.y),
                     measure.exit_accuracies(float_out, calib.y))
    files = {s.file: b for s, b in zip(specs, blobs)}
    bundle_dir = write_bundle(opts.out_dir, manifest, files, report, opts.force)
    step(total, total, "bundle written")
    return ConvertResult(bundle_dir=bundle_dir, manifest=manifest, report=report)


def _report(opts: ConvertOptions, target, precision: str, manifest: Manifest, calib, split_err: List[float],
            lite_err: List[float], lite_acc: List[Optional[float]], float_acc: List[Optional[float]]) -> Dict:
    return {
        "model": opts.model_path, "model_name": manifest.model_name, "target": target.name,
        "precision": precision, "bundle_id": manifest.bundle_id,
        "calibration": {"path": opts.calib_path, "samples": len(calib), "labelled": calib.y is not None},
        "bundle_size_bytes": sum(s.size_bytes for s in manifest.stages),
        "latency_measured_on": "the converting machine, batch 1, {} thread(s)".format(
            manifest.extra["runtime"]["num_threads"]),
        "stages": [{"index": s.index, "exit": s.exit.name, "flops": s.flops, "size_bytes": s.size_bytes,
                    "latency_ms": s.latency_ms, "split_max_abs_error": split_err[i],
                    "tflite_max_abs_error_vs_float": lite_err[i], "calib_accuracy_tflite": lite_acc[i],
                    "calib_accuracy_float": float_acc[i]} for i, s in enumerate(manifest.stages)],
    }
