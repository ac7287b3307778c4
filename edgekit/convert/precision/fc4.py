"""4-bit weights on chosen fully connected ops of a converter-built int8 stage, everything else left as it is.

LiteRT's XNNPACK delegate runs FULLY_CONNECTED with int8 activations and 4-bit channelwise weights (zero point 0,
an even number of input channels) on its fast kernels; CONV_2D takes only float32 or 8-bit filters there. So a
4-bit fully connected op can join the int8 build that `convert --precision int8` makes without rebuilding the
stage from per-op recipes (whose int8 ops are calibrated differently and lose more). Each chosen op's weights are
requantized from the float build's: symmetric per output channel, scale max|w| / 7, values in [-7, 7], packed two
to a byte (low nibble first, as TFLite stores INT4); its int32 bias is requantized to input scale x weight scale.
"""
from typing import List, Sequence, Tuple

import numpy as np

from edgekit.convert.tflite_model import INT8, opcode, text
from edgekit.errors import ModelError

FULLY_CONNECTED = 9                     # schema.BuiltinOperator
INT4, INT32 = 17, 2                     # schema.TensorType


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Signed 4-bit values (flat, in [-8, 7]) packed two to a byte, the first in the low nibble."""
    flat = np.asarray(q, np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nib = (flat.astype(np.int16) & 0x0F).astype(np.uint8)
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def quantize_int4(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(values in [-7, 7], scale per row) of a [out, in] float matrix, symmetric per output channel."""
    scale = np.abs(w).max(axis=1) / 7.0
    scale = np.where(scale > 0, scale, 1e-8).astype(np.float32)
    return np.clip(np.round(w / scale[:, None]), -7, 7).astype(np.int8), scale


def _fcs(model) -> List:
    sg = model.subgraphs[0]
    return [op for op in sg.operators if opcode(model, op) == FULLY_CONNECTED]


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


def four_bit_fcs(int8_blob: bytes, float_blob: bytes, scopes: Sequence[str]) -> bytes:
    """int8_blob with the fully connected ops named by `scopes` (their first output's name in float_blob) at
    4-bit weights. The k-th FULLY_CONNECTED of the int8 build is the k-th of the float build (int8 only adds
    QUANTIZE and DEQUANTIZE ops)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    fm = fbu.read_model_from_bytearray(bytearray(float_blob))
    qm = fbu.read_model_from_bytearray(bytearray(int8_blob))
    fsg, qsg = fm.subgraphs[0], qm.subgraphs[0]
    pairs = list(zip(_fcs(fm), _fcs(qm)))
    if len(_fcs(fm)) != len(_fcs(qm)):
        raise ModelError("the int8 build has {} fully connected ops, the float build {}; 4-bit weights need them "
                         "one to one".format(len(_fcs(qm)), len(_fcs(fm))))
    wanted = set(scopes)
    for f_op, q_op in pairs:
        if text(fsg.tensors[f_op.outputs[0]].name) not in wanted:
            continue
        w = _constant(fm, int(f_op.inputs[1])).reshape(-1, int(fsg.tensors[f_op.inputs[1]].shape[-1]))
        x_t, w_t = qsg.tensors[q_op.inputs[0]], qsg.tensors[q_op.inputs[1]]
        if x_t.type != INT8 or w_t.type != INT8 or w.shape[1] % 2:
            raise ModelError("fully connected op {} cannot take 4-bit weights here (int8 input and an even number "
                             "of input channels needed)".format(text(fsg.tensors[f_op.outputs[0]].name)))
        q, scale = quantize_int4(w)
        w_t.type, w_t.buffer = INT4, _new_buffer(qm, schema, pack_int4(q))
        w_t.quantization = _quantization(schema, scale)
        if len(q_op.inputs) > 2 and int(q_op.inputs[2]) >= 0 and len(f_op.inputs) > 2 and int(f_op.inputs[2]) >= 0:
            b_t = qsg.tensors[q_op.inputs[2]]
            bias_scale = float(x_t.quantization.scale[0]) * scale
            b = _constant(fm, int(f_op.inputs[2])).reshape(-1)
            b_t.type, b_t.buffer = INT32, _new_buffer(qm, schema, np.round(b / bias_scale).astype(np.int32))
            b_t.quantization = _quantization(schema, bias_scale)
    used = {int(t.buffer) for sg in qm.subgraphs for t in sg.tensors}
    for i, buf in enumerate(qm.buffers):
        if i and i not in used:             # the 8-bit weights and bias replaced above
            buf.data = None
    return bytes(fbu.convert_object_to_bytearray(qm))
