"""Adaptive precision's options, its result, and the checks made before any work."""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from edgekit.convert.precision.ladder import has_ai_edge_quantizer, target_rungs
from edgekit.convert.precision.objective import DEFAULT_OBJECTIVE, check_objective
from edgekit.errors import ConfigError, DataError

MIN_SAMPLES = 128           # 64 for ranges and sensitivity, 64 held out for verification
MIN_HELD = 64
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
