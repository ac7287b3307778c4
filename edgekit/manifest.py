"""The bundle manifest: frozen dataclasses, JSON in and out, validation.

Standard library only and Python 3.8 syntax: this module runs on the board.
"""
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from edgekit.errors import BundleError
from edgekit.manifest_checks import (INT_RANGE, MAX_DIM, check_name, check_regions, check_runtime,
                                     check_source_layout, finite, int_field, need, quantization)
from edgekit.rungs import PRECISIONS, STAGE_PRECISIONS  # noqa: F401 - targets.py validates PRECISIONS from here

SCHEMA_VERSION = 1               # stage files are the .tflite models themselves
PACKED_SCHEMA_VERSION = 2        # and stage files may store 4-bit weights nibble-packed (StageSpec.packed)
SCHEMA_VERSIONS = (SCHEMA_VERSION, PACKED_SCHEMA_VERSION)   # what this edgekit reads; a bundle is written at the
                                 # lowest that describes it, so a bundle without packed stages stays readable by
                                 # an edgekit that knows version 1 only, and one with them is refused there
PACKED_FORMATS = ("int4-nibbles",)   # 4-bit values, two per byte, low nibble first (runtime/packed.py)
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_TENSOR_BYTES = 256 << 20      # one tensor per batch entry (fixed dims only); far above what a board runs
MAX_COUNT = 1 << 62               # flops, size_bytes
MAX_STAGE_FILE = 1 << 31          # an unpacked stage model
_ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8}
QUANTIZED_DTYPES = tuple(INT_RANGE)    # the dtypes a carried tensor may be quantized in
QUANT_SCALE_RTOL = 1e-5           # a carried integer tensor: producer and consumer scales agree to this


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
        name = check_name(need(d, "name", where), where + ".name")
        shape = need(d, "shape", where)
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
        quant = quantization(d.get("quantization"), dtype, where + ".quantization")
        size = _ITEMSIZE[dtype]
        for dim in shape:
            size *= dim or 1
        if size > MAX_TENSOR_BYTES:
            raise BundleError("{}.shape: {} is {} bytes per sample; allowed: at most {} MiB".format(
                where, shape, size, MAX_TENSOR_BYTES >> 20))
        return cls(name=name, shape=tuple(shape), dtype=dtype, quantization=quant)


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
        name = check_name(need(d, "name", where), where + ".name")
        threshold = need(d, "threshold", where)
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
            check_name(score, where + ".score")
        if (rule == "learned") != (score is not None):
            raise BundleError("{}: rule 'learned' needs a 'score' output and only it has one (rule {!r}, score {!r})"
                              .format(where, rule, score))
        return cls(name=name, threshold=float(threshold), classes=classes, rule=rule, score=score)


@dataclass(frozen=True)
class Packing:
    """A stage file that stores 4-bit weights nibble-packed (runtime/packed.py): the regions (offset, length) of
    the unpacked model they were packed from, and that model's sha256 and size."""
    regions: Tuple[Tuple[int, int], ...]
    sha256: str
    size_bytes: int
    format: str = PACKED_FORMATS[0]

    def to_dict(self) -> Dict[str, Any]:
        return {"format": self.format, "regions": [list(r) for r in self.regions], "sha256": self.sha256,
                "size_bytes": self.size_bytes}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Packing":
        fmt = need(d, "format", where)
        if fmt not in PACKED_FORMATS:
            raise BundleError("{}.format: unknown packing {!r}; allowed: {}".format(where, fmt, ", ".join(
                PACKED_FORMATS)))
        sha = need(d, "sha256", where)
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise BundleError("{}.sha256: expected 64 lowercase hex digits, got {!r}".format(where, sha))
        size = int_field(d, "size_bytes", where, None, MAX_STAGE_FILE)
        if size is None:
            raise BundleError("{}: missing field 'size_bytes'".format(where))
        return cls(regions=check_regions(need(d, "regions", where), size, where + ".regions"), sha256=sha,
                   size_bytes=size, format=fmt)


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
    packed: Optional[Packing] = None     # the file stores 4-bit weights nibble-packed; size_bytes is the file's

    @property
    def carried(self) -> Tuple[TensorSpec, ...]:
        """Outputs that the next stage consumes (every output but the exit and its score)."""
        return tuple(t for t in self.outputs if t.name not in (self.exit.name, self.exit.score))

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "index": self.index, "file": self.file, "sha256": self.sha256, "precision": self.precision,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "exit": self.exit.to_dict(), "flops": self.flops, "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
        }
        if self.packed is not None:
            d["packed"] = self.packed.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> "StageSpec":
        fname = check_name(need(d, "file", where), where + ".file")
        sha = need(d, "sha256", where)
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise BundleError("{}.sha256: expected 64 lowercase hex digits, got {!r}".format(where, sha))
        precision = need(d, "precision", where)
        if precision not in STAGE_PRECISIONS:
            raise BundleError("{}.precision: unknown precision {!r}; allowed: {}".format(
                where, precision, ", ".join(STAGE_PRECISIONS)))
        ins = need(d, "inputs", where)
        outs = need(d, "outputs", where)
        for key, lst in (("inputs", ins), ("outputs", outs)):
            if not isinstance(lst, list) or not lst:
                raise BundleError("{}.{}: expected a non-empty list".format(where, key))
        inputs = tuple(TensorSpec.from_dict(t, "{}.inputs[{}]".format(where, i)) for i, t in enumerate(ins))
        outputs = tuple(TensorSpec.from_dict(t, "{}.outputs[{}]".format(where, i)) for i, t in enumerate(outs))
        ex = ExitSpec.from_dict(need(d, "exit", where), where + ".exit")
        for field_name, value in (("name", ex.name), ("score", ex.score)):
            if value is not None and value not in [t.name for t in outputs]:
                raise BundleError("{}.exit.{}: {!r} is not one of the stage outputs {}".format(
                    where, field_name, value, [t.name for t in outputs]))
        latency = d.get("latency_ms")
        if latency is not None:
            latency = finite(latency, where + ".latency_ms", lo=0.0)
        packed = Packing.from_dict(d["packed"], where + ".packed") if d.get("packed") is not None else None
        return cls(index=int_field(d, "index", where, 0, 63), file=fname, sha256=sha, precision=precision,
                   inputs=inputs, outputs=outputs, exit=ex, flops=int_field(d, "flops", where, 0, MAX_COUNT),
                   size_bytes=int_field(d, "size_bytes", where, 0, MAX_COUNT), latency_ms=latency, packed=packed)


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
                finite(pre[key], "{}.preprocessing.{}".format(where, key))
        check_source_layout(pre, len(t.shape), where + ".preprocessing")
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

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Manifest":
        if not isinstance(d, dict):
            raise BundleError("manifest: expected a JSON object, got {}".format(type(d).__name__))
        version = d.get("schema_version")
        if isinstance(version, bool) or version not in SCHEMA_VERSIONS:
            raise BundleError("manifest: unknown schema_version {!r}; this edgekit reads {}".format(
                version, " and ".join(str(v) for v in SCHEMA_VERSIONS)))
        stages_raw = need(d, "stages", "manifest")
        if not isinstance(stages_raw, list) or not stages_raw or len(stages_raw) > 64:
            raise BundleError("manifest.stages: expected a list of 1 to 64 stages")
        stages = tuple(StageSpec.from_dict(s, "manifest.stages[{}]".format(i)) for i, s in enumerate(stages_raw))
        if version < PACKED_SCHEMA_VERSION and any(s.packed is not None for s in stages):
            raise BundleError("manifest: schema_version {} has no packed stage files; a stage with 'packed' needs "
                              "schema_version {}".format(version, PACKED_SCHEMA_VERSION))
        inp = InputSpec.from_dict(need(d, "input", "manifest"), "manifest.input")
        _check_chain(inp, stages)
        check_runtime(d.get("runtime", {}), len(stages))
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
