"""Checks of the bundle manifest's JSON fields: names, integers, numbers, tensor quantization, an ONNX model's own
layout, and the optional `runtime` section. Each raises a BundleError naming the field, what it holds and what is
allowed; edgekit/manifest.py builds its dataclasses with them.

Standard library only and Python 3.8 syntax: this module runs on the board.
"""
import re
from typing import Any, Dict, Optional, Tuple

from edgekit.errors import BundleError

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_LIBRARY_RE = re.compile(r"^lib[A-Za-z0-9_+\-]+(\.[A-Za-z0-9_+\-]+)*\.so(\.[0-9]+)*$")
MAX_DIM = 1 << 20
MAX_BATCH = 1 << 20               # the largest runtime.max_batch a manifest may set
INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}   # of the integer dtypes


def need(obj: Dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise BundleError("{}: expected a JSON object, got {}".format(where, type(obj).__name__))
    if key not in obj:
        raise BundleError("{}: missing field '{}'".format(where, key))
    return obj[key]


def int_field(d: Dict[str, Any], key: str, where: str, default: Optional[int], hi: int) -> Optional[int]:
    value = d.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise BundleError("{}.{}: expected an integer from 0 to {}, got {!r}".format(where, key, hi, value))
    return value


def finite(value: Any, where: str, lo: float = float("-inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) < float("inf"):
        raise BundleError("{}: expected a finite number{}, got {!r}".format(
            where, "" if lo == float("-inf") else " >= {}".format(lo), value))
    return float(value)


def check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise BundleError(
            "{}: invalid name {!r}; allowed: letters, digits, '_', '-', '.' (no path parts)".format(where, value))
    return value


def quantization(q: Any, dtype: str, where: str) -> Optional[Tuple[float, int]]:
    if q is None:
        return None
    if dtype not in INT_RANGE or not isinstance(q, dict):
        raise BundleError("{}: {!r}; allowed: an object {{scale, zero_point}} on an {} tensor".format(
            where, q, "/".join(INT_RANGE)))
    scale = finite(need(q, "scale", where), where + ".scale", lo=0.0)
    lo, hi = INT_RANGE[dtype]
    zp = need(q, "zero_point", where)
    if scale == 0.0 or isinstance(zp, bool) or not isinstance(zp, int) or not lo <= zp <= hi:
        raise BundleError("{}: scale {!r}, zero_point {!r}; allowed: a scale > 0 and a zero point from {} to {}"
                          .format(where, q.get("scale"), zp, lo, hi))
    return scale, zp


def check_source_layout(pre: Dict[str, Any], rank: int, where: str) -> None:
    """source_shape / from_source (an ONNX model's own layout): a shape of the same rank and a permutation."""
    src, perm = pre.get("source_shape"), pre.get("from_source")
    if src is None and perm is None:
        return
    ok = isinstance(src, list) and len(src) == rank and isinstance(perm, list) and \
        sorted(p for p in perm if isinstance(p, int) and not isinstance(p, bool)) == list(range(rank)) and \
        all(d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM) for d in src)
    if not ok:
        raise BundleError("{}: source_shape {!r} / from_source {!r}; allowed: a shape of rank {} and a permutation "
                          "of 0..{}".format(where, src, perm, rank, rank - 1))


def check_runtime(rt: Any, stages: int) -> None:
    """The manifest's optional runtime section: num_threads, max_batch, delegates (bare library names only:
    a path would let a bundle make the runtime load any shared object)."""
    where = "manifest.runtime"
    if not isinstance(rt, dict):
        raise BundleError("{}: expected an object, got {!r}".format(where, rt))
    int_field(rt, "num_threads", where, None, 256)
    per = rt.get("stage_threads")
    if per is not None and (not isinstance(per, list) or len(per) != stages or not all(
            isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 256 for t in per)):
        raise BundleError("{}.stage_threads: {!r}; allowed a list of {} integers from 1 to 256, one per stage".format(
            where, per, stages))
    if rt.get("max_batch") is not None and int_field(rt, "max_batch", where, None, MAX_BATCH) == 0:
        raise BundleError("{}.max_batch: expected an integer from 1 to {}, got 0".format(where, MAX_BATCH))
    delegates = rt.get("delegates", [])
    if not isinstance(delegates, list) or len(delegates) > 8:
        raise BundleError("{}.delegates: expected a list of at most 8 objects, got {!r}".format(where, delegates))
    for i, spec in enumerate(delegates):
        at = "{}.delegates[{}]".format(where, i)
        lib = need(spec, "library", at)
        if not isinstance(lib, str) or not _LIBRARY_RE.match(lib):
            raise BundleError("{}.library: {!r}; allowed: a bare library file name like libname.so (no path)".format(
                at, lib))
        opts = spec.get("options") or {}
        if not isinstance(opts, dict) or not isinstance(spec.get("name", ""), str) or \
                not all(isinstance(v, (str, int, float, bool)) for v in opts.values()):
            raise BundleError("{}: expected a string name and options of strings or numbers".format(at))


MAX_REGIONS = 4096


def check_regions(regions: Any, size: int, where: str) -> Tuple[Tuple[int, int], ...]:
    """Packed regions of a stage file: [offset, length] pairs of integers, lengths above 0, sorted by offset, apart
    from each other and inside the unpacked model of `size` bytes."""
    if not isinstance(regions, list) or not 1 <= len(regions) <= MAX_REGIONS:
        raise BundleError("{}: expected a list of 1 to {} [offset, length] pairs, got {!r}".format(
            where, MAX_REGIONS, regions if not isinstance(regions, list) else "{} entries".format(len(regions))))
    out, end = [], 0
    for i, r in enumerate(regions):
        ok = isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
        if not ok or r[0] < end or r[1] < 1 or r[0] + r[1] > size:
            raise BundleError("{}[{}]: {!r}; allowed: [offset, length] with length >= 1, after the region before it "
                              "(at {}) and inside the unpacked model ({} bytes)".format(where, i, r, end, size))
        out.append((r[0], r[1]))
        end = r[0] + r[1]
    return tuple(out)
