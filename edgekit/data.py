"""Calibration and input data: .npz (x, optional y) and .npy (x). numpy only; runs on the board too."""
import os
import stat
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from edgekit.errors import DataError

FORMATS = (".npz", ".npy")
MAX_ARRAY_BYTES = 4 << 30          # what one array of a data file may declare (checked before numpy allocates it)
# A compressed (.npz) array may declare at most MAX_RATIO times its compressed bytes (real data: ~5-50x; deflate
# reaches ~1000x on zeros), or one batch of `max_batch` samples, whichever is more; a batch at most BATCH_BYTES.
MAX_RATIO = 256
DEFAULT_MAX_BATCH = 1024
BATCH_BYTES = 256 << 20
# what numpy's and zipfile's readers raise on damaged files (found by tests/test_fuzz.py)
_UNREADABLE = (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError, NotImplementedError, RuntimeError,
               SyntaxError, tokenize.TokenError, zlib.error)


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: Optional[np.ndarray] = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int) -> "Dataset":
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.source)


def open_data_file(path: str) -> Any:
    """The data file opened for reading: DataError when it is missing or not a regular file (a FIFO, device or
    directory is refused without blocking on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataError("data file not found: {}".format(path))
    except OSError as exc:
        raise DataError("data file {} cannot be opened: {}".format(path, exc.strerror or exc))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError("data file {} is not a regular file (a FIFO, device or directory); allowed: a .npz or .npy "
                        "file".format(path))
    return os.fdopen(fd, "rb")


def load_data(path: str, limit: Optional[int] = None, max_batch: int = DEFAULT_MAX_BATCH) -> Dataset:
    """Load x (and y when present). Nothing is unpickled. Every array's declared size is checked against the
    bytes behind it before numpy allocates it (see MAX_RATIO; max_batch: the runner's most samples per call)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError("data file {}: unsupported format {!r}; allowed: {}".format(path, ext, ", ".join(FORMATS)))
    with open_data_file(path) as f:
        try:
            _check_declared_sizes(f, ext, max_batch)
            f.seek(0)
            if ext == ".npy":
                x, y = np.load(f, allow_pickle=False), None
            else:
                with np.load(f, allow_pickle=False) as z:
                    if "x" not in z.files:
                        raise DataError("data file {} has no array 'x' (found: {}); an .npz needs x and optionally "
                                        "y".format(path, ", ".join(z.files) or "nothing"))
                    x = z["x"]
                    y = z["y"] if "y" in z.files else None
        except _UNREADABLE as exc:
            raise DataError("data file {} cannot be read as {}: {}".format(path, ext, str(exc)[:300] or
                                                                           type(exc).__name__))
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError("data file {}: x is empty (shape {})".format(path, x.shape))
    if not np.issubdtype(x.dtype, np.number):
        raise DataError("data file {}: x has dtype {}; allowed: numeric arrays".format(path, x.dtype))
    if y is not None:
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError("data file {}: y must be integer class labels, one per sample ({}); got shape {} dtype {}"
                            .format(path, x.shape[0], y.shape, y.dtype))
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return Dataset(x=x, y=y, source=path)


def _declared_bytes(fp: Any, stored: int, compressed: Optional[int], max_batch: int, what: str) -> None:
    """Read an .npy header from fp and refuse an array larger than what can be behind it: `stored` bytes (the
    file, or the zip member's declared size), and for a compressed member MAX_RATIO times its `compressed`
    bytes or one batch of max_batch samples; never more than MAX_ARRAY_BYTES."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:
        raise ValueError("{}: .npy format version {}; allowed: 1.0, 2.0".format(what, version))
    declared = dtype.itemsize
    for d in shape:
        declared *= d
    if dtype.hasobject:
        raise ValueError("{}: object arrays are not loaded (they need pickle)".format(what))
    allowed, why = min(stored, MAX_ARRAY_BYTES), "{} bytes are there".format(stored)
    if compressed is not None:
        batch = min(BATCH_BYTES, max_batch * (declared // shape[0] if shape and shape[0] else declared))
        allowed = min(allowed, max(compressed * MAX_RATIO, batch))
        why = "the member has {} compressed bytes; allowed: at most {}x that, or one batch of {} samples ({} " \
              "bytes)".format(compressed, MAX_RATIO, max_batch, batch)
    if declared > allowed:
        raise ValueError("{}: the header declares shape {} of {} ({} bytes) but {}{}".format(
            what, shape, dtype, declared, why, "" if declared <= MAX_ARRAY_BYTES else
            "; allowed: at most {} bytes per array".format(MAX_ARRAY_BYTES)))


def _check_declared_sizes(f: Any, ext: str, max_batch: int) -> None:
    if ext == ".npy":
        _declared_bytes(f, os.fstat(f.fileno()).st_size, None, max_batch, "x")
        return
    with zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if info.filename in ("x.npy", "y.npy"):
                with z.open(info) as member:
                    if info.compress_type == zipfile.ZIP_STORED:
                        _declared_bytes(member, min(info.file_size, info.compress_size), None, max_batch,
                                        info.filename[:-4])
                    else:
                        _declared_bytes(member, info.file_size, info.compress_size, max_batch, info.filename[:-4])


def check_input_shape(x: np.ndarray, shape: Sequence[Optional[int]], what: str) -> None:
    """x must be a batch matching shape (None = any batch size)."""
    expected = tuple(shape)
    ok = x.ndim == len(expected) and all(e is None or e == g for e, g in zip(expected, x.shape))
    if not ok:
        shown = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
        raise DataError("{}: data has shape {}, the model input expects {}".format(what, tuple(x.shape), shown))
