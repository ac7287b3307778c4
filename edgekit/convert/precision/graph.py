"""Read a stage's float .tflite: its ops, which Keras layer each came from, weights and multiply-adds.

An op is named by its first output tensor (its "scope"): ai-edge-quantizer recipes and the converter's
denylist both address ops that way.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils as fbu

from edgekit.convert.tflite_model import text
from edgekit.rungs import FLOAT32, INT8, INT16X8, RUNG

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
_SUFFIX = re.compile(r"_\d+$")


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str                     # TFLite builtin name, e.g. CONV_2D
    scope: str                  # first output tensor name
    layer: str                  # Keras layer name (best match) or the scope
    params: int                 # constant weight elements (not biases)
    macs: int                   # multiply-adds per sample (approximate for non-weighted ops)
    inputs: Tuple[int, ...]     # tensor indices
    outputs: Tuple[int, ...]
    constants: Tuple[int, ...] = ()   # the inputs that are constant tensors (weights, biases)

    @property
    def weighted(self) -> bool:
        return self.op in WEIGHTED and self.params > 0


def _builtin_names() -> Dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _name(t) -> str:
    return text(t.name)


def _layer_of(names: Sequence[str], known: Sequence[str]) -> str:
    """The Keras layer whose name appears as a path component of the op's tensor names."""
    known_set = set(known)
    for name in names:
        for part in name.split(";"):
            for comp in part.split("/")[1:]:
                for cand in (comp, _SUFFIX.sub("", comp)):
                    if cand in known_set:
                        return cand
    return names[0] if names else "?"


def read_ops(blob: bytes, known_layers: Sequence[str] = ()) -> List[OpInfo]:
    """Ops of the first subgraph in execution order."""
    model = fbu.read_model_from_bytearray(bytearray(blob))
    sg = model.subgraphs[0]
    names = _builtin_names()
    sig_out = {int(t.tensorIndex): _name(t) for sd in (model.signatureDefs or []) for t in sd.outputs}
    consts = {i for i, t in enumerate(sg.tensors) if t.buffer and model.buffers[t.buffer].data is not None
              and len(model.buffers[t.buffer].data) > 0}
    ops = []
    for k, op in enumerate(sg.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ins = tuple(int(i) for i in op.inputs if i >= 0)
        outs = tuple(int(i) for i in op.outputs if i >= 0)
        weight = [i for i in ins[1:2] if i in consts] if kind in WEIGHTED else []
        params = int(np.prod(sg.tensors[weight[0]].shape)) if weight else 0
        out_elems = int(np.prod([max(1, d) for d in sg.tensors[outs[0]].shape[1:]])) if outs else 0
        macs = _macs(kind, sg.tensors, ins, out_elems)
        tnames = [_name(sg.tensors[i]) for i in outs] + [_name(sg.tensors[i]) for i in ins]
        signature = [sig_out[i] for i in outs if i in sig_out and sig_out[i] in known_layers]
        ops.append(OpInfo(index=k, op=kind, scope=_name(sg.tensors[outs[0]]) if outs else str(k),
                          layer=signature[0] if signature else _layer_of(tnames, known_layers), params=params,
                          macs=macs, inputs=ins, outputs=outs, constants=tuple(i for i in ins if i in consts)))
    return ops


def _macs(kind: str, tensors, ins: Tuple[int, ...], out_elems: int) -> int:
    if kind == "CONV_2D" and len(ins) > 1:
        _, kh, kw, cin = tensors[ins[1]].shape
        return out_elems * int(kh) * int(kw) * int(cin)
    if kind == "DEPTHWISE_CONV_2D" and len(ins) > 1:
        return out_elems * int(tensors[ins[1]].shape[1]) * int(tensors[ins[1]].shape[2])
    if kind == "FULLY_CONNECTED" and len(ins) > 1:
        return out_elems * int(tensors[ins[1]].shape[-1])
    return out_elems


def producers(ops: Sequence[OpInfo]) -> Dict[int, OpInfo]:
    """tensor index -> the op that writes it."""
    return {t: op for op in ops for t in op.outputs}


def op_rungs(ops: Sequence[OpInfo], weighted: Dict[str, str], pinned_float: Sequence[str]) -> Dict[str, str]:
    """A rung for every op of a mixed stage: weighted ops as chosen; an op without weights takes the
    activation width of what feeds it (the widest of its producers; int4w counts as its fallback, int8)."""
    prod = producers(ops)
    out: Dict[str, str] = {}
    counts: Dict[str, int] = {}
    for r in weighted.values():
        counts[r] = counts.get(r, 0) + 1
    default = max(counts, key=counts.get) if counts else INT8
    order = (INT8, INT16X8, FLOAT32)
    for o in ops:
        if o.scope in weighted:
            out[o.scope] = weighted[o.scope]
        elif o.scope in pinned_float:
            out[o.scope] = FLOAT32
        else:
            src = [out.get(prod[t].scope) for t in o.inputs if t in prod and prod[t].scope in out]
            src = [_unweighted(r) for r in src if r]
            out[o.scope] = max(src, key=order.index) if src else _unweighted(default)
    return out


def _unweighted(rung: str) -> str:
    """The rung an op without weights takes beside `rung`: a weights-only rung (int4w) has none, so its fallback."""
    return RUNG[rung].fallback if RUNG[rung].converter is None else rung
