"""Calibration and input data: .npz (x, optional y) and .npy (x). numpy only; runs on the board too."""
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from edgekit.errors import DataError

FORMATS = (".npz", ".npy")
MAX_ARRAY_BYTES = 4 << 30          # what one array of a data file may declare (checked before numpy allocates it)
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


def load_data(path: str, limit: Optional[int] = None) -> Dataset:
    """Load x (and y when present). Nothing is unpickled."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError("data file {}: unsupported format {!r}; allowed: {}".format(path, ext, ", ".join(FORMATS)))
    if not os.path.isfile(path):
        raise DataError("data file not found: {}".format(path))
    try:
        _check_declared_sizes(path, ext)
        if ext == ".npy":
            x, y = np.load(path, allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise DataError("data file {} has no array 'x' (found: {}); an .npz needs x and optionally y"
                                    .format(path, ", ".join(z.files) or "nothing"))
                x = z["x"]
                y = z["y"] if "y" in z.files else None
    except _UNREADABLE as exc:
        raise DataError("data file {} cannot be read as {}: {}".format(path, ext, str(exc)[:300] or type(exc).__name__))
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


def _declared_bytes(fp: Any, available: int, what: str) -> None:
    """Read an .npy header from fp and refuse arrays larger than the data behind them or MAX_ARRAY_BYTES."""
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
    if declared > min(available, MAX_ARRAY_BYTES):
        raise ValueError("{}: the header declares shape {} of {} ({} bytes) but {} bytes are there{}".format(
            what, shape, dtype, declared, available, "" if declared <= MAX_ARRAY_BYTES else
            "; allowed: at most {} bytes per array".format(MAX_ARRAY_BYTES)))


def _check_declared_sizes(path: str, ext: str) -> None:
    if ext == ".npy":
        with open(path, "rb") as f:
            _declared_bytes(f, os.path.getsize(path), "x")
        return
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename in ("x.npy", "y.npy"):
                with z.open(info) as f:
                    _declared_bytes(f, info.file_size, info.filename[:-4])


def check_input_shape(x: np.ndarray, shape: Sequence[Optional[int]], what: str) -> None:
    """x must be a batch matching shape (None = any batch size)."""
    expected = tuple(shape)
    ok = x.ndim == len(expected) and all(e is None or e == g for e, g in zip(expected, x.shape))
    if not ok:
        shown = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
        raise DataError("{}: data has shape {}, the model input expects {}".format(what, tuple(x.shape), shown))
