"""Integer stage boundaries: a tensor carried from one quantized stage to the next crosses as int8 (or int16).

The converter gives every stage a float interface, so an int8 stage ends its carried outputs with DEQUANTIZE
and the next stage starts with QUANTIZE: at every cut the carried tensor is converted to float and straight
back, with the same scale (both sides are calibrated on the same values), and copied at four times the bytes.
This pass removes that pair. For each carried tensor whose producer ends in DEQUANTIZE of an integer tensor and
whose consumer starts with QUANTIZE to an integer tensor of the same type and quantization (manifest's
same_quantization), the signature tensor of both stages becomes the integer tensor (the producer keeps its
DEQUANTIZE when its own float ops read the float tensor too). Results are unchanged:
dequantize then quantize with equal parameters is the identity on integers. The bundle's input and the exit
outputs stay float; a boundary that does not match (float stages, a float fallback, an op-level mix
without the pair) stays float.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from tensorflow.lite.tools import flatbuffer_utils as fbu

from edgekit.convert.tflite_model import DEQUANTIZE, FLOAT32, INT8, INT16, QUANTIZE, opcode, text
from edgekit.manifest import same_quantization  # the rule the manifest holds carried tensors to

_INT_TYPES = {INT8: "int8", INT16: "int16"}


class Quant(NamedTuple):
    dtype: str
    scale: float
    zero_point: int

    def matches(self, other: "Quant") -> bool:
        return self.dtype == other.dtype and same_quantization((self.scale, self.zero_point),
                                                               (other.scale, other.zero_point))


class _Side(NamedTuple):
    op: int            # index of the QUANTIZE / DEQUANTIZE op to remove
    float_tensor: int  # the signature's float tensor now
    int_tensor: int    # the integer tensor the signature will name
    quant: Quant


class _TfliteStage:
    def __init__(self, blob: bytes) -> None:
        self.model = fbu.read_model_from_bytearray(bytearray(blob))
        self.sg = self.model.subgraphs[0]
        self.sig = self.model.signatureDefs[0] if self.model.signatureDefs and len(self.model.subgraphs) == 1 \
            else None
        self.remove = set()                      # ops to drop
        self.changed = False

    def _quant(self, t: int) -> Optional[Quant]:
        tensor = self.sg.tensors[t]
        q = tensor.quantization
        if tensor.type not in _INT_TYPES or q is None or q.scale is None or len(q.scale) != 1 or \
                q.zeroPoint is None or len(q.zeroPoint) != 1:
            return None
        return Quant(_INT_TYPES[tensor.type], float(q.scale[0]), int(q.zeroPoint[0]))

    def _uses(self, t: int) -> List[int]:
        return [i for i, op in enumerate(self.sg.operators) if t in [int(v) for v in op.inputs]]

    def _producers(self, t: int) -> List[int]:
        return [i for i, op in enumerate(self.sg.operators) if t in [int(v) for v in op.outputs]]

    def _signature_tensor(self, name: str, inputs: bool) -> Optional[int]:
        if self.sig is None:
            return None
        for tm in (self.sig.inputs if inputs else self.sig.outputs):
            if text(tm.name) == name:
                return int(tm.tensorIndex)
        return None

    def output_side(self, name: str) -> Optional[_Side]:
        """The signature output `name` is DEQUANTIZE(integer tensor). When ops of this stage read the float tensor
        too (a float op kept in an int8 stage), the DEQUANTIZE stays for them (op -1: nothing to remove)."""
        t = self._signature_tensor(name, inputs=False)
        if t is None or self.sg.tensors[t].type != FLOAT32 or t in list(self.sg.inputs):
            return None
        prod = self._producers(t)
        if len(prod) != 1 or opcode(self.model, self.sg.operators[prod[0]]) != DEQUANTIZE:
            return None
        src = int(self.sg.operators[prod[0]].inputs[0])
        quant = self._quant(src)
        if quant is None or src in [int(v) for v in self.sg.outputs]:
            return None
        return _Side(-1 if self._uses(t) else prod[0], t, src, quant)

    def input_side(self, name: str) -> Optional[_Side]:
        """The signature input `name` feeds one QUANTIZE to an integer tensor and nothing else."""
        t = self._signature_tensor(name, inputs=True)
        if t is None or self.sg.tensors[t].type != FLOAT32 or t in [int(v) for v in self.sg.outputs]:
            return None
        uses = self._uses(t)
        if len(uses) != 1 or opcode(self.model, self.sg.operators[uses[0]]) != QUANTIZE:
            return None
        dst = int(self.sg.operators[uses[0]].outputs[0])
        quant = self._quant(dst)
        return None if quant is None else _Side(uses[0], t, dst, quant)

    def rewire(self, side: _Side, inputs: bool) -> None:
        """The signature (and subgraph) input or output now is the integer tensor; its float twin's op goes."""
        if inputs:
            self.sg.inputs = [side.int_tensor if int(i) == side.float_tensor else int(i) for i in self.sg.inputs]
        else:
            self.sg.outputs = [side.int_tensor if int(i) == side.float_tensor else int(i) for i in self.sg.outputs]
        for tm in (self.sig.inputs if inputs else self.sig.outputs):
            if int(tm.tensorIndex) == side.float_tensor:
                tm.tensorIndex = side.int_tensor
        self.changed = True
        if side.op >= 0:
            self.remove.add(side.op)

    def to_bytes(self) -> bytes:
        self.sg.operators = [op for i, op in enumerate(self.sg.operators) if i not in self.remove]
        return bytes(fbu.convert_object_to_bytearray(self.model))


def integer_boundaries(blobs: Sequence[bytes], inputs: Sequence[Sequence[str]], carried: Sequence[Sequence[str]]
                       ) -> Tuple[List[bytes], List[Dict[str, Quant]]]:
    """blobs: the stage .tflite files in order; inputs[k]: stage k's input names; carried[k]: the outputs of
    stage k that later stages consume. Returns the blobs with every matching boundary made integer, and per
    stage the quantization of each of its signature tensors that became integer (inputs and outputs by name)."""
    graphs = [_TfliteStage(b) for b in blobs]
    quant = [dict() for _ in blobs]           # type: List[Dict[str, Quant]]
    for p, names in enumerate(carried):
        for name in names:
            out = graphs[p].output_side(name)
            users = [j for j in range(p + 1, len(blobs)) if name in inputs[j]]
            ins = [(j, graphs[j].input_side(name)) for j in users]
            if out is None or not users or any(s is None or not s.quant.matches(out.quant) for _, s in ins):
                continue
            graphs[p].rewire(out, inputs=False)
            quant[p][name] = out.quant
            for j, side in ins:
                graphs[j].rewire(side, inputs=True)
                quant[j][name] = side.quant
    return [g.to_bytes() if g.changed else bytes(b) for g, b in zip(graphs, blobs)], quant

