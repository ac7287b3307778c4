"""4-bit weights on chosen fully connected and convolution ops of a converter-built int8 stage, the rest as it is.

LiteRT's XNNPACK delegate runs FULLY_CONNECTED with int8 activations and 4-bit channelwise weights (zero point 0,
an even number of input channels) on its fast kernels: such an op gets an INT4 tensor. CONV_2D takes only float32
or 8-bit filters there (an INT4 filter falls back to the builtin kernel, several times slower), so a chosen
convolution keeps an INT8 filter whose values are 4-bit ([-7, 7]): the model stays a plain int8 model that runs at
int8 speed, and the bundle stores those filters nibble-packed (convert/pack.py; the runtime restores them,
runtime/packed.py). Either way the op joins the int8 build that `convert --precision int8` makes, without
rebuilding the stage from per-op recipes (whose int8 ops are calibrated differently and lose more).

Each chosen op's weights are requantized from the float build's: symmetric per output channel, scale max|w| / 7,
values in [-7, 7] (INT4: packed two to a byte, low nibble first, as TFLite stores it); its int32 bias is
requantized to input scale x weight scale.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edgekit.convert.tflite_model import INT8, opcode, text
from edgekit.errors import ModelError
from edgekit.runtime.packed import pack

CONV_2D, FULLY_CONNECTED = 3, 9          # schema.BuiltinOperator
INT4, INT32 = 17, 2                      # schema.TensorType
KINDS = {FULLY_CONNECTED: "FULLY_CONNECTED", CONV_2D: "CONV_2D"}
OPS = tuple(KINDS.values())              # the ops that take 4-bit weights inside the int8 build


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Signed 4-bit values (flat, in [-8, 7]) packed two to a byte, the first in the low nibble: TFLite's INT4
    layout, which is also how a bundle stores packed filters (runtime/packed.pack)."""
    return np.frombuffer(pack(np.ascontiguousarray(q, np.int8).tobytes()), np.uint8)


def quantize_int4(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(values in [-7, 7], scale per row) of a [out, in] float matrix, symmetric per output channel."""
    scale = np.abs(w).max(axis=1) / 7.0
    scale = np.where(scale > 0, scale, 1e-8).astype(np.float32)
    return np.clip(np.round(w / scale[:, None]), -7, 7).astype(np.int8), scale


def _ops(model, kind: int) -> List:
    return [op for op in model.subgraphs[0].operators if opcode(model, op) == kind]


def paired(float_blob_model, int8_model, kind: int) -> List[Tuple[object, object]]:
    """The k-th op of `kind` in the float build with the k-th in the int8 build (int8 only adds QUANTIZE and
    DEQUANTIZE ops)."""
    f, q = _ops(float_blob_model, kind), _ops(int8_model, kind)
    if len(f) != len(q):
        raise ModelError("the int8 build has {} {} ops, the float build {}; 4-bit weights need them one to one".format(
            len(q), KINDS[kind], len(f)))
    return list(zip(f, q))


def int8_op_index(float_blob: bytes, int8_blob: bytes) -> Dict[str, int]:
    """Float-build op scope -> the index of the same op in the int8 build, for its fully connected and
    convolution ops (the kernel that runs it is read by index)."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    fm = fbu.read_model_from_bytearray(bytearray(float_blob))
    qm = fbu.read_model_from_bytearray(bytearray(int8_blob))
    where = {id(op): i for i, op in enumerate(qm.subgraphs[0].operators)}
    out = {}
    for kind in KINDS:
        try:
            pairs = paired(fm, qm, kind)
        except ModelError:
            continue
        out.update({text(fm.subgraphs[0].tensors[f.outputs[0]].name): where[id(q)] for f, q in pairs})
    return out


def _constant(model, index: int) -> np.ndarray:
    t = model.subgraphs[0].tensors[index]
    return np.frombuffer(bytes(bytearray(model.buffers[t.buffer].data)), np.float32).reshape(list(t.shape))


def _new_buffer(model, schema, data: np.ndarray) -> int:
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


def _quantization(schema, scale: np.ndarray):
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = [float(s) for s in scale], [0] * len(scale), 0
    return q


def four_bit(int8_blob: bytes, float_blob: bytes, scopes: Sequence[str]) -> bytes:
    """int8_blob with the fully connected and convolution ops named by `scopes` (their first output's name in
    float_blob) at 4-bit weights: INT4 for fully connected ops, 4-bit values in INT8 filters for convolutions."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    if not scopes:
        return bytes(int8_blob)
    fm = fbu.read_model_from_bytearray(bytearray(float_blob))
    qm = fbu.read_model_from_bytearray(bytearray(int8_blob))
    fsg = fm.subgraphs[0]
    wanted, done = set(scopes), set()
    for kind in KINDS:
        if not wanted & {text(fsg.tensors[op.outputs[0]].name) for op in _ops(fm, kind)}:
            continue
        for f_op, q_op in paired(fm, qm, kind):
            name = text(fsg.tensors[f_op.outputs[0]].name)
            if name not in wanted:
                continue
            _requantize(fm, qm, schema, f_op, q_op, kind, name)
            done.add(name)
    if wanted - done:
        raise ModelError("4-bit weights apply to fully connected and convolution ops; not found as such: {}".format(
            ", ".join(sorted(wanted - done))))
    used = {int(t.buffer) for sg in qm.subgraphs for t in sg.tensors}
    for i, buf in enumerate(qm.buffers):
        if i and i not in used:             # the 8-bit weights and bias replaced
            buf.data = None
    return bytes(fbu.convert_object_to_bytearray(qm))


def _requantize(fm, qm, schema, f_op, q_op, kind: int, name: str) -> None:
    """One op's weights to 4 bits and its bias to the new scales, in qm."""
    fsg, qsg = fm.subgraphs[0], qm.subgraphs[0]
    w_shape = list(fsg.tensors[f_op.inputs[1]].shape)
    w = _constant(fm, int(f_op.inputs[1])).reshape(int(w_shape[0]), -1)
    x_t, w_t = qsg.tensors[q_op.inputs[0]], qsg.tensors[q_op.inputs[1]]
    dim = w_t.quantization.quantizedDimension if w_t.quantization is not None else 0
    if x_t.type != INT8 or w_t.type != INT8 or dim != 0 or list(w_t.shape) != w_shape or \
            (kind == FULLY_CONNECTED and w.shape[1] % 2):
        raise ModelError("{} op {} cannot take 4-bit weights here (int8 input and int8 filter per output channel "
                         "needed{})".format(KINDS[kind], name, ", and an even number of input channels"
                                            if kind == FULLY_CONNECTED else ""))
    q, scale = quantize_int4(w)
    if kind == FULLY_CONNECTED:
        w_t.type, w_t.buffer = INT4, _new_buffer(qm, schema, pack_int4(q))
    else:
        w_t.buffer = _new_buffer(qm, schema, q.reshape(w_shape))
    w_t.quantization = _quantization(schema, scale)
    if len(q_op.inputs) > 2 and int(q_op.inputs[2]) >= 0 and len(f_op.inputs) > 2 and int(f_op.inputs[2]) >= 0:
        b_t = qsg.tensors[q_op.inputs[2]]
        bias_scale = float(x_t.quantization.scale[0]) * scale
        b = _constant(fm, int(f_op.inputs[2])).reshape(-1)
        b_t.type, b_t.buffer = INT32, _new_buffer(qm, schema, np.round(b / bias_scale).astype(np.int32))
        b_t.quantization = _quantization(schema, bias_scale)

