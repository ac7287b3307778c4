"""Per-op precision with ai-edge-quantizer recipes, on a stage's float .tflite.

`quantize_ops(float_blob, rungs, feeds)` quantizes each op at its rung (int4w, int8, int16x8; float32 ops are
left alone) and keeps the stage interface float: the quantizer (0.1.0) leaves a signature output pointing at
the integer tensor before its final DEQUANTIZE, and writes an int8 -> int16 QUANTIZE that TFLite has no
kernel for; both are repaired here (a DEQUANTIZE + QUANTIZE pair through float replaces the latter).
Activation ranges are the global min/max over the calibration samples (the quantizer's default moving average
of per-sample ranges clips: 15 dB instead of 40 dB SQNR on the demo's last stage at int8).
"""
import copy
import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils as fbu

from edgekit.convert.precision.graph import read_ops
from edgekit.convert.tf import quiet, tensorflow
from edgekit.convert.tflite_model import DEQUANTIZE, FLOAT32, INT8, INT16, QUANTIZE, opcode, text
from edgekit.errors import ModelError, first_line
from edgekit.rungs import RANGE_SAMPLES, RUNG, RUNGS
from edgekit.runtime.interpreter import load_backend

SIGNATURE = "serving_default"
_BITS = {r.name: (r.activation_bits, r.weight_bits) for r in RUNGS if r.integer}   # the rungs with a recipe


def op_config(rung: str) -> Dict:
    abits, wbits = _BITS[rung]
    return {"weight_tensor_config": {"num_bits": wbits, "symmetric": True, "granularity": "CHANNELWISE",
                                     "dtype": "INT"},
            "activation_tensor_config": {"num_bits": abits, "symmetric": abits == 16, "granularity": "TENSORWISE",
                                         "dtype": "INT"},
            "compute_precision": "INTEGER", "explicit_dequantize": False}


def _entry(scope: str, op: str, rung: str) -> Dict:
    # ai-edge-quantizer 0.1.0 matches its calibrator against "name" and its quantizer against "name;"
    return {"regex": "^" + re.escape(scope) + ";?$", "operation": op,
            "algorithm_key": "min_max_uniform_quantize", "op_config": op_config(rung)}


def supported(op: str, rung: str) -> bool:
    """Whether ai-edge-quantizer has a kernel recipe for this op at this rung."""
    from ai_edge_quantizer import algorithm_manager, qtyping  # lazy: ai-edge-quantizer is optional

    if RUNG[rung].ops is not None and op not in RUNG[rung].ops:
        return False
    try:
        cfg = qtyping.OpQuantizationConfig.from_dict(op_config(rung))
        algorithm_manager.check_op_quantization_config("min_max_uniform_quantize", op, cfg)
        return True
    except (ValueError, KeyError, AttributeError):
        return False


def calibrate(float_blob: bytes, feeds: Mapping[str, np.ndarray]) -> Dict:
    """Min/max of every tensor an int8 recipe over all supported ops touches (reused for any recipe)."""
    from ai_edge_quantizer import calibrator, recipe_manager  # lazy: ai-edge-quantizer is optional
    from ai_edge_quantizer.utils import calibration_utils  # lazy: ai-edge-quantizer is optional

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe([_entry(o.scope, o.op, "int8") for o in read_ops(float_blob)
                                      if supported(o.op, "int8")])
    n = min(RANGE_SAMPLES, len(next(iter(feeds.values()))))
    data = {SIGNATURE: [{k: np.asarray(v[i:i + 1], np.float32) for k, v in feeds.items()} for i in range(n)]}
    with _quiet():
        cal = calibrator.Calibrator(bytearray(float_blob))
        cal.calibrate(data, manager, qsv_update_func=calibration_utils.min_max_update)
    return cal.get_model_qsvs()


def quantize_ops(float_blob: bytes, rungs: Mapping[str, str], feeds: Optional[Mapping[str, np.ndarray]] = None,
                 qsvs: Optional[Dict] = None) -> bytes:
    """rungs: op scope -> rung; ops not named, at float32, or without a recipe for their rung stay float."""
    from ai_edge_quantizer import quantizer  # lazy: ai-edge-quantizer is optional

    unshared, op_list = _prepared(float_blob)
    ops = {o.scope: o for o in op_list}
    recipe = [_entry(s, ops[s].op, r) for s, r in rungs.items()
              if r != "float32" and s in ops and supported(ops[s].op, r)]
    if not recipe:
        return bytes(float_blob)
    if qsvs is None:
        if feeds is None:
            raise ValueError("quantize_ops needs feeds or qsvs")
        qsvs = calibrate(float_blob, feeds)
    try:
        with _quiet():
            q = quantizer.Quantizer(bytearray(unshared), recipe)
            blob = bytes(q.quantize(qsvs).quantized_model)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelError("ai-edge-quantizer could not apply the per-op recipe: {}".format(first_line(exc, 300)))
    return repair(blob)


_PREPARED: "OrderedDict[str, Tuple[bytes, List]]" = OrderedDict()


def _prepared(float_blob: bytes) -> Tuple[bytes, List]:
    """(float_blob with unshared constants, its ops), kept for the last few blobs: sensitivity quantizes one
    op at a time, dozens of times per stage, and parsing a large flatbuffer in Python is slow."""
    key = hashlib.sha1(float_blob).hexdigest()
    if key not in _PREPARED:
        _PREPARED[key] = (_unshare_buffers(float_blob), read_ops(float_blob))
        while len(_PREPARED) > 4:
            _PREPARED.popitem(last=False)
    _PREPARED.move_to_end(key)
    return _PREPARED[key]


def _unshare_buffers(blob: bytes) -> bytes:
    """Give every op its own copy of each constant it reads: the converter merges equal constants (e.g. two
    all-zero biases) and the quantizer then refuses one tensor that needs two different quantizations."""
    model = fbu.read_model_from_bytearray(bytearray(blob))
    changed = False
    for sg in model.subgraphs:
        used, seen_buf = set(), set()
        for op in sg.operators:
            ins = list(op.inputs)
            for n, t_idx in enumerate(ins):
                t = sg.tensors[t_idx] if t_idx >= 0 else None
                buf = model.buffers[t.buffer] if t is not None and t.buffer else None
                if buf is None or buf.data is None or len(buf.data) == 0:
                    continue
                if t_idx in used or t.buffer in seen_buf:
                    model.buffers.append(copy.deepcopy(buf))
                    dup = copy.deepcopy(t)
                    dup.buffer = len(model.buffers) - 1
                    dup.name = (text(t.name) + "/edgekit_copy{}".format(len(sg.tensors))).encode("utf-8")
                    sg.tensors.append(dup)
                    ins[n] = len(sg.tensors) - 1
                    changed = True
                used.add(t_idx)
                seen_buf.add(t.buffer)
            op.inputs = ins
    return bytes(fbu.convert_object_to_bytearray(model)) if changed else bytes(blob)


class _quiet:
    def __enter__(self):
        self._level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
        logging.disable(self._level)


def repair(blob: bytes) -> bytes:
    """Float signature outputs, which are the subgraph's outputs; int8 -> int16 requantization through float."""
    model = fbu.read_model_from_bytearray(bytearray(blob))
    for sg_index, sg in enumerate(model.subgraphs):
        _split_requantize(model, sg, schema)
        consumers: Dict[int, List] = {}
        for op in sg.operators:
            for i in op.inputs:
                consumers.setdefault(int(i), []).append(op)
        for sd in model.signatureDefs or []:
            if sd.subgraphIndex != sg_index:
                continue
            for tm in sd.outputs:
                if sg.tensors[tm.tensorIndex].type == FLOAT32:
                    continue
                for op in consumers.get(int(tm.tensorIndex), []):
                    if opcode(model, op) == DEQUANTIZE and int(op.outputs[0]) in [int(o) for o in sg.outputs]:
                        tm.tensorIndex = int(op.outputs[0])
            for tm in list(sd.inputs) + list(sd.outputs):
                if sg.tensors[tm.tensorIndex].type != FLOAT32:
                    raise ModelError("the per-op recipe left stage tensor {!r} as an integer tensor; stage "
                                     "boundaries stay float".format(text(tm.name)))
            # the quantizer may list an integer copy of a float op's output as the subgraph output; a signature
            # output that is not a subgraph output is never written back by the delegate (its data stays null)
            named = [int(tm.tensorIndex) for tm in sd.outputs]
            sg.outputs = [t for t in (int(i) for i in sg.outputs) if t in named] + \
                [t for t in named if t not in [int(i) for i in sg.outputs]]
    return bytes(fbu.convert_object_to_bytearray(model))


def _opcode_index(model, schema, builtin: int) -> int:
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _split_requantize(model, sg, schema) -> None:
    """QUANTIZE int8 -> int16 has no kernel: DEQUANTIZE to float, then QUANTIZE float -> int16."""
    out_ops = []
    for op in sg.operators:
        src = sg.tensors[op.inputs[0]] if len(op.inputs) else None
        dst = sg.tensors[op.outputs[0]] if len(op.outputs) else None
        if opcode(model, op) == QUANTIZE and src is not None and src.type == INT8 and dst.type == INT16:
            mid = schema.TensorT()
            mid.shape, mid.type, mid.buffer = list(src.shape), FLOAT32, 0
            mid.shapeSignature = None if src.shapeSignature is None else list(src.shapeSignature)
            mid.name = (text(src.name) + "/edgekit_dequantize").encode("utf-8")
            sg.tensors.append(mid)
            deq = schema.OperatorT()
            deq.opcodeIndex = _opcode_index(model, schema, DEQUANTIZE)
            deq.inputs, deq.outputs = [int(op.inputs[0])], [len(sg.tensors) - 1]
            op.inputs = [len(sg.tensors) - 1]
            out_ops.append(deq)
        out_ops.append(op)
    sg.operators = out_ops


def probe_int4(backend: Optional[str] = None) -> Tuple[bool, str]:
    """Make a one-layer model with 4-bit weights and run it with `backend` (None: this machine's first)."""
    try:
        tf = tensorflow()

        rng = np.random.default_rng(0)
        inp = keras.Input((16,), name="x")
        model = keras.Model(inp, {"y": keras.layers.Dense(8, name="fc")(inp)})
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        with quiet():
            fblob = bytes(conv.convert())
        x = rng.standard_normal((8, 16)).astype(np.float32)
        fc = [o.scope for o in read_ops(fblob) if o.op == "FULLY_CONNECTED"]
        blob = quantize_ops(fblob, {fc[0]: "int4w"}, {"x": x})
        interp = _interpreter(backend, blob)
        got = interp.get_signature_runner()(x=x)["y"]
        want = np.asarray(model(x)["y"])
        rel = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-9))
        return (rel < 0.25, "4-bit weights run ({} relative error {:.3f})".format(backend or "default", rel))
    except Exception as exc:  # noqa: BLE001 - any failure means the rung is not usable here
        return False, "4-bit weights do not run here: {}".format(first_line(exc, 200))


def _interpreter(backend: Optional[str], blob: bytes):
    if backend == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter  # lazy: tflite-runtime is optional
        return Interpreter(model_content=blob)
    return load_backend().interpreter(model_content=blob, num_threads=1)


