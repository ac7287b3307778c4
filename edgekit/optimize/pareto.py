"""Operating points, the Pareto front (accuracy up, cost down) and the choice within a budget."""
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgekit.optimize.space import Candidate


@dataclass(frozen=True)
class Point:
    """One candidate at one set of thresholds, measured on the eval data."""
    candidate: Candidate
    drop_share: Optional[float]   # thresholds fitted at this share of the allowed drop; None: full depth
    thresholds: Tuple[float, ...]
    accuracy: float               # on --eval
    latency_ms: float             # expected from the stage costs, or measured end to end (latency_from)
    latency_from: str             # "end to end", "stage costs", or "modelled: stage costs + overhead"
    energy_mj: float
    energy_kind: str              # "estimated" | "measured"
    size_bytes: int
    exit_fractions: Tuple[float, ...]
    costs_measured_on: str        # converting-machine | board

    @property
    def name(self) -> str:
        return "{} thresholds={}".format(self.candidate.key, "full-depth" if self.drop_share is None else
                                         "{:g}xD".format(self.drop_share))

    def techniques(self, baseline: Candidate) -> Tuple[str, ...]:
        """What this point uses beyond the baseline: exits (thresholds that let samples leave early), pruning,
        another precision."""
        used = (("exits", self.drop_share is not None), ("pruning", self.candidate.prune is not None),
                ("precision", self.candidate.precision != baseline.precision))
        return tuple(name for name, on in used if on)

    def metric(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["candidate"] = self.candidate.to_dict()
        d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Point":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["candidate"] = Candidate.from_dict(d["candidate"])
        kw["thresholds"] = tuple(kw["thresholds"])
        kw["exit_fractions"] = tuple(kw["exit_fractions"])
        return cls(**kw)


def dominates(a: Point, b: Point, metric: str) -> bool:
    return a.accuracy >= b.accuracy and a.metric(metric) <= b.metric(metric) and \
        (a.accuracy > b.accuracy or a.metric(metric) < b.metric(metric))


def pareto_front(points: Sequence[Point], metric: str) -> List[Point]:
    """The points no other point dominates, cheapest first; of equal points the first is kept."""
    front: List[Point] = []
    for i, p in enumerate(points):
        if any(dominates(q, p, metric) for q in points):
            continue
        if any(q.accuracy == p.accuracy and q.metric(metric) == p.metric(metric) for q in front):
            continue
        front.append(p)
    return sorted(front, key=lambda p: (p.metric(metric), -p.accuracy))


def feasible(points: Sequence[Point], min_accuracy: float) -> List[Point]:
    return [p for p in points if p.accuracy >= min_accuracy - 1e-12]


def choose(points: Sequence[Point], metric: str, limit: float, min_accuracy: float) -> Tuple[Optional[Point], Point]:
    """(the cheapest point within the accuracy constraint and the budget, or None; the closest point): the
    closest is the cheapest accurate-enough point when there is one, else the most accurate."""
    ok = sorted(feasible(points, min_accuracy), key=lambda p: (p.metric(metric), -p.accuracy))
    closest = ok[0] if ok else max(points, key=lambda p: (p.accuracy, -p.metric(metric)))
    chosen = ok[0] if ok and ok[0].metric(metric) <= limit else None
    return chosen, closest


def best_single(points: Sequence[Point], metric: str, min_accuracy: float, baseline: Candidate,
                technique: str) -> Optional[Point]:
    """The cheapest accurate-enough point that uses exactly one technique, `technique`."""
    ok = [p for p in feasible(points, min_accuracy) if p.techniques(baseline) == (technique,)]
    return min(ok, key=lambda p: (p.metric(metric), -p.accuracy)) if ok else None
