"""Adaptive precision: a word length per op and per stage from measured information loss and measured time.

choose_precision(stages, target, x, y, options, input_name) -> PrecisionPlan is the one verb:
1. measure: each stage at each ladder rung (whole-stage builds: loss at the exits, size, latency here), each
   weighted op alone at each rung (sensitivity.py; cached) and each op's time at each rung as built, with the
   kernel that ran it (costs.py);
2. allocate by the objective (objective.py; default latency: no slower than the fastest uniform precision,
   smallest size that keeps accuracy at uniform int8's), or the least total loss within a size or latency
   budget (allocate.py); a stage whose ops all stay float may become float16;
3. build the stages (quantize.quantize_stage, "mixed" for per-op recipes) and verify them on calibration
   samples held out from everything above; back off the most sensitive ops until the accuracy holds.
Each stage is built with a float interface; convert/boundaries.py then lets the tensors carried between stages
cross as integers where both sides are quantized (the manifest's tensor specs say so). Options, result and checks:
options.py.
"""
from typing import Optional, Sequence

import numpy as np

from edgekit.convert.precision.measure import profile
from edgekit.convert.precision.options import (DEFAULT_TOLERANCE, MAX_BACKOFF, MEASURE, MIN_HELD,  # noqa: F401
                                               MIN_SAMPLES, NEGLIGIBLE, PrecisionOptions, PrecisionPlan, Progress,
                                               check_options, check_samples)
from edgekit.convert.precision.plan import allocate_all, build_and_verify
from edgekit.errors import ConfigError
from edgekit.rungs import RANGE_SAMPLES


def choose_precision(stages: Sequence, target, x: np.ndarray, y: Optional[np.ndarray], options: PrecisionOptions,
                     input_name: str, progress: Optional[Progress] = None) -> PrecisionPlan:
    say = progress or (lambda what: None)
    rungs, notes = check_options(options, target)
    check_samples(len(x))
    held = max(MIN_HELD, len(x) // 3)
    rest = len(x) - held
    data = {"ranges": x[:min(RANGE_SAMPLES, rest)], "sens": x[:min(options.sensitivity_samples, rest)],
            "held_x": x[rest:], "held_y": None if y is None else y[rest:]}
    lazy = options.measure == "needed" and options.mode == "tolerance"
    prof = profile(stages, data, rungs, input_name, say, (options.tolerance or DEFAULT_TOLERANCE) if lazy else None)
    choice, f16, budget = allocate_all(prof, options, target, rungs)
    return build_and_verify(prof, data, options, target, rungs, notes, choice, f16, budget, input_name, say)


ADAPTIVE = "adaptive"


def options_from(opts) -> PrecisionOptions:
    """PrecisionOptions from a convert.ConvertOptions (its tolerance, budgets and rungs)."""
    return PrecisionOptions(tolerance=opts.tolerance, size_budget=opts.size_budget,
                            latency_budget_ms=opts.latency_budget_ms, rungs=opts.rungs, objective=opts.objective)


def check_convert_options(opts, target) -> None:
    """--tolerance, --size-budget, --latency-budget, --rungs and --objective only mean something with --precision
    adaptive."""
    if opts.precision == ADAPTIVE:
        check_options(options_from(opts), target)
        return
    given = [flag for flag, v in (("--tolerance", opts.tolerance), ("--size-budget", opts.size_budget),
                                  ("--latency-budget", opts.latency_budget_ms), ("--rungs", opts.rungs),
                                  ("--objective", opts.objective))
             if v is not None]
    if given:
        raise ConfigError("{} only apply with --precision adaptive; got --precision {}".format(
            ", ".join(given), opts.precision or "(the target's default)"))
