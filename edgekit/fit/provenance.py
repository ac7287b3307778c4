"""Which data did what: the calibration data, the part thresholds are fitted on, and what the model was trained on.

Without --threshold-data, `convert --max-accuracy-drop` holds a quarter of the calibration data out
(edgekit.fingerprint.holdout_split): thresholds are fitted on it, and exit heads or pruning recovery that
edgekit trains use only the rest. report.json records a fingerprint of each data set; a warning is raised when
the threshold data overlaps data the model (its training record, a sidecar next to the model file) or edgekit
was fitted on, since thresholds fitted there are overconfident.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.data import Dataset
from edgekit.fingerprint import fingerprint, holdout_split, overlap, read_sidecar, sample_hashes, trained_hashes

ALL = "all"
HELD_OUT = "held-out"
PARTS = (ALL, HELD_OUT)


def subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    return Dataset(ds.x[idx], None if ds.y is None else ds.y[idx], ds.source)


def part_of(ds: Dataset, part: str) -> Dataset:
    """The part of a data set thresholds are fitted on: all of it, or its held-out quarter."""
    if part == ALL:
        return ds
    return subset(ds, holdout_split(ds.x, ds.y)[1])


def training_part(calib: Dataset, splitting: bool) -> Dataset:
    """What edgekit may train exit heads or recovery on: the calibration data minus the held-out part."""
    return subset(calib, holdout_split(calib.x, calib.y)[0]) if splitting else calib


def describe_part(ds: Dataset, part: str) -> str:
    if part == ALL:
        return "all {} samples".format(len(ds))
    held = len(holdout_split(ds.x, ds.y)[1])
    return "a held-out part of the calibration data ({} of {} samples, 1 in 4 per class, chosen by sample hash; " \
           "never used for training by edgekit)".format(held, len(ds))


def data_record(calib: Dataset, calib_path: str, model_path: str,
                trained: Sequence[Tuple[str, Dataset, str]]) -> Dict[str, Any]:
    """report.json's `data` section: fingerprints of the calibration data, of what the model was trained on
    (its training record, when it has one) and of what edgekit trained on here (role, data, path), with the
    sample hashes of everything trained on, for the overlap check when thresholds are fitted."""
    record = read_sidecar(model_path)
    hashes = trained_hashes(record)
    fitted_here = []
    for role, ds, path in trained:
        fitted_here.append(dict(fingerprint(ds.x, ds.y, path), role=role))
        hashes.update(sample_hashes(ds.x))
    model_data = None if record is None else [{k: v for k, v in d.items() if k != "sample_hashes"}
                                               for d in record["data"] if isinstance(d, dict)]
    return {"calibration": fingerprint(calib.x, calib.y, calib_path),
            "model_training": model_data if model_data is not None else "unknown (no training record next to the "
                                                                         "model)",
            "trained_by_edgekit": fitted_here, "trained_sample_hashes": sorted(hashes)}


def overlap_warning(ds: Dataset, what: str, data: Optional[Dict[str, Any]]) -> Optional[str]:
    """One line when samples of ds were among the data the model was fitted on (None otherwise)."""
    hashes = set((data or {}).get("trained_sample_hashes") or [])
    n = overlap(ds.x, hashes)
    if not n:
        return None
    return ("{} of the {} samples thresholds were fitted on ({}) are data the model was trained on: the fitted "
            "thresholds and expected accuracy are overconfident; give held-out data (--threshold-data / --data)"
            .format(n, len(ds), what))


def fit_data(full: Dataset, path: str, part: str, data: Optional[Dict[str, Any]]) -> Tuple[Dataset, Dict[str, Any],
                                                                                          List[str]]:
    """The data thresholds are fitted on (`part` of `full`, loaded from `path`), its fingerprint record, and the
    warnings about it."""
    ds = part_of(full, part)
    warning = overlap_warning(ds, path if part == ALL else "held-out part of " + path, data)
    return ds, dict(fingerprint(ds.x, ds.y, path), part=part, described=describe_part(full, part)), \
        [warning] if warning else []
