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
Stage boundaries stay float tensors (see report "boundaries").
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.precision.objective import DEFAULT_OBJECTIVE, check_objective
from edgekit.errors import ConfigError, DataError

MIN_SAMPLES = 128           # 64 for ranges and sensitivity, 64 held out for verification
MIN_HELD = 64
RANGE_SAMPLES = 200
DEFAULT_TOLERANCE = 1e-3    # nats of KL at the exit outputs
NEGLIGIBLE = 1e-4           # budget modes: a loss at or below this counts as none
MAX_BACKOFF = 12
MEASURE = ("all", "needed")


@dataclass(frozen=True)
class PrecisionOptions:
    tolerance: Optional[float] = None          # None: DEFAULT_TOLERANCE (tolerance mode) / NEGLIGIBLE (budgets)
    size_budget: Optional[int] = None          # bytes of the whole bundle
    latency_budget_ms: Optional[float] = None  # full-depth batch-1 latency on the converting machine
    rungs: Optional[Tuple[str, ...]] = None    # restrict the ladder
    max_accuracy_drop: float = 0.003           # held-out accuracy (or agreement) per exit vs float
    sensitivity_samples: int = 128
    measure: str = "all"                       # "all": every op at every rung; "needed": tolerance mode measures
                                               # each op's rungs lowest first up to the first within tolerance
    objective: Optional[str] = None            # None: latency (objective.OBJECTIVES); not with a budget

    @property
    def mode(self) -> str:
        """size / latency (a budget), tolerance (objective size) or objective-latency / objective-accuracy."""
        if self.size_budget is not None:
            return "size"
        if self.latency_budget_ms is not None:
            return "latency"
        objective = self.objective or DEFAULT_OBJECTIVE
        return "tolerance" if objective == "size" else "objective-" + objective


@dataclass(frozen=True)
class PrecisionPlan:
    blobs: Tuple[bytes, ...]
    precisions: Tuple[str, ...]                # per stage: a ladder precision or "mixed"
    layers: Tuple[Dict[str, Any], ...]         # the per-layer table
    report: Dict[str, Any] = field(default_factory=dict)
    plot_png: Optional[bytes] = None


Progress = Callable[[str], None]


def check_options(options: PrecisionOptions, target) -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """Validate before any work; returns the usable rungs and notes on rungs left out."""
    from edgekit.convert.precision.ladder import has_ai_edge_quantizer, target_rungs

    if options.tolerance is not None and not options.tolerance > 0:
        raise ConfigError("tolerance {} must be above 0 (nats of KL divergence at the exit outputs, e.g. "
                          "0.01)".format(options.tolerance))
    if options.size_budget is not None and options.latency_budget_ms is not None:
        raise ConfigError("got both --size-budget and --latency-budget; allowed: one budget at a time")
    if options.objective is not None:
        check_objective(options.objective)
        if options.size_budget is not None or options.latency_budget_ms is not None:
            raise ConfigError("got --objective {} with a {} budget; allowed: an objective or a budget".format(
                options.objective, "size" if options.size_budget is not None else "latency"))
    if options.size_budget is not None and not options.size_budget > 0:
        raise ConfigError("size budget {} must be above 0 bytes".format(options.size_budget))
    if options.latency_budget_ms is not None and not options.latency_budget_ms > 0:
        raise ConfigError("latency budget {} ms must be above 0".format(options.latency_budget_ms))
    if options.measure not in MEASURE:
        raise ConfigError("sensitivity measure {!r} is unknown; allowed: {}".format(options.measure, ", ".join(MEASURE)))
    if options.sensitivity_samples < 1:
        raise ConfigError("sensitivity samples {} must be at least 1".format(options.sensitivity_samples))
    if not 0.0 <= options.max_accuracy_drop < 1.0:
        raise ConfigError("max accuracy drop {} is outside [0, 1)".format(options.max_accuracy_drop))
    if not has_ai_edge_quantizer():
        raise ConfigError("--precision adaptive needs ai-edge-quantizer for per-op recipes; it is in the convert "
                          "extra: pip install -c constraints.txt -e '.[convert]'")
    return target_rungs(target, options.rungs)


def check_samples(n: int) -> None:
    if n < MIN_SAMPLES:
        raise DataError("calibration data has {} samples; adaptive precision needs at least {} ({} for "
                        "quantization ranges and sensitivity, {} held out to verify accuracy)".format(
                            n, MIN_SAMPLES, MIN_SAMPLES - MIN_HELD, MIN_HELD))


def choose_precision(stages: Sequence, target, x: np.ndarray, y: Optional[np.ndarray], options: PrecisionOptions,
                     input_name: str, progress: Optional[Progress] = None) -> PrecisionPlan:
    from edgekit.convert.precision.measure import profile
    from edgekit.convert.precision.plan import allocate_all, build_and_verify

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
