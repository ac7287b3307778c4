"""Calibration and input data: .npz (x, optional y) and .npy (x). numpy only; runs on the board too."""
import os
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edgekit.errors import DataError

FORMATS = (".npz", ".npy")


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
        if ext == ".npy":
            x, y = np.load(path, allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise DataError("data file {} has no array 'x' (found: {}); an .npz needs x and optionally y"
                                    .format(path, ", ".join(z.files) or "nothing"))
                x = z["x"]
                y = z["y"] if "y" in z.files else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError("data file {} cannot be read as {}: {}".format(path, ext, exc))
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


def check_input_shape(x: np.ndarray, shape: Sequence[Optional[int]], what: str) -> None:
    """x must be a batch matching shape (None = any batch size)."""
    expected = tuple(shape)
    ok = x.ndim == len(expected) and all(e is None or e == g for e, g in zip(expected, x.shape))
    if not ok:
        shown = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
        raise DataError("{}: data has shape {}, the model input expects {}".format(what, tuple(x.shape), shown))
