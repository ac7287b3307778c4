"""Budget mode on fixed stage costs and a fake clock: a budget at the full-depth cost stops nobody, a tighter
one stops the samples that need the last stage and says how many, a stalled call answers early.

Stage costs are written into a real two-stage bundle; each stage call advances the fake clock by its cost, so
nothing here depends on how fast this machine is.
"""
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.runtime import EarlyExitRunner, evaluate
from edgekit.runtime.budget import LATE, SLACK, run_with_budget
from edgekit.runtime.costs import STEP, StageCosts
from edgekit.runtime.policy import max_softmax
from edgekit.runtime.runner import exit_outputs
from tests.bundle_edit import edit_manifest
from tests.deploy.bundles import IN_DIM, tflite_stages, write_bundle

COSTS = (1.0, 4.0)       # ms, written into the bundle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    write_bundle(root / "b", tflite_stages(root)[0], threshold=0.6)

    scores = max_softmax(exit_outputs(EarlyExitRunner(str(root / "b")), _x())[0][0])

    def fix(d):
        for st, ms in zip(d["stages"], COSTS):
            st["latency_ms"] = ms
        d["stages"][0]["exit"]["threshold"] = float(np.median(scores))   # half the samples need the last stage
    edit_manifest(str(root / "b"), fix)
    return str(root / "b")


def _timed(runner, clock, stall_ms=0.0):
    """Each stage call advances the fake clock by the stage's fixed cost (plus a stall on stage 0)."""
    real = runner.invoke_stage

    def invoke(k, values, fetch):
        clock.now += (COSTS[k] + (stall_ms if k == 0 else 0.0)) / 1000.0
        return real(k, values, fetch)
    runner.invoke_stage = invoke
    return runner


def _x(n=40):
    return np.random.default_rng(3).normal(size=(n, IN_DIM)).astype(np.float32)


def _budgeted(runner, clock, x, budget, stall_ms=0.0):
    _timed(runner, clock, stall_ms)
    out = [run_with_budget(runner, x[i:i + 1], runner.thresholds(), budget, False, clock=clock) for i in range(len(x))]
    return np.concatenate([r.exits for r in out]), np.concatenate([r.predictions for r in out]), \
        sum(r.stopped for r in out)


def test_a_budget_at_the_full_depth_cost_stops_nobody(bundle):
    runner = EarlyExitRunner(bundle)
    x = _x()
    plain = runner.run(x)
    assert 0 < int((plain.exits == 1).sum()) < len(x)            # some samples need the last stage
    exits, preds, stopped = _budgeted(runner, FakeClock(), x, sum(COSTS))
    assert stopped == 0
    assert exits.tolist() == plain.exits.tolist() and preds.tolist() == plain.predictions.tolist()


def test_a_tighter_budget_stops_the_samples_that_need_the_last_stage_and_counts_them(bundle):
    runner = EarlyExitRunner(bundle)
    x = _x()
    need_last = int((runner.run(x).exits == 1).sum())
    budget = sum(COSTS) / (1.0 + SLACK) - 0.01                  # the last stage no longer fits, even with SLACK
    exits, _, stopped = _budgeted(runner, FakeClock(), x, budget)
    assert stopped == need_last and exits.tolist() == [0] * len(x)


def test_a_stalled_call_answers_early_instead_of_overrunning(bundle):
    runner = EarlyExitRunner(bundle)
    x = _x(10)
    need_last = int((runner.run(x).exits == 1).sum())
    stall = (LATE + 0.01) * sum(COSTS)                           # stage 0 stalls: the call is now running late
    exits, _, stopped = _budgeted(runner, FakeClock(), x, sum(COSTS), stall_ms=stall)
    assert stopped == need_last and exits.tolist() == [0] * len(x)


def test_one_stall_moves_the_learnt_cost_by_one_step_only():
    costs = StageCosts([1.0, 4.0])
    costs.observe(1, 400.0)
    assert costs.predict(1) == pytest.approx(4.0 * (1 + STEP))
    for _ in range(200):                                          # a machine that really became 3x slower
        costs.observe(1, 12.0)
    assert costs.predict(1, 2) == pytest.approx(24.0, rel=STEP * 2)


def test_run_with_a_budget_says_how_many_samples_it_stopped(bundle, tmp_path):
    x = _x()
    np.savez(tmp_path / "x.npz", x=x)
    runner = EarlyExitRunner(bundle)
    ev = evaluate(runner, x, budget_ms=1000.0)
    assert ev["budget_stopped"] == 0 and "budget_stopped" not in evaluate(runner, x)
    got = CliRunner().invoke(main, ["run", bundle, str(tmp_path / "x.npz"), "--budget-ms", "1000"])
    assert got.exit_code == 0, got.output
    assert "budget 1000 ms stopped 0 of 40 samples before their exit's threshold was reached" in got.output
    copy = str(tmp_path / "b")
    shutil.copytree(bundle, copy)
    got = CliRunner().invoke(main, ["run", copy, str(tmp_path / "x.npz"), "--threads", "1", "--json"])
    assert got.exit_code == 0 and '"exit_histogram"' in got.output
