"""Adaptive precision: a word length per op and per stage from measured information loss and measured time.

choose.choose_precision(stages, target, x, y, options, input_name) -> PrecisionPlan is the one verb:
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
from edgekit.convert.precision.options import (DEFAULT_TOLERANCE, MAX_BACKOFF, MEASURE, MIN_HELD,  # noqa: F401
                                               MIN_SAMPLES, NEGLIGIBLE, PrecisionOptions, PrecisionPlan, Progress,
                                               check_options, check_samples)
from edgekit.errors import ConfigError

# choose_precision lives in choose.py, not here: quantize.py reads this package's graph, recipe and timing modules,
# and choose.py imports quantize.py; a package that imported choose.py would import itself back.

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
