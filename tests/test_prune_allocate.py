"""The allocator: exact DP against brute force, channel rounding, the bisection onto the exact budget, and
the uniform baseline."""
import itertools
from typing import Optional, Sequence, Tuple

import numpy as np
import pytest

from edgekit.convert.pruning.allocate import Table, dp_allocate, keep_options, round_channels, solve, solve_uniform
from edgekit.errors import ConfigError


def brute_force(distortion: Sequence[np.ndarray], saving: Sequence[np.ndarray], need: float,
                resolution: int = 1000) -> Optional[Tuple[float, Tuple[int, ...]]]:
    """The oracle: (best total distortion, choice) by enumerating every combination."""
    unit = need / resolution
    best = None
    for combo in itertools.product(*[range(len(d)) for d in distortion]):
        units = resolution if need <= 0 else sum(
            min(resolution, int(np.floor(s[o] / unit + 1e-9))) for s, o in zip(saving, combo))
        if units >= resolution:
            total = float(sum(d[o] for d, o in zip(distortion, combo)))
            if best is None or total < best[0]:
                best = (total, combo)
    return best


def _case(rng):
    groups = rng.randint(1, 5)
    dist = [np.concatenate([[0.0], np.sort(rng.rand(rng.randint(1, 5)))]) for _ in range(groups)]
    save = [np.concatenate([[0.0], np.sort(rng.rand(len(d) - 1) * 10)]) for d in dist]
    need = rng.rand() * sum(s.max() for s in save) * 1.1
    return dist, save, need, int(rng.choice([1, 4, 10, 100]))


def test_dp_matches_brute_force_on_small_cases():
    rng = np.random.RandomState(0)
    feasible = 0
    for _ in range(400):
        dist, save, need, res = _case(rng)
        got, ref = dp_allocate(dist, save, need, res), brute_force(dist, save, need, res)
        if ref is None:
            assert got is None
            continue
        feasible += 1
        total = sum(d[o] for d, o in zip(dist, got))
        assert total == pytest.approx(ref[0], abs=1e-12)
        unit = need / res
        assert sum(min(res, int(np.floor(s[o] / unit + 1e-9))) for s, o in zip(save, got)) >= res
    assert feasible > 100


def test_dp_prefers_the_cheap_distortion_for_the_same_saving():
    dist = [np.array([0.0, 5.0]), np.array([0.0, 1.0])]
    save = [np.array([0.0, 10.0]), np.array([0.0, 10.0])]
    assert dp_allocate(dist, save, 10.0) == (0, 1)
    assert dp_allocate(dist, save, 15.0) == (1, 1)
    assert dp_allocate(dist, save, 25.0) is None
    assert dp_allocate(dist, save, 0.0) == (0, 0)


def test_round_channels_to_the_multiple():
    assert round_channels(128, 0.5, 8) == 64
    assert round_channels(128, 0.52, 8) == 64
    assert round_channels(100, 0.97, 8) == 96
    assert round_channels(100, 0.999, 8) == 96 and round_channels(100, 1.0, 8) == 100
    assert round_channels(20, 0.01, 8) == 8                  # never below one multiple
    assert round_channels(6, 0.5, 8) == 6                    # narrower than the multiple: untouched
    assert keep_options(16, (0.25, 0.5, 0.75), 8).tolist() == [16, 8]
    assert keep_options(24, (0.5,), 1).tolist() == [24, 12]
    for k in keep_options(200, (0.1, 0.3, 0.5, 0.7, 0.9), 8):
        assert k % 8 == 0 or k == 200


def _tables():
    # two groups on one conv: cost = 100 * fa * fb + 50 * fa + 30 * fb (bilinear, like a conv between them)
    keeps = np.array([8, 6, 4, 2])
    ta = Table(0, 8, keeps, np.array([0.0, 0.1, 0.5, 2.0]), np.zeros(4))
    tb = Table(1, 8, keeps, np.array([0.0, 0.3, 0.4, 0.6]), np.zeros(4))

    def exact(ks):
        fa, fb = ks[0] / 8, ks[1] / 8
        return 100 * fa * fb + 50 * fa + 30 * fb

    full = exact((8, 8))
    for t, other in ((ta, 1), (tb, 0)):
        t.saving[:] = [full - exact((k, 8) if other == 1 else (8, k)) for k in keeps]
    return [ta, tb], exact, full


def test_solve_meets_the_exact_budget_and_is_optimal_among_the_grid():
    import itertools

    tables, exact, full = _tables()
    for frac in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35):
        keeps = solve(tables, exact, full, frac * full, resolution=200)
        assert exact(keeps) <= frac * full
        best = min(sum(t.distortion[list(t.keeps).index(k)] for t, k in zip(tables, combo))
                   for combo in itertools.product(*[t.keeps for t in tables]) if exact(combo) <= frac * full)
        got = sum(t.distortion[list(t.keeps).index(k)] for t, k in zip(tables, keeps))
        assert got == pytest.approx(best)     # here the bisection finds the exact optimum of the grid
    with pytest.raises(ConfigError, match="cannot be met"):
        solve(tables, exact, full, 0.01 * full)


def test_uniform_baseline_uses_one_ratio():
    tables, exact, full = _tables()
    ratio, keeps = solve_uniform(tables, exact, full, 0.5 * full, 2, 0.9)
    assert keeps[0] == keeps[1] and exact(keeps) <= 0.5 * full
    smaller = tuple(round_channels(8, 1 - ratio + 0.15, 2) for _ in tables)
    assert exact(smaller) > 0.5 * full or smaller == keeps
