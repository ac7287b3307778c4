"""choose_precision: measure, allocate, build and verify (the steps are listed in precision/__init__.py)."""
from typing import Optional, Sequence

import numpy as np

from edgekit.convert.precision.measure import profile
from edgekit.convert.precision.options import (DEFAULT_TOLERANCE, MIN_HELD, PrecisionOptions, PrecisionPlan, Progress,
                                               check_options, check_samples)
from edgekit.convert.precision.plan import allocate_all, build_and_verify
from edgekit.rungs import RANGE_SAMPLES


def choose_precision(stages: Sequence, target, x: np.ndarray, y: Optional[np.ndarray], options: PrecisionOptions,
                     input_name: str, progress: Optional[Progress] = None) -> PrecisionPlan:
    say = progress or (lambda what: None)
    rungs, notes = check_options(options, target)
    check_samples(len(x))
    held = max(MIN_HELD, len(x) // 3)
    rest = len(x) - held
    # ranges from the samples convert calibrates its uniform builds on, so that the plan's int8 stages are those
    data = {"ranges": x[:RANGE_SAMPLES], "sens": x[:min(options.sensitivity_samples, rest)],
            "held_x": x[rest:], "held_y": None if y is None else y[rest:]}
    lazy = options.measure == "needed" and options.mode == "tolerance"
    prof = profile(stages, data, rungs, input_name, target, say,
                   (options.tolerance or DEFAULT_TOLERANCE) if lazy else None, options.mode.startswith("objective-"))
    choice, f16, budget = allocate_all(prof, options, target, rungs)
    return build_and_verify(prof, data, options, target, rungs, notes, choice, f16, budget, input_name, say)
