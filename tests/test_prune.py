"""prune() end to end on the demo model, inside convert(), with recovery, with each budget, and every bad
input: one line, exit code 2, nothing written."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.errors import ConfigError, DataError, ModelError
from tests.conftest import CALIB, DEMO, TEST
from tests.prune_models import conv_bn_conv, inputs_for, with_reshape

FAST = dict(samples=32, ratios=(0.25, 0.5, 0.75), channel_multiple=8)


@pytest.fixture(scope="module")
def calib():
    from edgekit.data import load_data

    return load_data(CALIB)


@pytest.fixture(scope="module")
def demo_pruned(demo_model, calib, test_split):
    from edgekit.convert.prune import PruneOptions, prune

    before = [w.numpy().copy() for w in demo_model.weights]
    result = prune(demo_model, PruneOptions(fraction=0.5, **FAST), calib, eval_data=test_split)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, demo_model.weights))   # teacher untouched
    return result


def test_demo_at_half_the_flops(demo_model, demo_pruned):
    from edgekit.convert.flops import model_flops

    rep = demo_pruned.report
    assert model_flops(demo_pruned.model) <= 0.5 * model_flops(demo_model)
    assert rep["flops"]["after"] == model_flops(demo_pruned.model) == rep["budget"]["pruned"]
    assert rep["params"]["after"] == demo_pruned.model.count_params()
    assert list(demo_pruned.model.output_names) == ["exit0", "exit1", "exit2"] == rep["outputs"]
    for g in rep["groups"]:
        assert g["kept_dp"] % 8 == 0 or g["kept_dp"] == g["channels"]
    assert any(g["kept_dp"] < g["channels"] for g in rep["groups"])
    skipped = {s["group"]: s["reason"] for s in rep["skipped_groups"]}
    assert all("model output" in skipped[e] for e in ("exit0", "exit1", "exit2"))
    layers = {row["layer"]: row for row in rep["layers"]}
    assert layers["block3_conv1"]["out_channels"][0] == 128
    assert layers["block3_conv1"]["out_channels"][1] == demo_pruned.model.get_layer("block3_conv1").filters


def test_demo_dp_beats_uniform_and_accuracy_is_reported(demo_pruned):
    alloc = demo_pruned.report["allocation"]
    assert alloc["dp"]["cost_fraction"] <= 0.5 and alloc["uniform"]["cost_fraction"] <= 0.5
    assert alloc["dp"]["distortion_calib"] < alloc["uniform"]["distortion_calib"]
    assert alloc["dp"]["distortion_eval"] < alloc["uniform"]["distortion_eval"]
    acc = demo_pruned.report["accuracy"]
    assert acc["on"] == "eval data" and len(acc["unpruned"]) == 3 and len(acc["pruned"]) == 3
    assert acc["recovered"] is None and demo_pruned.report["recovery"] is None


def test_convert_with_pruning_keeps_the_exits(tmp_path, test_split):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.prune import PruneOptions
    from edgekit.runtime import EarlyExitRunner

    opts = ConvertOptions(DEMO, "host-x86_64", CALIB, str(tmp_path), precision="float32",
                          prune=PruneOptions(fraction=0.5, samples=32, ratios=(0.25, 0.5, 0.75)))
    res = convert(opts)
    assert [s.exit.name for s in res.manifest.stages] == ["exit0", "exit1", "exit2"]
    rep = res.report["prune"]
    assert rep["channel_multiple"] == 8                       # host-x86_64's channel_multiple
    assert sum(s.flops for s in res.manifest.stages) == rep["flops"]["after"] <= 0.5 * rep["flops"]["before"]
    runner = EarlyExitRunner(res.bundle_dir)
    out = runner.run(test_split.x[:64], full_depth=True)
    assert float(np.mean(out.predictions == test_split.y[:64])) > 0.8
    json.dumps(res.report)


def test_attached_exits_are_trained_on_the_pruned_backbone(tmp_path):
    """With --exits and pruning, the backbone is pruned first: the head after relu2_2 reads the channels that
    survived, and pruning saw one output."""
    import os

    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.exits import ExitOptions
    from edgekit.convert.prune import PruneOptions
    from tests.conftest import ROOT

    cnn = os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras")
    opts = ConvertOptions(cnn, "host-x86_64", CALIB, str(tmp_path), precision="float32",
                          exits=ExitOptions(layers=("relu2_2",), epochs=2),
                          prune=PruneOptions(fraction=0.5, samples=32, ratios=(0.25, 0.5, 0.75)))
    res = convert(opts)
    rep = res.report["prune"]
    kept = {g["group"]: g["kept_dp"] for g in rep["groups"]}
    head = res.report["exits"]["exits"][0]
    assert head["cut"] == "relu2_2" and head["shape"][-1] == kept["conv2_2"] < 56
    assert rep["outputs"] == ["logits"]                       # pruning saw the single-output backbone
    assert [s.exit.name for s in res.manifest.stages] == ["exit0", "logits"]


def test_recovery_distils_back_accuracy(demo_model, calib, test_split):
    from edgekit.convert.prune import PruneOptions, prune

    res = prune(demo_model, PruneOptions(fraction=0.4, recover_epochs=3, **FAST), calib.take(400),
                eval_data=test_split)
    acc, rec = res.report["accuracy"], res.report["recovery"]
    assert rec["used_labels"] and 1 <= rec["epochs_run"] <= 3 and rec["val_samples"] == 40
    assert acc["recovered"][-1] > acc["pruned"][-1]
    assert rec["best_val_loss"] < rec["initial_val_loss"]
    assert not getattr(res.model, "optimizer", None)          # a clean, uncompiled copy


def test_params_budget_counts_parameters_exactly():
    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.data import Dataset

    model = conv_bn_conv()
    res = prune(model, PruneOptions(fraction=0.6, budget="params", samples=16, ratios=(0.25, 0.5, 0.75)),
                Dataset(inputs_for(model, 32)))
    assert res.model.count_params() <= 0.6 * model.count_params()
    assert res.report["budget"]["pruned"] == res.model.count_params()


def _compute_bound():
    """Two 48-channel 3x3 convs at 24x24: latency dominated by the convs, not by per-op overhead."""
    import keras

    inp = keras.Input((24, 24, 8), name="img")
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="c2")(x)
    out = keras.layers.Dense(5, name="out")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="compute_bound")


def test_latency_budget_uses_measured_layers(monkeypatch):
    """Each conv/dense layer is converted alone and timed (full and half width together, under the shared cost
    protocol); the layer timer is replaced by a machine whose time is a layer's work (input positions x weight
    bytes of the TFLite file), so that the fitted cost model and the pruning it drives are the same on every
    machine. The real timer still runs once on a timed layer."""
    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.convert.pruning import latency
    from edgekit.data import Dataset

    timed = []

    def work_ms(blobs: dict, shapes: dict) -> dict:
        timed.extend((blobs[f], shapes[f]) for f in blobs)
        return {f: float(np.prod(shapes[f][:-1])) * len(blobs[f]) * 1e-7 for f in blobs}

    real_timer = latency.time_blobs
    monkeypatch.setattr(latency, "time_blobs", work_ms)
    model = _compute_bound()
    res = prune(model, PruneOptions(fraction=0.8, budget="latency", samples=16, ratios=(0.5, 0.75)),
                Dataset(inputs_for(model, 32)))
    b = res.report["budget"]
    assert b["kind"] == "latency" and b["unit"] == "ms" and b["full"] > 0
    assert b["pruned"] <= 0.8 * b["full"] and "timed alone" in b["note"]
    assert res.model.get_layer("c1").filters < 48 or res.model.get_layer("c2").filters < 48
    assert res.report["options"]["latency_precision"] == "int8"
    # c1, c2 and the dense head, each timed at full width and with the channels it touches halved
    assert [shape for _, shape in timed] == [(24, 24, 8), (24, 24, 4), (24, 24, 48), (24, 24, 24), (48,), (24,)]
    blob, shape = timed[2]
    assert real_timer({1.0: blob}, {1.0: shape})[1.0] > 0    # the real timer runs on what was built (any speed)


def test_unsupported_layer_is_named_and_pruning_goes_around_it():
    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.data import Dataset

    model = with_reshape()
    res = prune(model, PruneOptions(fraction=0.7, samples=16, ratios=(0.25, 0.5, 0.75)), Dataset(inputs_for(model, 32)))
    assert res.report["unsupported_layers"][0]["layer"] == "odd_reshape"
    skipped = {s["group"]: s["reason"] for s in res.report["skipped_groups"]}
    assert "odd_reshape" in skipped["before"]
    assert res.model.get_layer("before").filters == 16
    assert res.model.get_layer("after1").filters < 16 or res.model.get_layer("after2").filters < 16


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.2, True])
def test_budget_outside_zero_one(fraction):
    from edgekit.convert.prune import PruneOptions

    with pytest.raises(ConfigError, match=r"outside \(0, 1\]"):
        PruneOptions(fraction=fraction).check()


@pytest.mark.parametrize("field,value,allowed", [("budget", "energy", "flops, params, latency"),
                                                 ("importance", "taylor", "l1, l2, bn_scale, activation"),
                                                 ("allocation", "greedy", "dp, uniform")])
def test_unknown_settings_name_what_is_allowed(field, value, allowed):
    from edgekit.convert.prune import PruneOptions

    with pytest.raises(ConfigError, match=allowed):
        PruneOptions(**{field: value}).check()


def test_too_little_calibration_data(demo_model, calib):
    from edgekit.convert.prune import PruneOptions, prune

    with pytest.raises(DataError, match="has 10 samples; ranking channels needs at least 16"):
        prune(demo_model, PruneOptions(**FAST), calib.take(10))
    with pytest.raises(DataError, match="recovery needs at least 32"):
        prune(demo_model, PruneOptions(recover_epochs=2, **FAST), calib.take(20))


def test_unreachable_budget_and_nothing_to_prune(demo_model, calib):
    import keras

    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.data import Dataset

    with pytest.raises(ConfigError, match="cannot be met.*allowed: a fraction >="):
        prune(demo_model, PruneOptions(fraction=0.02, **FAST), calib)
    inp = keras.Input((6,), name="v")
    flat = keras.Model(inp, keras.layers.Dense(3, name="head")(inp))
    with pytest.raises(ModelError, match="no channel group that can be pruned.*model input"):
        prune(flat, PruneOptions(samples=16), Dataset(np.zeros((20, 6), np.float32)))


def _cli(*args):
    from edgekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_bad_inputs_write_nothing(tmp_path):
    out = tmp_path / "p.keras"
    _one_line(_cli("prune", DEMO, "--flops", "1.5", "--calib", CALIB, "-o", out), "outside (0, 1]")
    _one_line(_cli("prune", DEMO, "--flops", "0.5", "--params", "0.5", "--calib", CALIB, "-o", out),
              "exactly one pruning budget", "(got --prune-flops, --prune-params)")
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((5, 32, 32, 1), np.float32))
    _one_line(_cli("prune", DEMO, "--flops", "0.5", "--calib", small, "-o", out), "has 5 samples")
    _one_line(_cli("prune", DEMO, "--flops", "0.5", "--calib", CALIB, "-o", tmp_path / "p.h5"), "must end in .keras")
    _one_line(_cli("convert", DEMO, "-t", "host-x86_64", "--calib", CALIB, "-o", tmp_path / "b", "--prune-flops", "0"),
              "outside (0, 1]")
    _one_line(_cli("convert", DEMO, "-t", "host-x86_64", "--calib", CALIB, "-o", tmp_path / "b",
                   "--recover-epochs", "3"), "need a budget")
    assert sorted(os.listdir(tmp_path)) == ["small.npz"]


def test_cli_prune_writes_model_and_report(tmp_path):
    import keras

    out = tmp_path / "demo_half.keras"
    res = _cli("prune", DEMO, "--flops", "0.5", "--calib", CALIB, "-o", out, "--samples", "16", "--ratios", "0.5",
               "--target", "raspberry-pi-5", "--eval", TEST, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["flops"]["fraction"] <= 0.5 and rep["output"] == str(out)
    assert sorted(os.listdir(tmp_path)) == ["demo_half.keras", "demo_half.report.json"]
    model = keras.models.load_model(out, compile=False)
    assert model.count_params() == rep["params"]["after"]
    assert list(model.output_names) == ["exit0", "exit1", "exit2"]
    again = _cli("prune", DEMO, "--flops", "0.5", "--calib", CALIB, "-o", out)
    _one_line(again, "already exists", "--force")


def test_options_round_trip_and_reject_unknown_keys():
    from edgekit.convert.prune import PruneOptions

    opts = PruneOptions(fraction=0.4, budget="params", ratios=(0.5,), channel_multiple=4, compensate=False)
    assert PruneOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts
    with pytest.raises(ConfigError, match="unknown prune option.*fractoin.*allowed:"):
        PruneOptions.from_dict({"fractoin": 0.5})
    with pytest.raises(ConfigError, match="compensate 'yes': allowed true or false"):
        PruneOptions(compensate="yes").check()
