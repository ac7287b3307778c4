"""Layer-adaptive allocation: choose per-group channel counts that minimise total output distortion
under a global budget, exactly, by dynamic programming over the discretised budget.

Each prunable group g has a few options (channel counts from the ratio grid, rounded to the channel
multiple), each with a measured distortion d_g and a saving s_g (the budget quantity removed when g alone
is pruned that far). Distortions are taken as additive across groups (as in "Efficient Joint Optimization
of Layer-Adaptive Weight Pruning in Deep Neural Networks"); `dp_allocate` then solves

    minimise sum_g d_g(o_g)  subject to  sum_g floor(s_g(o_g) / unit) >= resolution,  unit = need / resolution

exactly (a multiple-choice knapsack). Savings of two groups on one conv overlap (removing its inputs and
its outputs saves less than the two savings added), so `solve` searches the needed saving by bisection
until the *exact* cost of the allocation (the cost model, evaluated jointly) meets the budget.
The uniform baseline prunes every group by the same ratio, again the smallest that meets the budget.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import ConfigError


def round_channels(channels: int, keep_fraction: float, multiple: int) -> int:
    """Channels kept: a multiple of `multiple` (or all of them), at least one multiple, at most all."""
    if channels <= multiple or keep_fraction >= 1.0:
        return channels
    k = int(round(channels * keep_fraction / multiple)) * multiple
    return int(min(channels, max(multiple, k)))


def keep_options(channels: int, ratios: Sequence[float], multiple: int) -> np.ndarray:
    """Distinct channel counts for the ratio grid (always including all channels), largest first."""
    ks = {channels} | {round_channels(channels, 1.0 - r, multiple) for r in ratios}
    return np.asarray(sorted(ks, reverse=True), dtype=np.int64)


@dataclass(frozen=True)
class Table:
    group: int
    channels: int
    keeps: np.ndarray          # channel counts, one per option
    distortion: np.ndarray     # measured, one per option
    saving: np.ndarray         # budget quantity saved when this group alone is pruned to that count


def dp_allocate(distortion: Sequence[np.ndarray], saving: Sequence[np.ndarray], need: float,
                resolution: int = 1000) -> Optional[Tuple[int, ...]]:
    """Option index per group minimising total distortion with total discretised saving >= need.
    None when even the largest savings fall short."""
    if need <= 0:
        return tuple(int(np.argmin(d)) for d in distortion)
    unit = need / resolution
    width = resolution + 1
    best = np.full(width, np.inf)
    best[0] = 0.0
    picks: List[np.ndarray] = []
    prevs: List[np.ndarray] = []
    top = resolution
    for d, s in zip(distortion, saving):
        units = np.clip(np.floor(np.asarray(s, np.float64) / unit + 1e-9), 0, resolution).astype(np.int64)
        nxt = np.full(width, np.inf)
        pick = np.full(width, -1, dtype=np.int64)
        prev = np.full(width, -1, dtype=np.int64)
        for o, (u, dv) in enumerate(zip(units, d)):
            cand = best + float(dv)
            seg = cand[:top - u]                        # b + u below the cap: one target each
            idx = np.flatnonzero(seg < nxt[u:top])
            nxt[u + idx], pick[u + idx], prev[u + idx] = seg[idx], o, idx
            tail = cand[top - u:]                       # b + u at or past the cap: all land on `top`
            j = int(np.argmin(tail))
            if tail[j] < nxt[top]:
                nxt[top], pick[top], prev[top] = tail[j], o, top - u + j
        best = nxt
        picks.append(pick)
        prevs.append(prev)
    if not np.isfinite(best[resolution]):
        return None
    choice, b = [], resolution
    for pick, prev in zip(reversed(picks), reversed(prevs)):
        choice.append(int(pick[b]))
        b = int(prev[b])
    return tuple(reversed(choice))


def check_reachable(smallest: float, full: float, target: float) -> None:
    """The budget must be reachable with every prunable group at its smallest option."""
    if smallest > target:
        raise ConfigError("a budget of {:.1%} of the model's {:.4g} cannot be met: pruning every prunable group as "
                          "far as allowed still leaves {:.1%}; allowed: a fraction >= {:.3f}".format(
                              target / full, full, smallest / full, smallest / full))


Exact = Callable[[Sequence[int]], float]       # channel counts per table -> exact budget cost


def solve(tables: Sequence[Table], exact: Exact, full: float, target: float,
          resolution: int = 1000) -> Tuple[int, ...]:
    """DP allocation (channel count per table) whose exact cost is <= target, found by bisection on
    the needed discretised saving."""
    check_reachable(exact([int(t.keeps[-1]) for t in tables]), full, target)
    dists = [t.distortion for t in tables]
    saves = [t.saving for t in tables]

    def attempt(need: float) -> Optional[Tuple[int, ...]]:
        choice = dp_allocate(dists, saves, need, resolution)
        if choice is None:
            return None
        keeps = tuple(int(t.keeps[o]) for t, o in zip(tables, choice))
        return keeps if exact(keeps) <= target else None

    lo, hi = max(0.0, full - target), float(sum(np.max(s) for s in saves))
    found = attempt(lo)
    if found is not None:
        return found
    found = attempt(hi) or tuple(int(t.keeps[-1]) for t in tables)
    for _ in range(30):
        if hi - lo <= max(full, 1.0) * 1e-6:
            break
        mid = 0.5 * (lo + hi)
        got = attempt(mid)
        if got is None:
            lo = mid
        else:
            hi, found = mid, got
    return found


def solve_uniform(tables: Sequence[Table], exact: Exact, full: float, target: float, multiple: int,
                  max_ratio: float) -> Tuple[float, Tuple[int, ...]]:
    """The smallest single ratio (channel counts rounded the same way) whose exact cost is <= target."""
    def keeps(r: float) -> Tuple[int, ...]:
        return tuple(round_channels(t.channels, 1.0 - r, multiple) for t in tables)

    if exact(keeps(0.0)) <= target:
        return 0.0, keeps(0.0)
    lo, hi = 0.0, max_ratio
    if exact(keeps(hi)) > target:
        hi = 1.0
        if exact(keeps(hi)) > target:
            raise ConfigError("uniform pruning cannot meet a budget of {:.1%}".format(target / full))
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if exact(keeps(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return hi, keeps(hi)
