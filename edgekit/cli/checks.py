"""A warning for results that would be quietly wrong: inputs far outside the range of the calibration data the
bundle was quantized on (its report.json)."""
import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgekit.manifest import REPORT_NAME

FAR = 1.0        # outside by more than this many calibration ranges is "far" (0-255 pixels against 0-1 floats)


def _report(bundle: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(bundle, REPORT_NAME), "r", encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def outside_range(x: np.ndarray, calib_range: Sequence[float]) -> Optional[str]:
    """Why x is far outside [low, high] (the calibration data's), or None when it is not."""
    low, high = float(calib_range[0]), float(calib_range[1])
    span = max(high - low, 1e-12)
    xmin, xmax = float(np.min(x)), float(np.max(x))
    if xmin >= low - FAR * span and xmax <= high + FAR * span:
        return None
    return "its inputs span [{:.4g}, {:.4g}], the calibration data's [{:.4g}, {:.4g}]".format(xmin, xmax, low, high)


def range_warning(bundle: str, data_path: Optional[str], x: Optional[np.ndarray] = None) -> Optional[str]:
    """A warning when the inputs of data_path (or x) lie far outside the range of the data the bundle was
    quantized on (report.json); None otherwise, or when either is unknown."""
    calib = _report(bundle).get("calibration") or {}
    rng = calib.get("input_range")
    if not rng or (x is None and not data_path):
        return None
    if x is None:
        from edgekit.data import load_data

        x = load_data(data_path).x
    why = outside_range(x, rng)
    if why is None:
        return None
    return ("{}: {}; quantized stages clip what lies outside their ranges, so accuracy and exits will be quietly "
            "wrong: scale the inputs as the calibration data was".format(data_path or "the inputs", why))
