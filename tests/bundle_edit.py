"""Helpers that damage a copy of a real bundle on purpose (hostile-bundle catalogue, fuzz target)."""
import hashlib
import json
import os
import shutil
import struct
from dataclasses import replace
from typing import Any, Callable, Dict, Sequence

from edgekit.manifest import MANIFEST_NAME, read_manifest
from edgekit.runtime.tflite_check import _Reader


def copy_bundle(src: str, dest: str) -> str:
    shutil.copytree(src, dest)
    return dest


def manifest_path(bundle: str) -> str:
    return os.path.join(bundle, "manifest.json")


def edit_manifest(bundle: str, fn: Callable[[Dict[str, Any]], Any]) -> None:
    with open(manifest_path(bundle)) as f:
        d = json.load(f)
    fn(d)
    with open(manifest_path(bundle), "w") as f:
        json.dump(d, f)


def set_stage_costs(bundle: str, costs_ms: Sequence[float]) -> None:
    """Write fixed stage costs (manifest latency_ms) in place of the ones measured at conversion, through the
    Manifest type so that the bundle stays consistent: whatever decides from stage costs then decides the
    same way on every machine, however busy."""
    m = read_manifest(bundle)
    if len(costs_ms) != len(m.stages):
        raise ValueError("{} costs for {} stages".format(len(costs_ms), len(m.stages)))
    stages = tuple(replace(s, latency_ms=float(c)) for s, c in zip(m.stages, costs_ms))
    with open(os.path.join(bundle, MANIFEST_NAME), "w", encoding="utf-8") as f:
        f.write(replace(m, stages=stages).to_json())


def stage_path(bundle: str, k: int) -> str:
    with open(manifest_path(bundle)) as f:
        return os.path.join(bundle, json.load(f)["stages"][k]["file"])


def read_stage(bundle: str, k: int) -> bytes:
    with open(stage_path(bundle, k), "rb") as f:
        return f.read()


def write_stage(bundle: str, k: int, data: bytes, fix_sha: bool = True) -> None:
    """Replace stage k's bytes; with fix_sha the manifest lists the new sha256 (a consistent hostile bundle)."""
    with open(stage_path(bundle, k), "wb") as f:
        f.write(data)
    if fix_sha:
        def fix(d: Dict[str, Any]) -> None:
            d["stages"][k]["sha256"] = hashlib.sha256(data).hexdigest()
            d["stages"][k]["size_bytes"] = len(data)
        edit_manifest(bundle, fix)


def field_pos(data: bytes, path: str) -> int:
    """Byte position of a flatbuffer field ('version', 'sig0.out0.tensor_index', 'op.opcode_index', 'tensor.buffer',
    'subgraph0.tensors.length'; in subgraph 0), found with the runtime's own reader."""
    r = _Reader(data, "test")
    model = r.table(r.target(0, "root"), "model")
    if path == "version":
        return r.field(model, 0, 4, path) or -1
    if path.startswith("sig0."):
        sig = r.tables_at(model, 7, "sigs")[0]
        out = r.tables_at(sig, 1, "outs")[0]
        return r.field(out, 1, 4, path) or -1
    graph = r.tables_at(model, 2, "subgraphs")[0]
    if path == "op.opcode_index":           # the first operator that stores one (0 is the default, often omitted)
        return max(r.field(op, 0, 4, path) for op in r.tables_at(graph, 3, "ops")) or -1
    if path == "tensor.buffer":
        return max(r.field(t, 2, 4, path) for t in r.tables_at(graph, 0, "tensors")) or -1
    if path == "subgraph0.tensors.length":
        pos = r.field(graph, 0, 4, path)
        return r.target(pos, path)
    raise KeyError(path)


def put_u32(data: bytes, pos: int, value: int) -> bytes:
    if pos < 0:
        raise ValueError("field not present")
    b = bytearray(data)
    struct.pack_into("<I", b, pos, value)
    return bytes(b)


def zero_weights(data: bytes, min_bytes: int = 256) -> bytes:
    """The same stage file, same size, with every constant buffer of at least min_bytes (the weight tensors;
    small ones may hold shapes) zeroed: a file that loads and runs and answers differently."""
    r = _Reader(data, "test")
    model = r.table(r.target(0, "root"), "model")
    out = bytearray(data)
    zeroed = 0
    for buf in r.tables_at(model, 4, "buffers"):
        start, count = r.vector(buf, 0, 1, "buffer.data")
        if count >= min_bytes:
            out[start:start + count] = bytes(count)
            zeroed += count
    if not zeroed:
        raise ValueError("no weights stored in the flatbuffer")
    return bytes(out)
