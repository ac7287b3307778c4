"""Threshold fitting, exit rules, budget/anytime modes, the load controller, and bad inputs."""
import json
import os
import shutil
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.fit.threshold_fit import CalibrateOptions, calibrate
from edgekit.fit.thresholds import NEVER, apply_thresholds, fit_thresholds
from edgekit.errors import ConfigError, DataError
from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.controller import LoadController
from edgekit.runtime.policy import entropy, margin, max_softmax
from edgekit.fit.provenance import HELD_OUT
from tests.bundle_edit import set_stage_costs
from tests.conftest import CALIB, TEST

VAL = TEST.replace("digits_test", "digits_val")


def _synthetic(n=2000, seed=0):
    """Exit 0 is right exactly when its score > 0.7, exit 1 when its score > 0.4; the last is always right."""
    rng = np.random.default_rng(seed)
    scores = rng.random((3, n))
    right = np.stack([scores[0] > 0.7, scores[1] > 0.4, np.ones(n, bool)])
    return scores, right


def test_fit_finds_the_known_answer_and_meets_the_constraint():
    scores, right = _synthetic()
    fit = fit_thresholds(scores, right, [1.0, 1.0, 10.0], max_drop=0.0, z=0.0)
    assert fit.chosen.accuracy == 1.0
    t0, t1 = fit.chosen.thresholds
    assert 0.7 <= t0 < 0.73 and 0.4 <= t1 < 0.43       # the lowest candidates that keep every answer right
    assert fit.chosen.cost_ms < fit.full_depth.cost_ms
    # the oracle exits at the first right exit: it can only be cheaper or equal
    assert fit.oracle_cost_ms <= fit.chosen.cost_ms


def test_fit_is_joint_not_one_shared_threshold():
    scores, right = _synthetic()
    fit = fit_thresholds(scores, right, [1.0, 1.0, 10.0], max_drop=0.0, z=0.0)
    for shared in np.linspace(0, 1, 101):
        p = apply_thresholds([shared, shared], scores, right, [1.0, 1.0, 10.0])
        if p.accuracy >= 1.0:
            assert fit.chosen.cost_ms < p.cost_ms


def test_larger_drop_costs_less_and_keeps_its_constraint():
    scores, right = _synthetic()
    strict = fit_thresholds(scores, right, [1.0, 1.0, 10.0], 0.0, z=0.0)
    loose = fit_thresholds(scores, right, [1.0, 1.0, 10.0], 0.05, z=0.0)
    assert loose.chosen.accuracy >= 0.95 and loose.chosen.cost_ms < strict.chosen.cost_ms
    assert loose.curve[0].cost_ms <= loose.curve[-1].cost_ms


def test_margin_makes_the_fit_more_cautious():
    scores, right = _synthetic(400)
    plain = fit_thresholds(scores, right, [1.0, 1.0, 10.0], 0.02, z=0.0)
    careful = fit_thresholds(scores, right, [1.0, 1.0, 10.0], 0.02, z=2.0)
    assert careful.chosen.accuracy >= plain.chosen.accuracy
    assert careful.chosen.cost_ms >= plain.chosen.cost_ms


def test_exit_rules_on_known_logits():
    flat = np.zeros((1, 4), np.float32)
    sure = np.array([[50.0, 0.0, 0.0, 0.0]], np.float32)
    two = np.array([[5.0, 5.0, -50.0, -50.0]], np.float32)
    assert max_softmax(flat)[0] == pytest.approx(0.25) and max_softmax(sure)[0] == pytest.approx(1.0)
    assert entropy(flat)[0] == pytest.approx(0.0, abs=1e-9) and entropy(sure)[0] == pytest.approx(1.0, abs=1e-6)
    assert entropy(two)[0] == pytest.approx(0.5, abs=1e-6)          # log 2 / log 4
    assert margin(two)[0] == pytest.approx(0.0, abs=1e-9) and margin(sure)[0] == pytest.approx(1.0)


MS_PER_MFLOP = 0.01     # fixed stage costs for the demo: time proportional to FLOPs (about 3.8, 6.2, 82.6 MFLOPs)


@pytest.fixture()
def bundle(demo_bundles, tmp_path):
    """The int8 demo with fixed stage costs (proportional to FLOPs) in place of the ones measured when it was
    converted, so that what is fitted from costs is the same on every machine."""
    dst = tmp_path / "b"
    shutil.copytree(demo_bundles("int8"), dst)
    m = EarlyExitRunner(str(dst)).manifest
    set_stage_costs(str(dst), [s.flops / 1e6 * MS_PER_MFLOP for s in m.stages])
    return str(dst)


def _snapshot(path):
    return {f: open(os.path.join(path, f), "rb").read() for f in sorted(os.listdir(path))}


@pytest.mark.parametrize("rule", ["max_softmax", "entropy", "margin"])
def test_calibrate_each_rule_on_the_demo(bundle, rule):
    section = calibrate(CalibrateOptions(bundle, CALIB, 0.01, TEST, rule=rule, part=HELD_OUT))
    fit = section["fit"]
    assert section["stage_costs_ms"] == pytest.approx([s.latency_ms for s in EarlyExitRunner(bundle).manifest.stages])
    assert fit["chosen"]["accuracy"] >= fit["full_depth"]["accuracy"] - 0.01
    assert fit["chosen"]["cost_ms"] < fit["full_depth"]["cost_ms"] / 2.5
    runner = EarlyExitRunner(bundle)
    assert [s.exit.rule for s in runner.manifest.stages] == [rule] * 3
    assert runner.thresholds()[:2] == pytest.approx(list(fit["chosen"]["thresholds"]))
    reached = section["holdout"]["reached"]
    assert reached["accuracy"] >= section["holdout"]["full_depth"]["accuracy"] - 0.01
    report = json.load(open(os.path.join(bundle, "report.json")))
    assert report["thresholds"]["fit"]["curve"] and "oracle_cost_ms" in report["thresholds"]["fit"]


def test_calibrate_without_labels_uses_agreement(bundle, tmp_path):
    x = np.load(VAL)["x"]
    np.save(tmp_path / "x.npy", x)
    section = calibrate(CalibrateOptions(bundle, str(tmp_path / "x.npy"), 0.02))
    assert section["objective"] == "agreement"
    assert section["fit"]["full_depth"]["accuracy"] == 1.0


def test_learned_score_rule_end_to_end(tmp_path):
    """A non-classification network (it outputs images) with a quality head per exit exits early by it."""
    import keras

    from edgekit.convert import ConvertOptions, convert

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c0")(inp)
    e0 = keras.layers.Conv2D(1, 1, name="exit0")(a)
    q0 = keras.layers.Dense(1, activation="sigmoid", name="exit0_score")(keras.layers.GlobalAveragePooling2D()(a))
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(a)
    e1 = keras.layers.Conv2D(1, 1, name="exit1")(b)
    model = keras.Model(inp, [e0, q0, e1])
    model.save(str(tmp_path / "m.keras"))
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = convert(ConvertOptions(str(tmp_path / "m.keras"), "host-x86_64", str(tmp_path / "x.npy"),
                                 str(tmp_path / "out"), precision="float32"))
    st0 = res.manifest.stages[0]
    assert (st0.exit.rule, st0.exit.score) == ("learned", "exit0_score")
    runner = EarlyExitRunner(res.bundle_dir)
    quality = np.asarray(model(x)[1]).ravel()
    cut = float(np.median(quality))
    r = runner.run(x, thresholds=[cut])
    np.testing.assert_array_equal(r.exits, np.where(quality >= cut - 1e-6, 0, 1))
    assert r.outputs.shape == (40, 8, 8, 1)


BUDGET_STAGE_MS = (1.0, 50.0, 50.0)     # fixed stage costs: stage 0 cheap, the later stages far dearer


@pytest.fixture(scope="module")
def budget_bundle(demo_bundles, tmp_path_factory):
    """The float32 demo with fixed stage costs of very different size: budget mode decides from these
    (learnt online from there), so a budget between them decides the same way on any machine."""
    dst = str(tmp_path_factory.mktemp("budget") / "b")
    shutil.copytree(demo_bundles("float32"), dst)
    set_stage_costs(dst, BUDGET_STAGE_MS)
    return dst


NEVER_EXIT = [2.0, 2.0]     # no score reaches 2: only time (or the last exit) stops a sample
A_MINUTE_MS = 60000.0       # a budget no call comes near on any machine


def test_budget_mode_skips_a_stage_that_cannot_fit(budget_bundle):
    runner = EarlyExitRunner(budget_bundle)
    x = np.load(TEST)["x"][:1]
    full = runner.run(x, full_depth=True)
    tight = runner.run(x, thresholds=NEVER_EXIT, budget_ms=10.0)         # stage 1 is predicted at 50 ms
    assert tight.exits.tolist() == [0] and len(tight.stage_ms) == 1
    roomy = runner.run(x, thresholds=NEVER_EXIT, budget_ms=A_MINUTE_MS)
    assert roomy.exits.tolist() == [2] and len(roomy.stage_ms) == 3
    np.testing.assert_allclose(roomy.outputs, full.outputs, atol=1e-5)


def test_anytime_returns_at_the_deadline_with_the_best_so_far(budget_bundle):
    """Stage 1 is predicted to fit (50 of 200 ms) but its interpreter is held busy (its lock taken, as by
    another caller) for as long as the call may take: an anytime call starts it, gives up on it at the
    deadline and answers from exit 0. A call that waited for the stage would still be running when the test
    looks (and would answer from the last exit)."""
    runner = EarlyExitRunner(budget_bundle)
    x = np.load(TEST)["x"][:1]
    got = {}

    def call() -> None:
        got["result"] = runner.run(x, thresholds=NEVER_EXIT, budget_ms=200.0, anytime=True)

    with runner._locks[1]:
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(timeout=A_MINUTE_MS / 1000.0)
        returned_while_stage_1_was_busy = not worker.is_alive()
    worker.join()
    assert returned_while_stage_1_was_busy
    assert got["result"].exits.tolist() == [0]        # stage 1 was started and abandoned at the deadline
    later = runner.run(x, thresholds=NEVER_EXIT, budget_ms=A_MINUTE_MS, anytime=True)
    assert later.exits.tolist() == [2]


def test_controller_holds_mean_cost_through_a_step_in_difficulty(bundle, test_split):
    runner = EarlyExitRunner(bundle)      # fixed stage costs: cost="model" then does not depend on this machine
    rng = np.random.default_rng(0)
    easy = test_split.x
    hard = np.clip(easy + rng.normal(0, 0.5, easy.shape).astype(np.float32), 0, 1)
    cum = np.cumsum([s.latency_ms for s in runner.manifest.stages])
    target = float(cum[0] + 0.12 * (cum[2] - cum[0]))
    ctl = LoadController(runner, target, cost="model", bounds=[(0.0, 1.0), (0.0, 1.0)])
    costs, offsets = [], []
    for phase in (easy, hard):
        for i in range(600):
            r = ctl.run(phase[i % len(phase):i % len(phase) + 1])
            costs.append(float(cum[r.exits[0]]))
        offsets.append(ctl.state()["offset"])
    costs = np.asarray(costs)
    assert abs(costs[300:600].mean() - target) < 0.25 * target
    assert abs(costs[900:].mean() - target) < 0.25 * target
    assert offsets[1] < offsets[0]                       # harder inputs -> lower thresholds
    state = ctl.state()
    assert state["calls"] == 1200 and len(state["thresholds"]) == 3


def test_target_ms_reaches_the_controller_from_python_m_edgekit_runtime(bundle, capsys):
    """Any call takes more than a nanosecond and less than 1e9 ms, so the controller's moves are known exactly: an
    unreachable target pins the thresholds to their lower bounds, an idle one raises them by `gain` per call."""
    from edgekit.runtime.__main__ import main as runtime_main

    n = 40
    x = np.load(TEST)["x"][:n]
    np.save(os.path.join(bundle, "..", "x40.npy"), x)
    data = os.path.join(bundle, "..", "x40.npy")
    runs = {}
    for target in ("1e-6", "1e9", None):
        assert runtime_main([bundle, data, "--json"] + (["--target-ms", target] if target else [])) == 0
        runs[target] = json.loads(capsys.readouterr().out)
    fast, idle, plain = runs["1e-6"]["controller"], runs["1e9"]["controller"], runs[None]
    assert "controller" not in plain and fast["calls"] == idle["calls"] == n
    lows = [lo for lo, _ in fast["bounds"]]
    assert fast["thresholds"][:-1] == pytest.approx(lows)
    assert idle["offset"] == pytest.approx(min(n * 0.005, max(hi - b for b, (_, hi) in zip(
        EarlyExitRunner(bundle).thresholds(), idle["bounds"]))), rel=1e-6)
    assert runs["1e-6"]["exit_histogram"][0] >= plain["exit_histogram"][0]
    assert runtime_main([bundle, data, "--target-ms", "1e9"]) == 0
    assert "load controller: target 1e+09 ms (mean)" in capsys.readouterr().out
    for bad in (["--target-ms", "0"], ["--target-ms", "nan"], ["--target-ms", "5", "--full-depth"]):
        assert runtime_main([bundle, data] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("edgekit: error: --target-ms") and len(err.strip().splitlines()) == 1
    res = cli("run", bundle, data, "--target-ms", "1e9", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["controller"]["calls"] == n
    assert "load controller: target 1e+09 ms" in cli("run", bundle, data, "--target-ms", "1e9").output
    _one_line(cli("run", bundle, data, "--target-ms", "5", "--budget-ms", "9"), "--target-ms 5 moves")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(res, needle):
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr


def test_bad_inputs_leave_the_bundle_as_it_was(bundle, tmp_path):
    before = _snapshot(bundle)
    x = np.load(VAL)["x"]
    np.save(tmp_path / "x.npy", x)
    _one_line(cli("calibrate", bundle, "--data", tmp_path / "x.npy", "--max-accuracy-drop", "0.01",
                  "--objective", "accuracy"), "needs labels")
    _one_line(cli("calibrate", bundle, "--data", VAL, "--max-accuracy-drop", "1.5"), "within [0, 1]")
    _one_line(cli("calibrate", bundle, "--data", VAL, "--max-accuracy-drop", "-0.1"), "within [0, 1]")
    _one_line(cli("calibrate", bundle, "--data", VAL, "--max-accuracy-drop", "0.01", "--rule", "learned"),
              "no learned score output")
    _one_line(cli("run", bundle, TEST, "--budget-ms", "0"), "must be a number > 0")
    _one_line(cli("run", bundle, TEST, "--budget-ms", "0.000001"), "smaller than the first stage")
    assert _snapshot(bundle) == before


def test_bundle_without_exits(bundle):
    path = os.path.join(bundle, "manifest.json")
    m = json.load(open(path))
    m["stages"] = m["stages"][:1]
    m["runtime"]["stage_threads"] = m["runtime"]["stage_threads"][:1]
    json.dump(m, open(path, "w"))
    before = _snapshot(bundle)
    _one_line(cli("calibrate", bundle, "--data", VAL, "--max-accuracy-drop", "0.01"), "no early exit")
    assert _snapshot(bundle) == before


def test_runtime_budget_errors(bundle):
    runner = EarlyExitRunner(bundle)
    x = np.load(TEST)["x"][:1]
    with pytest.raises(ConfigError):
        runner.run(x, budget_ms=float("nan"))
    with pytest.raises(DataError, match="thresholds given"):
        runner.run(x, thresholds=[0.5] * 7)
    assert NEVER >= 1e9
