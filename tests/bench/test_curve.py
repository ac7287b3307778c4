"""The accuracy-latency curve: exit decisions from recorded scores match what the runner does."""
import numpy as np
import pytest

from edgekit.bench.curve import accuracy_latency, exit_table, exits_for, point, sweep_grid
from edgekit.runtime import EarlyExitRunner, evaluate


def test_exit_decisions_and_latency_by_hand():
    scores = np.array([[0.95, 0.99, 0.5], [0.3, 0.8, 0.7], [0.2, 0.4, 0.9]])
    preds = np.array([[1, 1, 1], [2, 0, 0], [3, 3, 2]])
    y = np.array([1, 0, 2])
    assert exits_for(scores, [0.9, 0.9, 0.9]).tolist() == [0, 2, 2]
    assert exits_for(scores, [0.5, 0.5, 0.0]).tolist() == [0, 1, 2]
    p = point(scores, preds, y, [1.0, 2.0, 4.0], [0.5, 0.5, 0.0])
    # exits 0, 1, 2 -> cumulative 1, 3, 7 ms; predictions 1, 0, 2 all right
    assert p["estimated_ms"] == pytest.approx((1 + 3 + 7) / 3.0)
    assert p["accuracy"] == 1.0 and p["exit_histogram"] == [1, 1, 1]
    # at 0.25: sample 1 leaves at exit 0 saying 2 (wrong), sample 2 at exit 1 saying 3 (wrong)
    p = point(scores, preds, y, [1.0, 2.0, 4.0], [0.25, 0.25, 0.0])
    assert p["exit_histogram"] == [2, 1, 0] and p["accuracy"] == pytest.approx(1 / 3.0)
    assert p["estimated_ms"] == pytest.approx((1 + 1 + 3) / 3.0)
    assert point(scores, preds, None, [1.0, 2.0, 4.0], [0.0] * 3)["accuracy"] is None
    grid = sweep_grid(scores)
    assert grid[0] == pytest.approx(0.2) and grid[-1] > 0.99 and grid == sorted(grid)
    assert exits_for(scores, [grid[-1]] * 3).tolist() == [2, 2, 2]
    assert exits_for(scores, [grid[0]] * 3).tolist() == [0, 0, 0]


def test_chosen_point_is_what_the_runner_does(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("float32", "host-x86_64"))
    x, y = test_split.x[:200], test_split.y[:200]
    scores, preds = exit_table(runner, x)
    assert scores.shape == preds.shape == (200, 3)
    full = evaluate(runner, x, y, full_depth=True)
    assert preds[:, 2].tolist() == full["predictions"]
    curve = accuracy_latency(runner, x, y, [1.0, 2.0, 30.0])
    early = evaluate(runner, x, y)
    chosen = curve["chosen"]
    assert chosen["thresholds"] == runner.thresholds()
    assert chosen["exit_histogram"] == early["exit_histogram"]
    assert chosen["accuracy"] == pytest.approx(early["accuracy"], abs=1.0 / len(x))
    pts = curve["points"]
    assert pts[0]["exit_histogram"] == [200, 0, 0] and pts[-1]["exit_histogram"] == [0, 0, 200]
    assert pts[-1]["accuracy"] == pytest.approx(full["accuracy"]) and pts[-1]["estimated_ms"] == pytest.approx(33.0)
    assert pts[0]["accuracy"] == pytest.approx(curve["exit_accuracy"][0])
    assert [p["estimated_ms"] for p in pts] == sorted(p["estimated_ms"] for p in pts)   # higher bar, later exits
