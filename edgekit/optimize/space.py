"""What `edgekit optimize` searches over and what it is asked for: typed, checked before any work.

A candidate is one conversion: exits (the model's own, or `auto:N` heads on a single-output model, placed at
fractions of the FLOPs or of the latency measured here), a pruning FLOPs fraction and a precision plan. Thread
counts are not a dimension here: every bundle already runs
each stage at the count the cost protocol measured fastest for it. Thresholds are fitted per candidate at a
few accuracy-drop shares, giving several operating points per conversion at the cost of one.
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from edgekit.errors import ConfigError

NATIVE = -1                       # exits: the model's own outputs are its exits
BUDGETS = ("latency_ms", "energy_mj", "size_bytes")
FLAGS = {"latency_ms": "--latency-ms", "energy_mj": "--energy-mj", "size_bytes": "--size"}
PRUNE_FRACTIONS = (0.7, 0.5)      # FLOPs fractions kept
EXIT_COUNTS = (1, 2, 3)           # auto:N on a single-output model
# where auto:N puts its cuts (convert.exits.PLACES): time is not proportional to FLOPs where fixed per-pixel and
# per-op costs dominate (measured: the plain digits CNN's stem took 18% of the int8 time at 1% of the FLOPs)
EXIT_PLACES = ("flops", "latency")
DROP_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)   # thresholds fitted at these shares of what the candidate may lose
SLOW_RUNGS = ("int16x8",)         # reference kernels: never faster than int8 (DESIGN.md); kept for size only


@dataclass(frozen=True)
class Candidate:
    exits: int = 0                # 0: none, NATIVE: the model's own, N > 0: auto:N heads
    prune: Optional[float] = None  # FLOPs fraction kept, None: not pruned
    precision: str = "int8"       # a uniform rung or "adaptive:<objective>"
    place: str = "flops"          # auto:N heads at fractions of the FLOPs or of the measured latency

    @property
    def key(self) -> str:
        exits = "native" if self.exits == NATIVE else "auto{}".format(self.exits) if self.exits else "none"
        exits += "@latency" if self.exits > 0 and self.place == "latency" else ""
        return "exits={} prune={} precision={}".format(exits, "-" if self.prune is None else "{:g}".format(
            self.prune), self.precision)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Candidate":
        return cls(int(d["exits"]), None if d.get("prune") is None else float(d["prune"]), str(d["precision"]),
                   str(d.get("place", "flops")))


@dataclass(frozen=True)
class Budget:
    metric: str                   # one of BUDGETS
    limit: float                  # in the metric's unit, or a fraction of the baseline's when relative
    relative: bool = False        # limit x the uniform int8 full-depth baseline, measured in the same run

    def check(self) -> "Budget":
        if self.metric not in BUDGETS:
            raise ConfigError("budget {!r}; allowed: {}".format(self.metric, ", ".join(BUDGETS)))
        if isinstance(self.limit, bool) or not self.limit > 0 or (self.relative and self.limit > 1):
            raise ConfigError("{} {}: allowed a number above 0{}".format(
                FLAGS[self.metric], self.text(), ", or a percentage of the baseline from 0 to 100%"))
        return self

    def text(self) -> str:
        return "{:g}%".format(100 * self.limit) if self.relative else "{!r}".format(self.limit)

    def describe(self) -> str:
        return " ({} of uniform int8 at full depth, measured in this run)".format(self.text()) if self.relative \
            else ""

    def resolve(self, baseline: Optional[float]) -> float:
        """The limit in the metric's unit: a relative budget takes the baseline measured with the candidates."""
        if not self.relative:
            return float(self.limit)
        if baseline is None:
            raise ConfigError("{} {}: the baseline was not measured in this run".format(FLAGS[self.metric],
                                                                                       self.text()))
        return float(self.limit) * float(baseline)


@dataclass(frozen=True)
class SearchSpace:
    exit_counts: Tuple[int, ...] = EXIT_COUNTS
    exit_places: Tuple[str, ...] = EXIT_PLACES
    prune_fractions: Tuple[float, ...] = PRUNE_FRACTIONS
    precisions: Optional[Tuple[str, ...]] = None     # None: every uniform rung the target runs
    drop_shares: Tuple[float, ...] = DROP_SHARES
    max_combinations: int = 4     # conversions of combined techniques, in the proxies' order
    verify: int = 3               # operating points timed end to end before choosing
    recover_epochs: int = 5       # pruning: distillation fine-tune epochs
    head_epochs: int = 40         # exits: most epochs per head

    def check(self) -> "SearchSpace":
        if any(not 1 <= n <= 8 for n in self.exit_counts):
            raise ConfigError("exit counts {}: allowed 1 to 8".format(self.exit_counts))
        if not self.exit_places or any(p not in EXIT_PLACES for p in self.exit_places):
            raise ConfigError("exit placements {!r}: allowed at least one of {}".format(
                ",".join(self.exit_places), ", ".join(EXIT_PLACES)))
        if any(not 0.0 < p < 1.0 for p in self.prune_fractions):
            raise ConfigError("prune fractions {}: allowed in (0, 1)".format(self.prune_fractions))
        if not self.drop_shares or any(not 0.0 <= s <= 1.0 for s in self.drop_shares):
            raise ConfigError("drop shares {}: allowed in [0, 1], at least one".format(self.drop_shares))
        if self.max_combinations < 0 or self.verify < 1 or self.recover_epochs < 0 or self.head_epochs < 1:
            raise ConfigError("search space {}: allowed max_combinations >= 0, verify >= 1, recover_epochs >= 0, "
                              "head_epochs >= 1".format(asdict(self)))
        return self


@dataclass(frozen=True)
class OptimizeOptions:
    model_path: str
    target: str
    calib_path: str
    eval_path: str
    out_dir: str
    budget: Budget
    max_drop: float = 0.01
    board: Any = None             # an edgekit.deploy Board: costs measured there, over SSH
    cache_dir: Optional[str] = None   # None: ~/.cache/edgekit/optimize
    space: SearchSpace = field(default_factory=SearchSpace)


def rungs(space: SearchSpace, target: Any, budget: Budget) -> List[str]:
    """The precision plans tried alone: the target's uniform rungs. When latency or energy counts, rungs that
    cannot be faster are left out: int16x8 (reference kernels) and float16 where the cores do not compute in fp16
    (it halves size, not time). Adaptive precision only for size: its latency objective is no faster than the
    fastest uniform rung by its own contract."""
    if space.precisions is not None:
        bad = [p for p in space.precisions if p not in target.precisions and p != "adaptive:size"]
        if bad:
            raise ConfigError("precisions {} are not run by {}; allowed: {}".format(
                ", ".join(bad), target.name, ", ".join(target.precisions)))
        return list(space.precisions)
    size = budget.metric == "size_bytes"
    out = [p for p in target.precisions if size or (p not in SLOW_RUNGS and (p != "float16" or target.fp16_compute))]
    return out + (["adaptive:size"] if budget.metric == "size_bytes" else [])
