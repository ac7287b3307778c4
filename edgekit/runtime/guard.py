"""What the runtime checks before it trusts a bundle or an input batch.

load_checked(...): manifest.json read once (a regular file, bounded size), its signature checked when one is
required (edgekit/signing.py), parsed from the same bytes, then every stage file read once (a regular file
inside the bundle, bounded size), its sha256 compared with the manifest, its flatbuffer verified
(tflite_check.py) and its signature tensors compared with the manifest, all before any interpreter exists.
The interpreter is then built from those same bytes (model_content): no stage file is opened again after its
hash was checked, so a file swapped or rewritten in place after the check cannot be what runs. A stage file that
stores 4-bit weights nibble-packed (manifest `packed`, runtime/packed.py) is restored to its int8 model right
after its own sha256 was checked, and the restored model's sha256 is checked too. `stage_bytes` is the one way to
get a stage's model from its file: everything that builds an interpreter from a bundle goes through it.

check_batch(...): the slow path of EarlyExitRunner.prepare: dtype, shape, batch size and finite values, each
a DataError naming what was received and what is allowed.

numpy + standard library, Python 3.8 syntax (this file runs on the board).
"""
import hashlib
import os
import stat
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.data import check_input_shape
from edgekit.errors import BundleError, ConfigError, DataError, first_line
from edgekit.manifest import MANIFEST_NAME, QUANTIZED_DTYPES, InputSpec, Manifest, StageSpec, TensorSpec
from edgekit.manifest_checks import MAX_BATCH
from edgekit.runtime.packed import unpack_regions
from edgekit.runtime.policy import EXIT_RULES
from edgekit.runtime.tflite_check import Signature, inspect_tflite

MAX_MANIFEST_BYTES = 4 << 20
MAX_STAGE_BYTES = 1 << 30
DEFAULT_MAX_BATCH = 1024
_NEEDS_TWO = ("entropy", "margin")          # rules that compare classes


def read_bundle_file(bundle_dir: str, name: str, limit: int, what: str) -> bytes:
    """The bytes of bundle_dir/name (a regular file that stays inside the bundle, at most `limit` bytes), read
    once. Opened without blocking and checked on the open file, so a FIFO or device swapped in cannot hang or
    flood the reader."""
    path = os.path.join(bundle_dir, name)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(bundle_dir):
        raise BundleError("{} {} is a link out of the bundle; allowed: plain files in {}".format(what, path, bundle_dir))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BundleError("{} missing: {}".format(what, path))
    except OSError as exc:
        raise BundleError("{} {} cannot be read: {}".format(what, path, exc))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        if st.st_size > limit:
            raise BundleError("{} {} has {} bytes; allowed: at most {}".format(what, path, st.st_size, limit))
        raise BundleError("{} {} is not a regular file (a device, FIFO or directory); allowed: plain files in "
                          "{}".format(what, path, bundle_dir))
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
        size = os.fstat(fd).st_size
    if len(data) != size or len(data) > limit:
        raise BundleError("{} {} changed while it was read".format(what, path))
    return data


def load_checked(bundle_dir: str, verify: bool = True, trusted_keys: Optional[Sequence[str]] = None,
                 require_signature: bool = False) -> Tuple[Manifest, List[bytes], Optional[str]]:
    """(manifest, the verified bytes of each stage file, signer's key id or None); BundleError on any problem.
    The interpreters are to be built from the returned bytes, never from the paths."""
    from edgekit.signing import check_bundle_signature

    if not os.path.isdir(bundle_dir):
        raise BundleError("bundle directory not found: {}".format(bundle_dir))
    raw = read_bundle_file(bundle_dir, MANIFEST_NAME, MAX_MANIFEST_BYTES, MANIFEST_NAME)
    signer = check_bundle_signature(bundle_dir, raw, trusted_keys, require_signature)
    if signer is not None and not verify:
        raise ConfigError("verify=False cannot be combined with a required signature: the signature covers the "
                          "stage files only through their sha256")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError("{}/{} is not UTF-8 text: {}".format(bundle_dir, MANIFEST_NAME, exc))
    manifest = Manifest.from_json(text)
    check_exits(manifest)
    blobs = []
    for st in manifest.stages:
        data = stage_bytes(bundle_dir, st, verify)
        path = os.path.join(bundle_dir, st.file)
        info = inspect_tflite(data, path)
        check_interface(st, info.signatures, path)
        blobs.append(data)
    return manifest, blobs, signer


def stage_bytes(bundle_dir: str, st: StageSpec, verify: bool = True) -> bytes:
    """The model of stage `st`: its file read once and checked against the manifest's sha256 (when `verify`),
    and, for a file that stores 4-bit weights packed, restored to the int8 model the interpreter runs (its sha256
    checked as well). BundleError on any mismatch."""
    path = os.path.join(bundle_dir, st.file)
    data = read_bundle_file(bundle_dir, st.file, MAX_STAGE_BYTES, "stage file")
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != st.sha256:
            raise BundleError("stage file altered: {} has sha256 {}…, the manifest says {}…".format(
                path, digest[:12], st.sha256[:12]))
    if st.packed is None:
        return data
    if st.packed.size_bytes > MAX_STAGE_BYTES:
        raise BundleError("stage file {} unpacks to {} bytes; allowed: at most {}".format(
            path, st.packed.size_bytes, MAX_STAGE_BYTES))
    try:
        model = unpack_regions(data, st.packed.regions, st.packed.size_bytes)
    except ValueError as exc:
        raise BundleError("stage file {} does not match its packed regions: {}".format(path, exc))
    digest = hashlib.sha256(model).hexdigest()
    if digest != st.packed.sha256:
        raise BundleError("stage file {} unpacks to a model with sha256 {}…, the manifest says {}…".format(
            path, digest[:12], st.packed.sha256[:12]))
    return model


def check_exits(manifest: Manifest) -> None:
    for st in manifest.stages:
        rule = st.exit.rule
        if rule not in EXIT_RULES:
            raise BundleError("manifest.stages[{}].exit.rule: unknown exit rule {!r}; allowed: {}".format(
                st.index, rule, ", ".join(EXIT_RULES)))
        out = next(t for t in st.outputs if t.name == st.exit.name)
        classes = int(np.prod([d or 1 for d in out.shape[1:]]))
        if rule in _NEEDS_TWO and classes < 2:
            raise BundleError("manifest.stages[{}].exit: rule {!r} needs at least 2 classes, output {!r} has shape "
                              "{}".format(st.index, rule, out.name, list(out.shape)))


def _shape_ok(want: Tuple[Optional[int], ...], have: Tuple[int, ...]) -> bool:
    if len(want) != len(have):
        return False
    for i, (w, h) in enumerate(zip(want, have)):
        if h == -1 or (w is None and i == 0) or w == h:
            continue
        return False
    return True


def check_interface(st: StageSpec, signatures: Sequence[Signature], path: str) -> None:
    """The stage file's one signature has exactly the manifest's tensors, with their dtypes and shapes."""
    if len(signatures) != 1:
        raise BundleError("stage file {} has {} signatures {}; an edgekit stage has exactly one".format(
            path, len(signatures), [s.key for s in signatures]))
    sig = signatures[0]
    have_in, have_out = set(sig.inputs), set(sig.outputs)
    want_in, want_out = set(t.name for t in st.inputs), set(t.name for t in st.outputs)
    if have_in != want_in or have_out != want_out:
        raise BundleError("stage file {} has signature inputs {} / outputs {}, the manifest says {} / {}".format(
            path, sorted(have_in), sorted(have_out), sorted(want_in), sorted(want_out)))
    for side, specs, have in (("input", st.inputs, sig.inputs), ("output", st.outputs, sig.outputs)):
        for t in specs:
            got = have[t.name]
            if got.dtype != t.dtype or not _shape_ok(t.shape, got.shape):
                shown = ["N" if d == -1 else d for d in got.shape]
                raise BundleError("stage file {}: {} {!r} is {} {} in the file, the manifest says {} {}".format(
                    path, side, t.name, got.dtype, shown, t.dtype, ["N" if d is None else d for d in t.shape]))
            quant = got.quantization if got.dtype in QUANTIZED_DTYPES else None
            if not t.same_values(TensorSpec(t.name, t.shape, t.dtype, quant)):
                raise BundleError("stage file {}: {} {!r} has quantization {} in the file, the manifest says {}".format(
                    path, side, t.name, _quant_text(quant), _quant_text(t.quantization)))


def _quant_text(q: Optional[Tuple[float, int]]) -> str:
    return "none" if q is None else "scale {:.6g}, zero point {}".format(q[0], q[1])


def resolve_max_batch(given: Optional[int], runtime_section: Any) -> int:
    """max_batch: the caller's value, else the manifest's runtime.max_batch, else DEFAULT_MAX_BATCH."""
    value = given if given is not None else runtime_section.get("max_batch") or DEFAULT_MAX_BATCH
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ConfigError("max_batch: expected an integer from 1 to {}, got {!r}".format(MAX_BATCH, value))
    return value


def check_batch(x: Any, spec: InputSpec, max_batch: int, scale: float = 1.0, offset: float = 0.0,
                source: Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]] = None) -> np.ndarray:
    """x as float32 of the bundle's input shape, 1..max_batch samples, preprocessed, every value finite.
    source: (sample shape, axes) of a model's own layout (ONNX NCHW), accepted and transposed once."""
    what = "input {!r}".format(spec.name)
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise DataError("{}: cannot be read as an array ({}); allowed: a numeric array of shape (N, {})".format(
            what, first_line(exc), ", ".join(str(d) for d in spec.shape[1:])))
    if arr.dtype.kind not in "fiu" or arr.dtype.itemsize > 8:
        raise DataError("{}: data has dtype {}; allowed: real numbers (float, int or uint arrays)".format(
            what, arr.dtype))
    if source is not None and arr.shape[1:] == source[0] and arr.shape[1:] != tuple(spec.shape[1:]):
        arr = np.ascontiguousarray(np.transpose(arr, source[1]))
    check_input_shape(arr, spec.shape, what)
    n = arr.shape[0]
    if n == 0:
        raise DataError("{}: empty batch (0 samples); allowed: 1 to {} samples".format(what, max_batch))
    if n > max_batch:
        raise DataError("{}: batch of {} samples; allowed: at most max_batch = {} per call (split the batch, or "
                        "raise max_batch)".format(what, n, max_batch))
    with np.errstate(over="ignore", invalid="ignore"):     # values beyond float32 become Inf, refused below
        arr = arr.astype(np.float32, copy=False)
        if (scale, offset) != (1.0, 0.0):
            arr = arr * np.float32(scale) + np.float32(offset)
    check_finite(arr, what)
    return arr


def check_finite(arr: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        per_sample = bad.reshape(len(arr), -1).any(axis=1)
        first = int(np.argmax(per_sample))
        raise DataError("{}: {} non-finite values (NaN or Inf, as float32 after preprocessing) in {} of {} "
                        "samples, the first in sample {}; allowed: finite numbers".format(
                            what, int(bad.sum()), int(per_sample.sum()), len(arr), first))
