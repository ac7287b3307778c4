"""Store a stage's 4-bit convolution filters nibble-packed in the bundle (the runtime restores them:
runtime/packed.py).

Adaptive precision keeps a 4-bit convolution filter as an INT8 tensor with values in [-7, 7] (precision/fc4.py):
the model runs at int8 speed. Here the byte regions of such filters are found in the final .tflite (after
every other pass: their offsets are those of the file the runtime restores) and packed two values to a byte. Any
INT8 convolution filter whose values all fit in 4 bits is packed: packing is lossless, the restored model is the
same bytes (its sha256 is in the manifest).
"""
import functools
import hashlib
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from edgekit.convert.tflite_model import INT8
from edgekit.manifest import Packing
from edgekit.runtime.packed import FORMAT, pack_regions, stored_size

CONV_2D = 3                      # schema.BuiltinOperator
MIN_REGION = 64                  # bytes; smaller filters are not worth a region


class Stored(NamedTuple):
    """A stage file's bytes and its packing (None: the file is the model itself)."""
    data: bytes
    packing: Optional[Packing]


def four_bit_regions(blob: bytes) -> List[Tuple[int, int]]:
    """(offset, length) of every INT8 CONV_2D filter buffer of `blob` whose values are all in [-8, 7], sorted
    (none for bytes that are not a .tflite model)."""
    return [(off, n) for off, n in conv_filter_regions(blob)
            if _fits(np.frombuffer(blob, np.int8, count=n, offset=off))]


def _fits(values: np.ndarray) -> bool:
    return bool(values.size) and int(values.min()) >= -8 and int(values.max()) <= 7


def conv_filter_regions(blob: bytes) -> List[Tuple[int, int]]:
    """(offset, length) of every INT8 CONV_2D filter buffer of `blob` (at least MIN_REGION bytes), sorted."""
    from tensorflow.lite.python import schema_py_generated as schema

    if len(blob) < 8 or bytes(blob[4:8]) != b"TFL3":
        return []
    model = schema.Model.GetRootAs(blob, 0)
    found = set()
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != CONV_2D or op.InputsLength() < 2:
                continue
            t = sg.Tensors(op.Inputs(1))
            if t.Type() != INT8 or t.Buffer() <= 0:
                continue
            region = _region(model.Buffers(t.Buffer()))
            if region is not None:
                found.add(region)
    return sorted(found)


def _region(buf) -> Optional[Tuple[int, int]]:
    """The buffer's data as a region of the file, when it is inside it."""
    n = buf.DataLength()
    if n < MIN_REGION or buf.Offset() > 1:       # Offset > 1: data outside the flatbuffer (large models)
        return None
    start = buf._tab.Vector(buf._tab.Offset(4))  # noqa: SLF001 - the data vector's position in the file
    return int(start), int(n)


def store(blob: bytes) -> Stored:
    """The stage file for `blob`: its 4-bit convolution filters packed, or the model itself when it has none."""
    regions = four_bit_regions(blob)
    if not regions:
        return Stored(bytes(blob), None)
    return Stored(pack_regions(blob, regions), Packing(regions=tuple(regions), sha256=hashlib.sha256(blob).hexdigest(),
                                size_bytes=len(blob), format=FORMAT))


@functools.lru_cache(maxsize=16)
def stored_bytes(blob: bytes) -> int:
    """Bytes of the stage file `store` would write for `blob`."""
    return stored_size(len(blob), four_bit_regions(blob))
