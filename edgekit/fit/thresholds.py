"""Fit per-exit thresholds to an accuracy target on the quantized stages that will actually run.

Every stage runs once on labelled (or unlabelled) calibration data; per exit we keep the exit-rule score
and whether the exit is right (the label, or agreement with the last exit when there are no labels).
The thresholds are searched jointly (all combinations of per-exit candidates when that is small enough,
coordinate descent otherwise) for the least expected cost (cumulative stage latency from the bundle)
subject to accuracy >= full-depth accuracy - max_drop. numpy only; no TensorFlow.
"""
import itertools
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import ConfigError, DataError

NEVER = 1e9                   # a threshold no score reaches: the exit is never taken (finite for JSON)
CANDIDATES = 48               # score quantiles tried per exit
EXHAUSTIVE_LIMIT = 200000     # combinations searched exhaustively; beyond, coordinate descent
OBJECTIVES = ("auto", "accuracy", "agreement")
DEFAULT_Z = 2.0               # margin on the accuracy constraint, in standard errors (see _evaluate)


@dataclass(frozen=True)
class OperatingPoint:
    thresholds: Tuple[float, ...]     # one per early exit (the last exit always answers)
    accuracy: float
    cost_ms: float
    exit_fractions: Tuple[float, ...]


@dataclass(frozen=True)
class Fit:
    chosen: OperatingPoint
    full_depth: OperatingPoint
    oracle_cost_ms: float
    target_accuracy: float
    curve: Tuple[OperatingPoint, ...]         # cost-accuracy Pareto front of the points searched
    bounds: Tuple[Tuple[float, float], ...]   # per early exit: thresholds a load controller may use

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["chosen_vs_oracle_cost"] = self.chosen.cost_ms / self.oracle_cost_ms if self.oracle_cost_ms else None
        return d


def check_drop(max_drop: float) -> float:
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0.0 <= max_drop <= 1.0:
        raise ConfigError("max accuracy drop must be within [0, 1], got {!r}".format(max_drop))
    return float(max_drop)


def correctness(preds: np.ndarray, labels: Optional[np.ndarray], objective: str) -> np.ndarray:
    """(K, N) booleans: exit k is right on sample i (label match, or agreement with the last exit)."""
    if objective not in OBJECTIVES:
        raise ConfigError("unknown objective {!r}; allowed: {}".format(objective, ", ".join(OBJECTIVES)))
    if objective == "accuracy" and labels is None:
        raise DataError("objective 'accuracy' needs labels (y) in the calibration data; give labelled data or use "
                        "--objective agreement")
    if labels is not None and objective != "agreement":
        return preds == np.asarray(labels)[None, :]
    return preds == preds[-1][None, :]


def _evaluate(ths: np.ndarray, scores: np.ndarray, right: np.ndarray, cum: np.ndarray, z: float = 0.0):
    """ths: (M, K-1) threshold combinations -> (accuracy (M,), cost (M,), exit index (M, N)).

    With z > 0 the accuracy is a lower confidence bound: the measured accuracy minus z standard errors
    of its paired difference to full depth (sqrt(disagreements / N)), so that a fit on a few hundred
    samples still holds on new data."""
    k_last = scores.shape[0] - 1
    take = scores[None, :k_last, :] >= ths[:, :, None]                      # (M, K-1, N)
    first = np.where(take.any(axis=1), take.argmax(axis=1), k_last)         # (M, N)
    n_idx = np.arange(scores.shape[1])[None, :]
    hits = right[first, n_idx]
    acc = hits.mean(axis=1)
    if z > 0:
        acc = acc - z * np.sqrt((hits != right[k_last][None, :]).mean(axis=1) / scores.shape[1])
    cost = cum[first].mean(axis=1)
    return acc, cost, first


def _point(ths: Sequence[float], scores, right, cum) -> OperatingPoint:
    acc, cost, first = _evaluate(np.asarray([ths], dtype=np.float64), scores, right, cum)
    fractions = np.bincount(first[0], minlength=scores.shape[0]) / float(scores.shape[1])
    return OperatingPoint(tuple(float(t) for t in ths), float(acc[0]), float(cost[0]),
                          tuple(float(f) for f in fractions))


def _candidates(scores: np.ndarray) -> List[np.ndarray]:
    out = []
    for s in scores[:-1]:
        q = np.unique(np.quantile(s, np.linspace(0.0, 1.0, CANDIDATES)))
        out.append(np.concatenate([q, [NEVER]]))
    return out


def _search(cands: List[np.ndarray], scores, right, cum, target: float, z: float):
    """All feasible (accuracy, cost, thresholds) evaluated, exhaustive or by coordinate descent."""
    total = int(np.prod([len(c) for c in cands]))
    if total <= EXHAUSTIVE_LIMIT:
        combos = np.array(list(itertools.product(*cands)), dtype=np.float64)
        accs, costs = [], []
        for i in range(0, len(combos), 4096):
            a, c, _ = _evaluate(combos[i:i + 4096], scores, right, cum, z)
            accs.append(a)
            costs.append(c)
        return combos, np.concatenate(accs), np.concatenate(costs)
    current = np.array([NEVER] * len(cands))
    seen_t, seen_a, seen_c = [], [], []
    for _ in range(6):
        changed = False
        for j, cand in enumerate(cands):
            trial = np.repeat(current[None, :], len(cand), axis=0)
            trial[:, j] = cand
            a, c, _ = _evaluate(trial, scores, right, cum, z)
            seen_t.append(trial)
            seen_a.append(a)
            seen_c.append(c)
            ok = np.where(a >= target - 1e-12, c, np.inf)
            best = int(np.argmin(ok))
            if np.isfinite(ok[best]) and trial[best, j] != current[j]:
                current, changed = trial[best].copy(), True
        if not changed:
            break
    return np.concatenate(seen_t), np.concatenate(seen_a), np.concatenate(seen_c)


def _pareto(combos, accs, costs, limit: int = 40) -> List[int]:
    order = np.lexsort((-accs, costs))
    front, best_acc = [], -1.0
    for i in order:
        if accs[i] > best_acc + 1e-12:
            front.append(int(i))
            best_acc = accs[i]
    if len(front) > limit:
        front = [front[int(round(j))] for j in np.linspace(0, len(front) - 1, limit)]
    return front


def fit_thresholds(scores: np.ndarray, right: np.ndarray, stage_costs: Sequence[float],
                   max_drop: float, z: float = DEFAULT_Z) -> Fit:
    """scores, right: (K, N) per exit and sample; stage_costs: K per-stage latencies (ms).
    z: standard errors of margin on the accuracy constraint (0 = fit the calibration data exactly)."""
    max_drop = check_drop(max_drop)
    k = scores.shape[0]
    if k < 2:
        raise ConfigError("the bundle has a single stage and no early exit; thresholds need at least two exits")
    cum = np.cumsum(np.asarray(stage_costs, dtype=np.float64))
    full = _point([NEVER] * (k - 1), scores, right, cum)
    target = full.accuracy - max_drop
    combos, accs, costs = _search(_candidates(scores), scores, right, cum, target, z)

    def best_at(tgt: float) -> np.ndarray:
        feasible = np.where(accs >= tgt - 1e-12, costs, np.inf)
        if not np.isfinite(feasible).any():
            return np.array([NEVER] * (k - 1))
        i = int(np.argmin(feasible + 1e-9 * (1.0 - accs)))   # ties: the more accurate one
        return combos[i]

    chosen = _point(best_at(target), scores, right, cum)
    loose = best_at(full.accuracy - min(1.0, 3 * max_drop))
    tight = best_at(full.accuracy)
    bounds = tuple((float(min(a, b, c)), float(max(a, b, c))) for a, b, c in zip(loose, tight, chosen.thresholds))
    first_right = np.where(right.any(axis=0), right.argmax(axis=0), k - 1)
    return Fit(chosen=chosen, full_depth=full, oracle_cost_ms=float(cum[first_right].mean()),
               target_accuracy=float(target),
               curve=tuple(_point(combos[i], scores, right, cum) for i in _pareto(combos, accs, costs)),
               bounds=bounds)


def apply_thresholds(thresholds: Sequence[float], scores: np.ndarray, right: np.ndarray,
                     stage_costs: Sequence[float]) -> OperatingPoint:
    """The operating point that given thresholds reach on other data (e.g. a held-out split)."""
    return _point(thresholds, scores, right, np.cumsum(np.asarray(stage_costs, dtype=np.float64)))
