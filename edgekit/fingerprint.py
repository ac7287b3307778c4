"""Fingerprints of data sets, the held-out split thresholds are fitted on, and what a model was trained on.

A threshold fitted on samples the model was trained on is overconfident, so edgekit records what each data
set was (sha256 of its arrays and its count), splits calibration data deterministically (the same samples
land in the same part whatever their order or file), and reads a model's training record (a sidecar
`<model>.training.json` next to the model file) to warn when the threshold data overlaps it. numpy only.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.atomic import write_atomic
from edgekit.errors import DataError

HOLDOUT_EVERY = 4                    # one sample in four (per class) is held out for threshold fitting
SIDECAR_SUFFIX = ".training.json"
SIDECAR_FORMAT = "edgekit-training-v1"
HASH_CHARS = 16


def sample_hashes(x: np.ndarray) -> List[str]:
    """A short sha256 of each sample's float32 bytes (its identity, whatever file or order it comes in)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    return [hashlib.sha256(a[i].tobytes()).hexdigest()[:HASH_CHARS] for i in range(a.shape[0])]


def fingerprint(x: np.ndarray, y: Optional[np.ndarray] = None, path: Optional[str] = None) -> Dict[str, Any]:
    """sha256 over the arrays (x as float32, then y as int64 when given) and the sample count."""
    h = hashlib.sha256(np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(np.asarray(y, dtype=np.int64)).tobytes())
    out = {"sha256": h.hexdigest(), "count": int(np.asarray(x).shape[0]), "labelled": y is not None}
    if path is not None:
        out["path"] = path
    return out


def holdout_split(x: np.ndarray, y: Optional[np.ndarray] = None,
                  every: int = HOLDOUT_EVERY) -> Tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): within each class (all samples when unlabelled), the samples ordered
    by their hash, every `every`-th one held out. Deterministic and stratified."""
    hashes = sample_hashes(x)
    labels = np.zeros(len(hashes), dtype=np.int64) if y is None else np.asarray(y).reshape(len(hashes), -1)[:, 0]
    held = np.zeros(len(hashes), dtype=bool)
    for c in np.unique(labels):
        idx = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: hashes[i])
        held[idx[::every]] = True
    if held.all() or not held.any():
        raise DataError("{} samples cannot be split into a part to fit on and a held-out part; allowed: at least "
                        "{} samples".format(len(hashes), every))
    return np.flatnonzero(~held), np.flatnonzero(held)


def training_record(entries: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """entries: {"role": ..., "x": array, "y": array or None, "path": str}; roles "trained" count for overlap."""
    data = []
    for e in entries:
        item = dict(fingerprint(e["x"], e.get("y"), e.get("path")), role=e["role"])
        if e["role"] == "trained":
            item["sample_hashes"] = sample_hashes(e["x"])
        data.append(item)
    return {"format": SIDECAR_FORMAT, "data": data}


def sidecar_path(model_path: str) -> str:
    return model_path + SIDECAR_SUFFIX


def write_sidecar(model_path: str, record: Dict[str, Any]) -> str:
    path = sidecar_path(model_path)
    write_atomic(path, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return path


def read_sidecar(model_path: str) -> Optional[Dict[str, Any]]:
    """The model's training record, or None when it has none; DataError when it is not a record."""
    path = sidecar_path(model_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError("training record {} cannot be read: {}".format(path, exc))
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT or \
            not isinstance(record.get("data"), list):
        raise DataError("training record {}: expected a JSON object with format {!r} and a data list".format(
            path, SIDECAR_FORMAT))
    return record


def trained_hashes(record: Optional[Dict[str, Any]]) -> set:
    """The sample hashes of every data set the record says the model was trained on."""
    out = set()   # type: set
    for item in (record or {}).get("data", []):
        if isinstance(item, dict) and item.get("role") == "trained":
            out.update(h for h in item.get("sample_hashes", []) if isinstance(h, str))
    return out


def overlap(x: np.ndarray, hashes: set) -> int:
    """How many samples of x are among `hashes`."""
    return sum(1 for h in sample_hashes(x) if h in hashes) if hashes else 0
