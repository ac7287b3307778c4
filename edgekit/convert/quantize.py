"""Convert one stage sub-model to a .tflite flatbuffer at a given precision: every rung is built here.

Precisions (the rung table, edgekit/rungs.py, names them; CONVERTER_MODES sets the converter for each converter
mode): float32, float16 (fp16 weights), int8 (int8 weights and activations, float interface), int16x8 (16-bit
activations, 8-bit weights, float interface). Input and output names of the signature are the stage's tensor names
(dict outputs name them). "mixed" (adaptive precision) takes a rung per op: int8 with single float32 ops goes
through the converter (its quantization debugger's denylist keeps those ops float; ops without an int8 kernel fall
back to float); any other mix (int4w, int16x8 beside int8) through ai-edge-quantizer per-op recipes
(precision/recipes.py). `whole_stage` builds one stage at one ladder rung as adaptive precision compares them.

int8_stage builds a whole-stage int8 stage but keeps some ops float32 when that measures faster here: a thin stem
convolution (one reading the float stage input with at most STEM_CHANNELS channels) and the ops XNNPACK takes at
float32 but not at int8 (e.g. AVERAGE_POOL_2D, which then splits the delegated graph in two). XNNPACK's int8
3x3 convolution to 32x32x16 took 41 us whatever its input channels (1 to 16), float32 6, 11, 15, 28 and 54 us
for 1, 3, 4, 8 and 16 (ai-edge-litert 2.1.0, x86 with AVX-512): a few input channels cost int8 its advantage. Both
made the demo's int8 first stage slower than its float32 twin; the float ops cost (DE)QUANTIZE ops around them.
"""
import hashlib
import os
import tempfile
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tensorflow.lite.tools import flatbuffer_utils as fbu

from edgekit.bench.ops import delegated_alone
from edgekit.convert.evaluate import interleaved_ms
from edgekit.convert.precision.graph import OpInfo, read_ops
from edgekit.convert.precision.recipes import quantize_ops
from edgekit.convert.tf import quiet, tensorflow
from edgekit.errors import ConfigError, ModelError, first_line
from edgekit.rungs import FLOAT32, INT8, MIXED, PRECISIONS, RANGE_SAMPLES, RUNG, RUNGS
from edgekit.runtime.interpreter import available_backends, load_backend

STEM_CHANNELS = 8           # a convolution of the stage input with at most this many channels is a stem
_STEM_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _float16(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]


def _int8(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _int16x8(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


CONVERTER_MODES: Dict[str, Callable] = {         # Rung.converter -> converter settings
    "float32": lambda conv, tf: None,
    "float16": _float16,
    "int8": _int8,
    "int16x8": _int16x8,
}
# the rung the converter builds with single ops kept float (its quantization debugger works at int8 only)
_DENYLIST_RUNG = next(r.name for r in RUNGS if r.converter and r.fallback == FLOAT32)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError("unknown precision {!r}; allowed: {}".format(precision, ", ".join(PRECISIONS)))
    return precision


def quantize_stage(model, precision: str, feeds: Dict[str, np.ndarray],
                   layers: Optional[Mapping[str, str]] = None, float_blob: Optional[bytes] = None,
                   qsvs: Optional[Dict] = None) -> bytes:
    """model: a stage keras.Model; feeds: float values of its inputs on calibration data, by name.
    layers (precision "mixed" only): op scope (first output tensor name in the float32 .tflite) -> rung;
    float_blob and qsvs (optional, "mixed"): the stage's float32 build and activation ranges, when known."""
    if precision == MIXED:
        return _mixed(model, feeds, dict(layers or {}), float_blob, qsvs)
    return _convert(model, check_precision(precision), feeds)


def _mixed(model, feeds: Dict[str, np.ndarray], layers: Dict[str, str], float_blob: Optional[bytes],
           qsvs: Optional[Dict]) -> bytes:
    if set(layers.values()) <= {_DENYLIST_RUNG, FLOAT32}:    # the converter, with float fallback for single ops
        return _convert(model, _DENYLIST_RUNG, feeds, denylist=[s for s, r in layers.items() if r == FLOAT32])
    fblob = float_blob if float_blob is not None else _convert(model, FLOAT32, feeds)
    return quantize_ops(fblob, layers, None if qsvs is not None else feeds, qsvs=qsvs)


def whole_stage(model, rung: str, feeds: Dict[str, np.ndarray], float_blob: bytes, ops: Sequence[OpInfo],
                qsvs: Dict) -> bytes:
    """The stage at one ladder rung, as adaptive precision compares them: a converter mode builds it (with float
    fallback for ops without a kernel where the rung has that, int8); a rung with per-op recipes only (int4w)
    quantizes the float build, an op its recipe does not cover at the rung's fallback."""
    r = RUNG[rung]
    if r.name == FLOAT32:
        return float_blob
    if r.converter is None:
        return quantize_ops(float_blob, {o.scope: rung if r.ops is None or o.op in r.ops else r.fallback
                                         for o in ops}, qsvs=qsvs)
    if r.fallback == FLOAT32:
        return quantize_stage(model, MIXED, feeds, {})
    return quantize_stage(model, rung, feeds)


def _convert(model, precision: str, feeds: Dict[str, np.ndarray], denylist: Optional[List[str]] = None) -> bytes:
    """model: a stage keras.Model, or the path of a SavedModel whose serving_default signature takes feeds' names.
    denylist: None for the plain converter modes; a list (maybe empty) for int8 with float fallback."""
    tf = tensorflow()
    saved = isinstance(model, str)
    names = list(feeds) if saved else [t.name for t in model.inputs]
    label = os.path.basename(model) if saved else model.name
    n = min(RANGE_SAMPLES, len(next(iter(feeds.values()))))

    def representative() -> Iterator[Dict[str, np.ndarray]]:
        # by name: the converted signature orders its inputs by name, not as model.inputs does
        for i in range(n):
            yield {name: feeds[name][i:i + 1].astype(np.float32) for name in names}

    conv = tf.lite.TFLiteConverter.from_saved_model(model, signature_keys=["serving_default"]) if saved else \
        tf.lite.TFLiteConverter.from_keras_model(model)
    CONVERTER_MODES[RUNG[precision].converter](conv, tf)
    if RUNG[precision].calibration:
        conv.representative_dataset = representative
    if denylist is not None:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)          # the converter may drop temporary files in the working directory
        try:
            with quiet():
                if denylist:
                    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist))
                    debugger = tf.lite.experimental.QuantizationDebugger(
                        converter=conv, debug_dataset=representative, debug_options=opts)
                    return bytes(debugger.get_nondebug_quantized_model())
                return bytes(conv.convert())
        except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
            raise ModelError("stage {} cannot be converted at {}: {}".format(label, precision, first_line(exc, 300)))
        finally:
            os.chdir(cwd)


_DECIDED = {}   # type: Dict[Tuple, List[float]]


class Int8Stage(NamedTuple):
    blob: bytes
    float_ops: Tuple[str, ...]          # op scopes kept float32 (empty: the plain int8 build was faster)
    measured_ms: Dict[str, float]       # median batch-1 ms of each candidate, interleaved ("int8", "int8+float ops")


def stem_scopes(float_blob: bytes) -> List[str]:
    """Scopes of the convolutions that read a stage input with at most STEM_CHANNELS channels."""
    sg = fbu.read_model_from_bytearray(bytearray(float_blob)).subgraphs[0]
    inputs = set(int(i) for i in sg.inputs)
    return [o.scope for o in read_ops(float_blob) if o.op in _STEM_OPS and o.inputs and o.inputs[0] in inputs
            and 0 < int(sg.tensors[o.inputs[0]].shape[-1]) <= STEM_CHANNELS]


def off_delegate_scopes(int8_blob: bytes, float_blob: bytes, backend: Optional[str] = None) -> List[str]:
    """Float scopes of the ops the default delegate takes at float32 but not at int8 (each op alone): in an int8
    stage such an op runs on TFLite's own kernels and cuts the delegate's partition in two. The k-th op of a
    type in the int8 build is the k-th of that type in the float build (int8 only adds (DE)QUANTIZE ops). None
    when the delegate takes no int8 convolution or dense op (tflite-runtime 2.14's XNNPACK): the int8 stage then
    runs on TFLite's own kernels anyway, and floating its ops would only make it a float32 stage."""
    interp = load_backend(backend)
    twins = {}   # type: Dict[str, List[Tuple[str, bool]]]
    for o, d in zip(read_ops(float_blob), delegated_alone(interp, float_blob)):
        twins.setdefault(o.op, []).append((o.scope, d))
    seen = {}    # type: Dict[str, int]
    found = []
    int8_ops = list(zip(read_ops(int8_blob), delegated_alone(interp, int8_blob)))
    if not any(d for o, d in int8_ops if o.op in _WEIGHTED):
        return []
    for o, d in int8_ops:
        j = seen.get(o.op, 0)
        seen[o.op] = j + 1
        if o.op not in ("QUANTIZE", "DEQUANTIZE") and not d and j < len(twins.get(o.op, [])) and twins[o.op][j][1]:
            found.append(twins[o.op][j][0])
    return found


def int8_stage(model, feeds: Dict[str, np.ndarray], time_blobs: Callable[[Sequence[bytes]], List[float]],
               backend: Optional[str] = None) -> Int8Stage:
    """The int8 build of a stage (a keras.Model or a SavedModel path, as _convert takes), with its thin stem
    convolutions and the ops the delegate takes only at float32 kept float32 when time_blobs (median ms of each blob, measured interleaved) says that is faster. backend: the
    interpreter package that decides which ops the delegate takes (the target's, when installed here)."""
    plain = _convert(model, INT8, feeds)
    fblob = _convert(model, FLOAT32, feeds)
    keep = stem_scopes(fblob)
    keep += [s for s in off_delegate_scopes(plain, fblob, backend) if s not in keep]
    if not keep:
        return Int8Stage(plain, (), {})
    try:
        kept = _convert(model, INT8, feeds, denylist=keep)
    except ModelError:           # the converter's debugger refused this mix: the plain build stands
        return Int8Stage(plain, (), {})
    ms = time_blobs([plain, kept])
    measured = {"int8": round(ms[0], 4), "int8+float ops": round(ms[1], 4)}
    if ms[1] < ms[0]:
        return Int8Stage(kept, tuple(keep), measured)
    return Int8Stage(plain, (), measured)


def host_timing(target) -> Tuple[Optional[str], int]:
    """How convert times a target's builds on this machine: the interpreter package (the target's when it is
    installed here; None: the first found) and the threads (the target's default on x86_64 hosts, else one)."""
    wanted = target.runtime_package.replace("-", "_")
    return (wanted if wanted in available_backends() else None,
            target.default_threads if target.arch == "x86_64" else 1)


def uniform_stage(model, precision: str, feeds: Dict[str, np.ndarray], target) -> Tuple[bytes, Optional[Dict]]:
    """One stage (a keras.Model or a SavedModel directory) at a uniform precision, and what int8 kept float32 with
    the timings that decided it (None when nothing was timed). int8 keeps some ops float32 when that measures faster
    here, on the target's interpreter package when it is installed (int8_stage)."""
    if precision != INT8:
        return quantize_stage(model, precision, feeds), None
    backend, threads = host_timing(target)

    def timed(blobs: Sequence[bytes]) -> List[float]:
        # once per pair of builds in a process, so that convert's int8 and adaptive precision's int8 base (which
        # starts from this same build) are one build
        key = tuple(hashlib.sha1(b).hexdigest() for b in blobs) + (backend or "", threads)
        if key not in _DECIDED:
            _DECIDED[key] = list(interleaved_ms(blobs, feeds, threads, backend=backend))
        return _DECIDED[key]
    built = int8_stage(model, feeds, timed, backend)
    if not built.measured_ms:
        return built.blob, None
    return built.blob, {"float32_ops": list(built.float_ops), "median_ms": built.measured_ms,
                        "interpreter": backend or "default"}
