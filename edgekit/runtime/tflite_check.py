"""Check a .tflite flatbuffer before any interpreter sees it, and read its signatures.

The TFLite interpreters build a model from the file without verifying the flatbuffer (tflite-runtime 2.14, the
interpreter of armv7l boards, segfaults on most truncated files and on about one in five files with a few
altered bytes). `inspect_tflite` walks every table the interpreter reads (model, operator codes, subgraphs,
tensors, quantization, sparsity, operators and their options, buffers, metadata, signatures) with bounds,
alignment and index checks, in the manner of flatbuffers' own verifier, and returns the signatures so the
runtime can compare them with the manifest. Anything it cannot vouch for is a BundleError naming the problem.

Standard library only, Python 3.8 syntax (this file runs on the board).
"""
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple

from edgekit.errors import BundleError

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
MIN_BYTES = 32
MAX_BYTES = (1 << 31) - 1                  # a flatbuffer's offsets are 32-bit
MAX_TENSOR_BYTES = 256 << 20               # one tensor of a stage; far above what a board runs
MAX_TABLES = 1 << 20                       # tables visited (bounds the time a hostile file can take)
# TensorType -> numpy dtype name (None: not a type a stage interface may have) and bytes per element
TENSOR_TYPES = {0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
                5: (None, 1), 6: ("bool", 1), 7: ("int16", 2), 8: ("complex64", 8), 9: ("int8", 1),
                10: ("float64", 8), 11: ("complex128", 16), 12: ("uint64", 8), 13: (None, 1), 14: (None, 1),
                15: ("uint32", 4), 16: ("uint16", 2), 17: (None, 1), 18: (None, 2), 19: (None, 1)}
# BuiltinOptions union members that hold more than scalars: type id -> (slot, kind) of their non-scalar fields
OPTION_FIELDS = {3: ((1, "i32v"), (2, "i32v")),      # ConcatEmbeddingsOptions
                 17: ((0, "i32v"),),                 # ReshapeOptions
                 30: ((0, "i32v"),),                 # SqueezeOptions
                 111: ((0, "str"), (1, "str")),      # VarHandleOptions
                 115: ((0, "i32v"),)}                # BucketizeOptions
_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


class TensorInfo(NamedTuple):
    name: str
    dtype: Optional[str]
    shape: Tuple[int, ...]          # shape_signature when present (-1 = any size), else shape
    quantization: Optional[Tuple[float, int]] = None   # (scale, zero_point) when quantized per tensor


class Signature(NamedTuple):
    key: str
    inputs: Dict[str, TensorInfo]
    outputs: Dict[str, TensorInfo]


class TfliteInfo(NamedTuple):
    size: int
    subgraphs: int
    operators: int
    signatures: Tuple[Signature, ...]


class _Table(NamedTuple):
    pos: int
    vtable: int
    vt_size: int
    obj_size: int


class _Reader:
    """Bounds-checked reads from one flatbuffer; every failure names the file."""

    def __init__(self, buf: bytes, where: str) -> None:
        self.buf, self.n, self.where, self.tables = buf, len(buf), where, 0

    def fail(self, what: str) -> None:
        raise BundleError("{}: not a valid TFLite flatbuffer: {}".format(self.where, what))

    def scalar(self, pos: int, size: int, what: str, signed: bool = False) -> int:
        if pos < 0 or pos + size > self.n:
            self.fail("{} at byte {} lies outside the file ({} bytes)".format(what, pos, self.n))
        if pos % size:
            self.fail("{} at byte {} is not aligned to {} bytes".format(what, pos, size))
        fmt = _FMT[size].lower() if signed else _FMT[size]
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def target(self, pos: int, what: str) -> int:
        """Follow the uoffset stored at pos."""
        off = self.scalar(pos, 4, what)
        dest = pos + off
        if off == 0 or dest >= self.n:
            self.fail("{} points to byte {}, outside the file ({} bytes)".format(what, dest, self.n))
        return dest

    def table(self, pos: int, what: str) -> _Table:
        self.tables += 1
        if self.tables > MAX_TABLES:
            self.fail("more than {} tables".format(MAX_TABLES))
        vtable = pos - self.scalar(pos, 4, what, signed=True)
        vt_size = self.scalar(vtable, 2, what + " vtable")
        obj_size = self.scalar(vtable + 2, 2, what + " vtable")
        if vt_size < 4 or vt_size % 2 or vtable + vt_size > self.n:
            self.fail("{} has a vtable of {} bytes at byte {}".format(what, vt_size, vtable))
        if obj_size < 4 or pos + obj_size > self.n:
            self.fail("{} of {} bytes at byte {} runs past the end of the file".format(what, obj_size, pos))
        t = _Table(pos, vtable, vt_size, obj_size)
        for slot in range((vt_size - 4) // 2):
            off = self.scalar(vtable + 4 + 2 * slot, 2, what + " vtable")
            if off and (off < 4 or off + 1 > obj_size):
                self.fail("{} field {} lies outside its table".format(what, slot))
        return t

    def field(self, t: _Table, slot: int, size: int, what: str) -> int:
        """Absolute position of a field, or 0 when absent."""
        if 4 + 2 * slot >= t.vt_size:
            return 0
        off = self.scalar(t.vtable + 4 + 2 * slot, 2, what)
        if off and off + size > t.obj_size:
            self.fail("{} ({} bytes) runs past the end of its table".format(what, size))
        return t.pos + off if off else 0

    def num(self, t: _Table, slot: int, size: int, what: str, default: int = 0, signed: bool = False) -> int:
        pos = self.field(t, slot, size, what)
        return self.scalar(pos, size, what, signed) if pos else default

    def vector(self, t: _Table, slot: int, elem: int, what: str) -> Tuple[int, int]:
        """(start of the elements, count); (0, 0) when absent."""
        pos = self.field(t, slot, 4, what)
        if not pos:
            return 0, 0
        vec = self.target(pos, what)
        count = self.scalar(vec, 4, what + " length")
        start = vec + 4
        if count * elem > self.n - start:
            self.fail("{} claims {} elements of {} bytes, more than the file holds".format(what, count, elem))
        if elem > 4 and start % elem:
            self.fail("{} is not aligned to {} bytes".format(what, elem))
        return start, count

    def ints(self, t: _Table, slot: int, what: str, size: int = 4) -> List[int]:
        start, count = self.vector(t, slot, size, what)
        fmt = "<{}{}".format(count, {1: "b", 4: "i", 8: "q"}[size])
        return list(struct.unpack_from(fmt, self.buf, start)) if count else []

    def string(self, t: _Table, slot: int, what: str) -> str:
        start, count = self.vector(t, slot, 1, what)
        if not start:
            return ""
        if start + count >= self.n or self.buf[start + count] != 0:
            self.fail("{} is not NUL-terminated".format(what))
        try:
            return bytes(self.buf[start:start + count]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail("{} is not UTF-8".format(what))
        return ""

    def tables_at(self, t: _Table, slot: int, what: str) -> List[_Table]:
        start, count = self.vector(t, slot, 4, what)
        return [self.table(self.target(start + 4 * i, what), "{}[{}]".format(what, i)) for i in range(count)]

    def sub(self, t: _Table, slot: int, what: str) -> Optional[_Table]:
        pos = self.field(t, slot, 4, what)
        return self.table(self.target(pos, what), what) if pos else None


def _check_extent(r: _Reader, offset: int, size: int, what: str) -> None:
    """Data stored after the flatbuffer (models over 2 GB): offset 0/1 means 'none'."""
    if offset > 1 and (offset + size > r.n or size > r.n):
        r.fail("{} claims {} bytes at byte {}, outside the file ({} bytes)".format(what, size, offset, r.n))


def _tensor(r: _Reader, t: _Table, what: str, n_buffers: int) -> TensorInfo:
    shape = r.ints(t, 0, what + ".shape")
    ttype = r.num(t, 1, 1, what + ".type", signed=True)
    if ttype not in TENSOR_TYPES:
        r.fail("{} has unknown type {}".format(what, ttype))
    buf = r.num(t, 2, 4, what + ".buffer")
    if buf >= max(n_buffers, 1):
        r.fail("{} uses buffer {}, the model has {}".format(what, buf, n_buffers))
    name = r.string(t, 3, what + ".name")
    size = TENSOR_TYPES[ttype][1]
    for d in shape:
        if d < 0:
            r.fail("{} {!r} has shape {}".format(what, name, shape))
        size *= max(d, 1)
        if size > MAX_TENSOR_BYTES:
            r.fail("{} {!r} has shape {}: more than {} MiB".format(what, name, shape, MAX_TENSOR_BYTES >> 20))
    quant = r.sub(t, 4, what + ".quantization")
    per_tensor = None if quant is None else _quantization(r, quant, what + ".quantization", len(shape))
    sparsity = r.sub(t, 6, what + ".sparsity")
    if sparsity is not None:
        _sparsity(r, sparsity, what + ".sparsity")
    sig = r.ints(t, 7, what + ".shape_signature")
    if sig and (len(sig) != len(shape) or any(d < -1 for d in sig)):
        r.fail("{} {!r} has shape_signature {} for shape {}".format(what, name, sig, shape))
    for v in r.tables_at(t, 9, what + ".variant_tensors"):
        r.ints(v, 0, what + ".variant_tensors.shape")
    return TensorInfo(name, TENSOR_TYPES[ttype][0], tuple(sig or shape), per_tensor)


def _quantization(r: _Reader, q: _Table, what: str, rank: int) -> Optional[Tuple[float, int]]:
    """Checks the quantization table; returns (scale, zero_point) when it holds one of each."""
    counts = [r.vector(q, slot, 4, what)[1] for slot in (0, 1)]
    scale_at, n_scales = r.vector(q, 2, 4, what + ".scale")
    zp_at, n_zps = r.vector(q, 3, 8, what + ".zero_point")
    counts += [n_scales, n_zps]
    dim = r.num(q, 6, 4, what + ".quantized_dimension", signed=True)
    if counts[2] > 1 and not 0 <= dim < max(rank, 1):
        r.fail("{}: quantized_dimension {} for a tensor of rank {}".format(what, dim, rank))
    if counts[3] and counts[2] and counts[3] != counts[2]:
        r.fail("{}: {} scales but {} zero points".format(what, counts[2], counts[3]))
    if r.num(q, 4, 1, what + ".details_type"):
        details = r.sub(q, 5, what + ".details")
        if details is not None and r.num(q, 4, 1, what) == 1:
            r.vector(details, 0, 1, what + ".details.custom")
    if n_scales == 1 and n_zps == 1:
        return float(struct.unpack_from("<f", r.buf, scale_at)[0]), int(struct.unpack_from("<q", r.buf, zp_at)[0])
    return None


def _sparsity(r: _Reader, s: _Table, what: str) -> None:
    r.ints(s, 0, what + ".traversal_order")
    r.ints(s, 1, what + ".block_map")
    for i, d in enumerate(r.tables_at(s, 2, what + ".dim_metadata")):
        for type_slot, slot in ((2, 3), (4, 5)):
            kind = r.num(d, type_slot, 1, what)
            member = r.sub(d, slot, "{}.dim_metadata[{}]".format(what, i))
            if kind not in (0, 1, 2, 3) or (kind and member is None):
                r.fail("{}.dim_metadata[{}] has index vector type {}".format(what, i, kind))
            if member is not None and kind:
                r.vector(member, 0, {1: 4, 2: 2, 3: 1}[kind], what + ".dim_metadata values")


def _operator(r: _Reader, op: _Table, what: str, n_codes: int, n_tensors: int) -> None:
    code = r.num(op, 0, 4, what + ".opcode_index")
    if code >= n_codes:
        r.fail("{} uses operator code {}, the model has {}".format(what, code, n_codes))
    for slot, name in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
        for idx in r.ints(op, slot, what + "." + name):
            if not -1 <= idx < n_tensors:
                r.fail("{}.{} names tensor {}, the subgraph has {}".format(what, name, idx, n_tensors))
    kind = r.num(op, 3, 1, what + ".builtin_options_type")
    options = r.sub(op, 4, what + ".builtin_options")
    if options is not None:
        for slot, field_kind in OPTION_FIELDS.get(kind, ()):
            if field_kind == "str":
                r.string(options, slot, what + ".builtin_options")
            else:
                r.ints(options, slot, what + ".builtin_options")
    r.vector(op, 5, 1, what + ".custom_options")
    r.vector(op, 7, 1, what + ".mutating_variable_inputs")
    _check_extent(r, r.num(op, 9, 8, what), r.num(op, 10, 8, what), what + ".large_custom_options")
    if r.num(op, 11, 1, what + ".builtin_options_2_type") or r.field(op, 12, 4, what):
        r.fail("{} carries StableHLO options (builtin_options_2), which edgekit's runtime does not run".format(what))


def _subgraph(r: _Reader, g: _Table, what: str, n_codes: int, n_buffers: int) -> Tuple[List[TensorInfo], int]:
    tensors = [_tensor(r, t, "{}.tensors[{}]".format(what, i), n_buffers)
               for i, t in enumerate(r.tables_at(g, 0, what + ".tensors"))]
    for slot, name in ((1, "inputs"), (2, "outputs")):
        for idx in r.ints(g, slot, what + "." + name):
            if not 0 <= idx < len(tensors):
                r.fail("{}.{} names tensor {}, the subgraph has {}".format(what, name, idx, len(tensors)))
    ops = r.tables_at(g, 3, what + ".operators")
    for i, op in enumerate(ops):
        _operator(r, op, "{}.operators[{}]".format(what, i), n_codes, len(tensors))
    r.string(g, 4, what + ".name")
    return tensors, len(ops)


def _signature(r: _Reader, s: _Table, what: str, graphs: List[List[TensorInfo]]) -> Signature:
    key = r.string(s, 2, what + ".signature_key")
    r.string(s, 3, what + ".deprecated_tag")
    index = r.num(s, 4, 4, what + ".subgraph_index")
    if index >= len(graphs):
        r.fail("{} {!r} runs subgraph {}, the model has {}".format(what, key, index, len(graphs)))
    sides = []
    for slot, side in ((0, "inputs"), (1, "outputs")):
        found = {}   # type: Dict[str, TensorInfo]
        for i, m in enumerate(r.tables_at(s, slot, "{}.{}".format(what, side))):
            name = r.string(m, 0, "{}.{}[{}].name".format(what, side, i))
            tix = r.num(m, 1, 4, "{}.{}[{}].tensor_index".format(what, side, i))
            if tix >= len(graphs[index]) or name in found:
                r.fail("{} {!r}: {} {!r} names tensor {} (subgraph {} has {}; names must be unique)".format(
                    what, key, side[:-1], name, tix, index, len(graphs[index])))
            t = graphs[index][tix]
            found[name] = t._replace(name=name)
        sides.append(found)
    return Signature(key, sides[0], sides[1])


def inspect_tflite(buf: bytes, where: str) -> TfliteInfo:
    """Verify a TFLite flatbuffer (header, identifier 'TFL3', schema version 3, every table in bounds, every
    index in range) and return its signatures. Raises BundleError naming `where` and the first problem."""
    n = len(buf)
    if n < MIN_BYTES:
        raise BundleError("{}: not a TFLite model: {} bytes (truncated?)".format(where, n))
    if n > MAX_BYTES:
        raise BundleError("{}: {} bytes, more than a flatbuffer can address ({})".format(where, n, MAX_BYTES))
    if bytes(buf[4:8]) != IDENTIFIER:
        raise BundleError("{}: not a TFLite model: file identifier {!r}, expected {!r}".format(
            where, bytes(buf[4:8]), IDENTIFIER))
    r = _Reader(buf, where)
    model = r.table(r.target(0, "root offset"), "model")
    version = r.num(model, 0, 4, "model.version")
    if version != SCHEMA_VERSION:
        r.fail("schema version {}, this runtime reads {}".format(version, SCHEMA_VERSION))
    for slot in (8, 9):
        if r.field(model, slot, 4, "model"):
            r.fail("the model keeps its weights in external buffers, which edgekit's runtime does not load")
    buffers = r.tables_at(model, 4, "model.buffers")
    for i, b in enumerate(buffers):
        r.vector(b, 0, 1, "model.buffers[{}].data".format(i))
        _check_extent(r, r.num(b, 1, 8, "buffer offset"), r.num(b, 2, 8, "buffer size"), "model.buffers[{}]".format(i))
    codes = r.tables_at(model, 1, "model.operator_codes")
    for i, c in enumerate(codes):
        r.string(c, 1, "model.operator_codes[{}].custom_code".format(i))
        if r.num(c, 3, 4, "builtin_code", signed=True) < 0:
            r.fail("model.operator_codes[{}] has a negative builtin code".format(i))
    graphs, n_ops = [], 0
    for i, g in enumerate(r.tables_at(model, 2, "model.subgraphs")):
        tensors, ops = _subgraph(r, g, "model.subgraphs[{}]".format(i), len(codes), len(buffers))
        graphs.append(tensors)
        n_ops += ops
    if not graphs:
        r.fail("the model has no subgraph")
    r.string(model, 3, "model.description")
    r.ints(model, 5, "model.metadata_buffer")
    for i, m in enumerate(r.tables_at(model, 6, "model.metadata")):
        r.string(m, 0, "model.metadata[{}].name".format(i))
        if r.num(m, 1, 4, "model.metadata.buffer") >= len(buffers):
            r.fail("model.metadata[{}] names a buffer outside the model".format(i))
    sigs = tuple(_signature(r, s, "model.signature_defs[{}]".format(i), graphs)
                 for i, s in enumerate(r.tables_at(model, 7, "model.signature_defs")))
    return TfliteInfo(size=n, subgraphs=len(graphs), operators=n_ops, signatures=sigs)
