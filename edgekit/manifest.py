"""The bundle manifest: frozen dataclasses, JSON in and out, validation.

Standard library only and Python 3.8 syntax: this module runs on the board.
"""
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from edgekit.errors import BundleError
from edgekit.rungs import PRECISIONS, STAGE_PRECISIONS  # noqa: F401 - targets.py validates PRECISIONS from here

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_DIM = 1 << 20
MAX_TENSOR_BYTES = 256 << 20      # one tensor per batch entry (fixed dims only); far above what a board runs
MAX_COUNT = 1 << 62               # flops, size_bytes
MAX_BATCH = 1 << 20               # the largest runtime.max_batch a manifest may set
_ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8}
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
QUANTIZED_DTYPES = tuple(_INT_RANGE)   # the dtypes a carried tensor may be quantized in
QUANT_SCALE_RTOL = 1e-5           # a carried integer tensor: producer and consumer scales agree to this
_LIBRARY_RE = re.compile(r"^lib[A-Za-z0-9_+\-]+(\.[A-Za-z0-9_+\-]+)*\.so(\.[0-9]+)*$")


def _need(obj: Dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise BundleError("{}: expected a JSON object, got {}".format(where, type(obj).__name__))
    if key not in obj:
        raise BundleError("{}: missing field '{}'".format(where, key))
    return obj[key]


def _int_field(d: Dict[str, Any], key: str, where: str, default: Optional[int], hi: int) -> Optional[int]:
    value = d.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise BundleError("{}.{}: expected an integer from 0 to {}, got {!r}".format(where, key, hi, value))
    return value


def _finite(value: Any, where: str, lo: float = float("-inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) < float("inf"):
        raise BundleError("{}: expected a finite number{}, got {!r}".format(
            where, "" if lo == float("-inf") else " >= {}".format(lo), value))
    return float(value)


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise BundleError(
            "{}: invalid name {!r}; allowed: letters, digits, '_', '-', '.' (no path parts)".format(where, value))
    return value


def same_quantization(a: Tuple[float, int], b: Tuple[float, int]) -> bool:
    """(scale, zero_point) pairs that describe one integer tensor: equal zero points, scales within
    QUANT_SCALE_RTOL (two calibrations of the same values differ in the last float32 digits)."""
    return a[1] == b[1] and abs(a[0] - b[0]) <= QUANT_SCALE_RTOL * max(abs(a[0]), abs(b[0]))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[Optional[int], ...]
    dtype: str = "float32"
    quantization: Optional[Tuple[float, int]] = None   # (scale, zero_point) of an integer carried tensor

    def to_dict(self) -> Dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}   # type: Dict[str, Any]
        if self.quantization is not None:
            d["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return d

    def same_values(self, other: "TensorSpec") -> bool:
        """Producer and consumer of a carried tensor agree on its dtype and quantization."""
        if self.dtype != other.dtype or (self.quantization is None) != (other.quantization is None):
            return False
        return self.quantization is None or same_quantization(self.quantization, other.quantization)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> "TensorSpec":
        name = _check_name(_need(d, "name", where), where + ".name")
        shape = _need(d, "shape", where)
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise BundleError("{}.shape: expected a list of 1 to 8 dimensions, got {!r}".format(where, shape))
        for i, dim in enumerate(shape):
            ok_none = dim is None and i == 0
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= MAX_DIM
            if not (ok_none or ok_int):
                raise BundleError("{}.shape[{}]: expected a positive integer up to {} (null only for the batch), "
                                  "got {!r}".format(where, i, MAX_DIM, dim))
        dtype = d.get("dtype", "float32")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise BundleError("{}.dtype: unknown dtype {!r}; allowed: {}".format(where, dtype, ", ".join(DTYPES)))
        quant = _quantization(d.get("quantization"), dtype, where + ".quantization")
        size = _ITEMSIZE[dtype]
        for dim in shape:
            size *= dim or 1
        if size > MAX_TENSOR_BYTES:
            raise BundleError("{}.shape: {} is {} bytes per sample; allowed: at most {} MiB".format(
                where, shape, size, MAX_TENSOR_BYTES >> 20))
        return cls(name=name, shape=tuple(shape), dtype=dtype, quantization=quant)


def _quantization(q: Any, dtype: str, where: str) -> Optional[Tuple[float, int]]:
    if q is None:
        return None
    if dtype not in _INT_RANGE or not isinstance(q, dict):
        raise BundleError("{}: {!r}; allowed: an object {{scale, zero_point}} on an {} tensor".format(
            where, q, "/".join(_INT_RANGE)))
    scale = _finite(_need(q, "scale", where), where + ".scale", lo=0.0)
    lo, hi = _INT_RANGE[dtype]
    zp = _need(q, "zero_point", where)
    if scale == 0.0 or isinstance(zp, bool) or not isinstance(zp, int) or not lo <= zp <= hi:
        raise BundleError("{}: scale {!r}, zero_point {!r}; allowed: a scale > 0 and a zero point from {} to {}"
                          .format(where, q.get("scale"), zp, lo, hi))
    return scale, zp


@dataclass(frozen=True)
class ExitSpec:
    name: str
    threshold: float
    classes: int
    rule: str = "max_softmax"
    score: Optional[str] = None      # for rule "learned": the stage output that holds the exit score

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        if self.score is None:
            del d["score"]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> "ExitSpec":
        name = _check_name(_need(d, "name", where), where + ".name")
        threshold = _need(d, "threshold", where)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
            raise BundleError("{}.threshold: expected a number, got {!r}".format(where, threshold))
        classes = d.get("classes", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise BundleError("{}.classes: expected a non-negative integer, got {!r}".format(where, classes))
        rule = d.get("rule", "max_softmax")
        if not isinstance(rule, str):
            raise BundleError("{}.rule: expected a string, got {!r}".format(where, rule))
        score = d.get("score")
        if score is not None:
            _check_name(score, where + ".score")
        if (rule == "learned") != (score is not None):
            raise BundleError("{}: rule 'learned' needs a 'score' output and only it has one (rule {!r}, score {!r})"
                              .format(where, rule, score))
        return cls(name=name, threshold=float(threshold), classes=classes, rule=rule, score=score)


@dataclass(frozen=True)
class StageSpec:
    index: int
    file: str
    sha256: str
    precision: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    exit: ExitSpec
    flops: int = 0
    size_bytes: int = 0
    latency_ms: Optional[float] = None

    @property
    def carried(self) -> Tuple[TensorSpec, ...]:
        """Outputs that the next stage consumes (every output but the exit and its score)."""
        return tuple(t for t in self.outputs if t.name not in (self.exit.name, self.exit.score))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index, "file": self.file, "sha256": self.sha256, "precision": self.precision,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "exit": self.exit.to_dict(), "flops": self.flops, "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> "StageSpec":
        fname = _check_name(_need(d, "file", where), where + ".file")
        sha = _need(d, "sha256", where)
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise BundleError("{}.sha256: expected 64 lowercase hex digits, got {!r}".format(where, sha))
        precision = _need(d, "precision", where)
        if precision not in STAGE_PRECISIONS:
            raise BundleError("{}.precision: unknown precision {!r}; allowed: {}".format(
                where, precision, ", ".join(STAGE_PRECISIONS)))
        ins = _need(d, "inputs", where)
        outs = _need(d, "outputs", where)
        for key, lst in (("inputs", ins), ("outputs", outs)):
            if not isinstance(lst, list) or not lst:
                raise BundleError("{}.{}: expected a non-empty list".format(where, key))
        inputs = tuple(TensorSpec.from_dict(t, "{}.inputs[{}]".format(where, i)) for i, t in enumerate(ins))
        outputs = tuple(TensorSpec.from_dict(t, "{}.outputs[{}]".format(where, i)) for i, t in enumerate(outs))
        ex = ExitSpec.from_dict(_need(d, "exit", where), where + ".exit")
        for field_name, value in (("name", ex.name), ("score", ex.score)):
            if value is not None and value not in [t.name for t in outputs]:
                raise BundleError("{}.exit.{}: {!r} is not one of the stage outputs {}".format(
                    where, field_name, value, [t.name for t in outputs]))
        latency = d.get("latency_ms")
        if latency is not None:
            latency = _finite(latency, where + ".latency_ms", lo=0.0)
        return cls(index=_int_field(d, "index", where, 0, 63), file=fname, sha256=sha, precision=precision,
                   inputs=inputs, outputs=outputs, exit=ex, flops=_int_field(d, "flops", where, 0, MAX_COUNT),
                   size_bytes=_int_field(d, "size_bytes", where, 0, MAX_COUNT), latency_ms=latency)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: Tuple[Optional[int], ...]
    dtype: str = "float32"
    preprocessing: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "preprocessing": dict(self.preprocessing)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "input") -> "InputSpec":
        t = TensorSpec.from_dict(d, where)
        pre = d.get("preprocessing", {})
        if not isinstance(pre, dict):
            raise BundleError("{}.preprocessing: expected an object, got {!r}".format(where, pre))
        for key in ("scale", "offset"):
            if key in pre:
                _finite(pre[key], "{}.preprocessing.{}".format(where, key))
        _check_source_layout(pre, len(t.shape), where + ".preprocessing")
        return cls(name=t.name, shape=t.shape, dtype=t.dtype, preprocessing=dict(pre))


@dataclass(frozen=True)
class Manifest:
    model_name: str
    target: str
    input: InputSpec
    stages: Tuple[StageSpec, ...]
    edgekit_version: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def bundle_id(self) -> str:
        """A content id: the same stage files, names and thresholds give the same id."""
        body = self.to_dict(with_id=False)
        blob = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self, with_id: bool = True) -> Dict[str, Any]:
        d = {"schema_version": self.schema_version, "edgekit_version": self.edgekit_version,
             "model_name": self.model_name, "target": self.target, "input": self.input.to_dict(),
             "stages": [s.to_dict() for s in self.stages]}
        d.update(self.extra)
        if with_id:
            d["bundle_id"] = self.bundle_id
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def with_thresholds(self, thresholds: List[float]) -> "Manifest":
        stages = tuple(replace(s, exit=replace(s.exit, threshold=float(t))) for s, t in zip(self.stages, thresholds))
        return replace(self, stages=stages)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Manifest":
        if not isinstance(d, dict):
            raise BundleError("manifest: expected a JSON object, got {}".format(type(d).__name__))
        version = d.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise BundleError("manifest: unknown schema_version {!r}; this edgekit reads {}".format(
                version, SCHEMA_VERSION))
        stages_raw = _need(d, "stages", "manifest")
        if not isinstance(stages_raw, list) or not stages_raw or len(stages_raw) > 64:
            raise BundleError("manifest.stages: expected a list of 1 to 64 stages")
        stages = tuple(StageSpec.from_dict(s, "manifest.stages[{}]".format(i)) for i, s in enumerate(stages_raw))
        inp = InputSpec.from_dict(_need(d, "input", "manifest"), "manifest.input")
        _check_chain(inp, stages)
        _check_runtime(d.get("runtime", {}), len(stages))
        known = {"schema_version", "edgekit_version", "model_name", "target", "input", "stages", "bundle_id"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(model_name=str(d.get("model_name", "")), target=str(d.get("target", "")), input=inp,
                   stages=stages, edgekit_version=str(d.get("edgekit_version", "")), schema_version=version,
                   extra=extra)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BundleError("manifest.json is not valid JSON: {}".format(
                exc if isinstance(exc, ValueError) else "nested too deeply"))
        return cls.from_dict(data)


def _check_source_layout(pre: Dict[str, Any], rank: int, where: str) -> None:
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


def _check_runtime(rt: Any, stages: int) -> None:
    """The manifest's optional runtime section: num_threads, max_batch, delegates (bare library names only:
    a path would let a bundle make the runtime load any shared object)."""
    where = "manifest.runtime"
    if not isinstance(rt, dict):
        raise BundleError("{}: expected an object, got {!r}".format(where, rt))
    _int_field(rt, "num_threads", where, None, 256)
    per = rt.get("stage_threads")
    if per is not None and (not isinstance(per, list) or len(per) != stages or not all(
            isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 256 for t in per)):
        raise BundleError("{}.stage_threads: {!r}; allowed a list of {} integers from 1 to 256, one per stage".format(
            where, per, stages))
    if rt.get("max_batch") is not None and _int_field(rt, "max_batch", where, None, MAX_BATCH) == 0:
        raise BundleError("{}.max_batch: expected an integer from 1 to {}, got 0".format(where, MAX_BATCH))
    delegates = rt.get("delegates", [])
    if not isinstance(delegates, list) or len(delegates) > 8:
        raise BundleError("{}.delegates: expected a list of at most 8 objects, got {!r}".format(where, delegates))
    for i, spec in enumerate(delegates):
        at = "{}.delegates[{}]".format(where, i)
        lib = _need(spec, "library", at)
        if not isinstance(lib, str) or not _LIBRARY_RE.match(lib):
            raise BundleError("{}.library: {!r}; allowed: a bare library file name like libname.so (no path)".format(
                at, lib))
        opts = spec.get("options") or {}
        if not isinstance(opts, dict) or not isinstance(spec.get("name", ""), str) or \
                not all(isinstance(v, (str, int, float, bool)) for v in opts.values()):
            raise BundleError("{}: expected a string name and options of strings or numbers".format(at))


def _check_chain(inp: InputSpec, stages: Tuple[StageSpec, ...]) -> None:
    """Every stage input must be the bundle input or a tensor carried by an earlier stage."""
    available = {inp.name: TensorSpec(inp.name, inp.shape, inp.dtype)}
    files = set()
    for s in stages:
        if s.file in files:
            raise BundleError("manifest: stage file {!r} is listed twice".format(s.file))
        files.add(s.file)
        for t in s.inputs:
            if t.name not in available:
                raise BundleError("manifest.stages[{}]: input {!r} is not produced by an earlier stage; "
                                  "available: {}".format(s.index, t.name, sorted(available)))
            made = available[t.name]
            if not t.same_values(made):
                raise BundleError("manifest.stages[{}]: input {!r} is {} {}, its producer says {} {}; a carried "
                                  "tensor needs one dtype and quantization".format(
                                      s.index, t.name, t.dtype, t.quantization, made.dtype, made.quantization))
        for t in s.outputs:
            available[t.name] = t


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(bundle_dir: str) -> Manifest:
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    if not os.path.isdir(bundle_dir):
        raise BundleError("bundle directory not found: {}".format(bundle_dir))
    if not os.path.isfile(path):
        raise BundleError("{} has no {}; a bundle directory holds manifest.json and stage_*.tflite".format(
            bundle_dir, MANIFEST_NAME))
    with open(path, "r", encoding="utf-8") as f:
        return Manifest.from_json(f.read())


def verify_files(bundle_dir: str, manifest: Manifest) -> None:
    """Raise BundleError naming the first stage file that is missing or whose sha256 differs."""
    for s in manifest.stages:
        path = os.path.join(bundle_dir, s.file)
        if not os.path.isfile(path):
            raise BundleError("stage file missing: {} (listed in the manifest as stage {})".format(path, s.index))
        digest = sha256_file(path)
        if digest != s.sha256:
            raise BundleError("stage file altered: {} has sha256 {}…, the manifest says {}…".format(
                path, digest[:12], s.sha256[:12]))


def load_bundle(bundle_dir: str, verify: bool = True) -> Manifest:
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest
