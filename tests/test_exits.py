"""Attaching exits: cut points on residual and branching graphs, FLOPs-fraction choice, head design,
head training from labels and by distillation with the backbone untouched, and every bad input."""
import os
import re
from dataclasses import replace

import numpy as np
import pytest

from edgekit.convert.exits import (ExitOptions, attach_exits, choose_auto, find_cut_points, named_cut_points,
                                   parse_exits)
from edgekit.data import Dataset
from edgekit.errors import ConfigError, DataError, ModelError
from tests.conftest import CALIB, DEMO, ROOT

CNN = os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras")


def _residual(size: int = 16):
    """stem -> two residual blocks (conv, conv, add with the skip, relu) -> head; the second block widens
    through a 1x1 projection on the skip."""
    import keras

    L = keras.layers
    inp = keras.Input((size, size, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="b1_conv1")(x)
    y = L.Conv2D(8, 3, padding="same", name="b1_conv2")(y)
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    y = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="b2_conv1")(x)
    y = L.Conv2D(16, 3, padding="same", name="b2_conv2")(y)
    s = L.Conv2D(16, 1, strides=2, name="b2_proj")(x)
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([s, y]))
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="top")(x)
    out = L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="tiny_resnet")


def _branching():
    """stem -> two parallel branches -> concatenate -> conv -> head (an inception-like module)."""
    import keras

    L = keras.layers
    inp = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    a = L.Conv2D(8, 1, activation="relu", name="branch_a")(x)
    b = L.Conv2D(4, 1, activation="relu", name="branch_b1")(x)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_b2")(b)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="mix")(x)
    out = L.Dense(5, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="branchy")


@pytest.fixture(scope="module")
def cnn():
    import keras

    return keras.models.load_model(CNN, compile=False)


@pytest.fixture(scope="module")
def calib():
    from edgekit.data import load_data

    return load_data(CALIB)


def test_residual_cut_points_are_block_boundaries():
    model = _residual()
    cuts = {c.layer: c for c in find_cut_points(model)}
    for name in ("stem", "b1_add", "b1_out", "b2_add", "b2_out", "top"):
        assert name in cuts and cuts[name].crossing == (name,)
    for inside in ("b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b2_proj"):
        assert inside not in cuts
    with pytest.raises(ModelError, match=r"after layer 'b1_conv1': 2 tensors cross the cut there \(b1_conv1, stem\)"):
        named_cut_points(model, ["b1_conv1"])
    inside = named_cut_points(model, ["b1_conv1"], max_crossing=2)[0]
    assert set(inside.crossing) == {"b1_conv1", "stem"}
    fr = [c.fraction for c in find_cut_points(model)]
    assert fr == sorted(fr) and 0 < fr[0] and fr[-1] < 1


def test_branching_cut_points_skip_the_branches():
    model = _branching()
    names = [c.layer for c in find_cut_points(model)]
    assert "stem" in names and "cat" in names and "mix" in names
    assert not {"branch_a", "branch_b1", "branch_b2"} & set(names)
    with pytest.raises(ModelError, match="2 tensors cross"):
        named_cut_points(model, ["branch_b2"])
    with pytest.raises(ModelError, match="parallel branches"):
        named_cut_points(model, ["branch_a", "branch_b2"], max_crossing=3)


def test_auto_follows_flops_fractions_and_prefers_activations(cnn):
    cuts = choose_auto(cnn, 3)
    assert [c.layer for c in cuts] == ["pool1", "relu2_2", "pool2"]     # after ReLU / pooling, not before
    for c, target in zip(cuts, (0.25, 0.5, 0.75)):
        assert abs(c.fraction - target) < 0.1
    assert [c.layer for c in choose_auto(_residual(), 2)][0] == "b1_out"   # after the ReLU, not the Add


def test_named_cuts_are_sorted_in_depth_order(cnn):
    assert [c.layer for c in named_cut_points(cnn, ["relu2_2", "pool1"])] == ["pool1", "relu2_2"]


def _train_x(calib):
    return Dataset(calib.x, calib.y, calib.source)


@pytest.fixture(scope="module")
def labelled(cnn, calib):
    before = [w.copy() for w in cnn.get_weights()]
    res = attach_exits(cnn, ExitOptions(auto=2, epochs=8, seed=3), calib)
    return before, res


def test_heads_from_labels_leave_the_backbone_untouched(cnn, calib, labelled):
    before, res = labelled
    for a, b in zip(before, cnn.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [o.shape[-1] for o in res.model.outputs] == [10, 10, 10]
    assert list(res.model.output_names) == ["exit0", "exit1", "logits"]
    x = calib.x[:64]
    outs = res.model([x], training=False)
    np.testing.assert_array_equal(np.asarray(outs[-1]), np.asarray(cnn([x], training=False)))
    rep = res.report["exits"]
    assert res.report["trained_by"] == "labels" and len(rep) == 3
    assert all(e["val_accuracy"] > 0.8 for e in rep[:2])      # chance is 0.1
    assert rep[0]["flops_to_exit"] < rep[1]["flops_to_exit"] < rep[2]["flops_to_exit"]


def test_head_flops_stay_within_budget_and_match_the_counter(cnn, labelled):
    import keras

    from edgekit.convert.flops import model_flops

    _, res = labelled
    prev = 0
    for e in res.report["exits"][:-1]:
        assert e["head_flops"] <= 0.1 * (e["backbone_flops_before"] - prev)
        prev = e["backbone_flops_before"]
        layers = [res.model.get_layer(e["name"] + s) for s in ("_norm", "_hidden", "_flat")] + \
            [res.model.get_layer(e["name"])]
        inp = keras.Input(tuple(e["head"]["pooled_shape"]))
        x = inp
        for layer in layers:
            x = layer(x)
        pool_adds = int(np.prod(e["shape"]))
        head = keras.Model(inp, x)
        assert model_flops(head) + pool_adds == e["head_flops"]
        assert head.count_params() == e["head_params"] <= 0.25 * cnn.count_params()


def test_distillation_without_labels(cnn, calib):
    res = attach_exits(cnn, ExitOptions(layers=("relu2_2",), epochs=6, seed=1), Dataset(calib.x, None, "x only"))
    e = res.report["exits"][0]
    assert res.report["trained_by"] == "distill" and e["val_accuracy"] is None
    assert e["val_agreement"] > 0.8


def test_same_seed_same_heads_other_seed_other_heads(cnn, calib):
    small = Dataset(calib.x[:200], calib.y[:200], "small")
    opts = ExitOptions(layers=("pool1",), epochs=2, seed=5)
    w = [attach_exits(cnn, o, small).model.get_layer("exit0").get_weights()[0]
         for o in (opts, opts, ExitOptions(layers=("pool1",), epochs=2, seed=6))]
    np.testing.assert_array_equal(w[0], w[1])
    assert not np.array_equal(w[0], w[2])


def test_progress_reports_training():
    seen = []
    model = _residual()
    x = np.random.default_rng(0).random((60, 16, 16, 1), dtype=np.float32)
    attach_exits(model, ExitOptions(auto=1, epochs=2), Dataset(x, None, "rand"),
                 progress=lambda d, t, s: seen.append((d, t, s)))
    assert seen[-1][0] == seen[-1][1] == 3 and any("exit0 epoch 2/2" in s for _, _, s in seen)


# -- bad input ------------------------------------------------------------------------------------------------
def test_subclassed_and_multi_output_models_are_refused(calib):
    import keras

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), np.float32))
    with pytest.raises(ModelError, match="cannot be traced"):
        find_cut_points(sub)
    inp = keras.Input((4,))
    two = keras.Model(inp, [keras.layers.Dense(2)(inp), keras.layers.Dense(3)(inp)])
    with pytest.raises(ModelError, match="already has 2 outputs"):
        attach_exits(two, ExitOptions(auto=1), Dataset(np.zeros((64, 4), np.float32)))


def test_missing_layer_and_too_many_exits(cnn):
    with pytest.raises(ModelError, match="no layer named 'conv9'; valid cut points include: relu1_1, pool1, relu2_1"):
        named_cut_points(cnn, ["conv9"])
    with pytest.raises(ModelError, match="has 6 valid cut point.*asked for 7 exits"):
        choose_auto(cnn, 7)


def test_too_little_data_and_missing_labels(cnn, calib):
    with pytest.raises(DataError, match="has 30 samples .*needs at least 32 and 8"):
        attach_exits(cnn, ExitOptions(auto=1), Dataset(calib.x[:30], calib.y[:30], "tiny"))
    with pytest.raises(DataError, match="has no labels"):
        attach_exits(cnn, ExitOptions(auto=1, target="labels"), Dataset(calib.x[:100], None, "x only"))
    with pytest.raises(DataError, match="labels span 0..10, the model has 10 classes"):
        attach_exits(cnn, ExitOptions(auto=1), Dataset(calib.x[:100], np.arange(100) % 11, "bad"))


@pytest.mark.parametrize("spec, fields, needle", [
    ("auto:0", {}, "auto:N' with N >= 1"),
    ("auto3", {}, "allowed 'auto:N'"),
    ("a,,b", {}, "none empty"),
    ("a,a", {}, "names a layer twice"),
    ("auto:2", {"head_budget": 1.5}, "head budget must be in (0, 1)"),
    ("auto:2", {"target": "soft"}, "head target 'soft'; allowed: auto, labels, distill"),
    ("auto:2", {"epochs": 0}, "head epochs must be at least 1"),
])
def test_bad_exit_options(spec, fields, needle):
    with pytest.raises(ConfigError) as err:
        auto, layers = parse_exits(spec)
        replace(ExitOptions(auto=auto, layers=layers), **fields).check()
    assert needle in str(err.value)


def test_head_options_without_exits_are_an_error():
    from edgekit.cli.convert import exit_options

    assert exit_options(None, None, None, None, None, None, None) is None
    with pytest.raises(ConfigError, match="--head-epochs, --seed given without --exits"):
        exit_options(None, None, 5, None, None, None, 1)


def test_a_tight_budget_is_an_error_not_a_silent_overrun(cnn, calib):
    with pytest.raises(ConfigError, match="exit head after layer 'conv1_1' needs at least .* over the head budget"):
        attach_exits(cnn, ExitOptions(layers=("conv1_1",), head_budget=0.001), calib)


# -- the whole chain: convert --exits ------------------------------------------------------------------------
def cli(*args):
    from click.testing import CliRunner

    from edgekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _runtime_checks(bundle, model, x, stages):
    """Full depth matches the original single-output model; every exit runs in the runtime. Returns the
    largest magnitude of each exit's outputs."""
    from edgekit.runtime import EarlyExitRunner

    runner = EarlyExitRunner(bundle)
    assert runner.num_stages == stages
    ref = np.asarray(model([x], training=False))
    full = runner.run(x, full_depth=True)
    assert float(np.max(np.abs(full.outputs - ref))) <= 1e-4
    scale = []
    for k in range(stages):
        ths = [1.5] * (stages - 1)
        if k < stages - 1:
            ths[k] = 0.0
        r = runner.run(x, thresholds=ths)
        assert r.exits.tolist() == [k] * len(x) and np.all(np.isfinite(r.outputs))
        scale.append(float(np.max(np.abs(r.outputs))))
    return scale


def test_cli_convert_with_auto_exits_float32_parity(cnn, calib, tmp_path):
    import json

    from tests.conftest import TEST

    out, part = tmp_path / "out", str(tmp_path / "calib300.npz")
    np.savez(part, x=calib.x[:300], y=calib.y[:300])
    res = cli("convert", CNN, "-t", "host-x86_64", "--calib", part, "-o", out, "--precision", "float32",
              "--exits", "auto:3", "--head-epochs", "3", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [s["exit"] for s in report["stages"]] == ["exit0", "exit1", "exit2", "logits"]
    assert [e["cut"] for e in report["exits"]["exits"]] == ["pool1", "relu2_2", "pool2", None]
    assert max(s["tflite_max_abs_error_vs_float"] for s in report["stages"]) <= 1e-4
    from edgekit.data import load_data

    _runtime_checks(str(out / "host-x86_64"), cnn, load_data(TEST).x[:40], 4)


def test_cli_bad_exit_inputs_write_nothing(tmp_path):
    import keras

    inp = keras.Input((32, 32, 1), name="image")
    seq = keras.Sequential([inp, keras.layers.Conv2D(4, 3, name="c"), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    seq_path, res_path, loose = str(tmp_path / "seq.keras"), str(tmp_path / "res.keras"), str(tmp_path / "lo.keras")
    seq.save(seq_path)
    _residual(32).save(res_path)
    keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(10)]).save(loose)      # no Input: no graph
    tiny = str(tmp_path / "tiny.npz")
    np.savez(tiny, x=np.zeros((20, 32, 32, 1), np.float32), y=np.zeros(20, np.int64))
    out = tmp_path / "out"
    base = ("convert", CNN, "-t", "host-x86_64", "--calib", CALIB, "-o", out)
    one_line_error(cli(*base, "--exits", "conv9"), "no layer named 'conv9'")
    one_line_error(cli("convert", res_path, *base[2:], "--exits", "b1_out,b2_conv1"),
                   "after layer 'b2_conv1': 2 tensors cross the cut there (b2_conv1, b1_out)")
    one_line_error(cli(*base, "--exits", "auto:9"), "asked for 9 exits")
    one_line_error(cli(*base, "--head-epochs", "3"), "--head-epochs given without --exits")
    one_line_error(cli(*base, "--exits", "auto:1", "--exit-data", tiny), "has 20 samples")
    one_line_error(cli(*base, "--exits", "auto:1", "--head-target", "soft"), "head target 'soft'")
    one_line_error(cli("convert", seq_path, "-t", "host-x86_64", "--calib", CALIB, "-o", out),
                   "single output and no exits")
    one_line_error(cli("convert", loose, "-t", "host-x86_64", "--calib", CALIB, "-o", out, "--exits", "auto:1"),
                   "a Sequential model that cannot be traced")
    one_line_error(cli("convert", DEMO, "-t", "host-x86_64", "--calib", CALIB, "-o", out, "--exits", "auto:1"),
                   "already has 3 outputs")
    assert not out.exists()


def test_sequential_model_is_traced_and_takes_exits(tmp_path):
    import keras

    L = keras.layers
    seq = keras.Sequential([keras.Input((32, 32, 1), name="image"), L.Conv2D(8, 3, activation="relu", name="c1"),
                            L.Conv2D(8, 3, activation="relu", name="c2"), L.MaxPooling2D(name="p"),
                            L.Conv2D(16, 3, activation="relu", name="c3"), L.GlobalAveragePooling2D(name="g"),
                            L.Dense(10, name="out")])
    path = str(tmp_path / "seq.keras")
    seq.save(path)
    res = cli("convert", path, "-t", "host-x86_64", "--calib", CALIB, "-o", tmp_path / "o", "--precision", "float32",
              "--exits", "c2", "--head-epochs", "2")
    assert res.exit_code == 0, res.output
    assert re.search(r"^exit0 +c2 ", res.stdout, re.M)
    _runtime_checks(str(tmp_path / "o" / "host-x86_64"), seq, np.random.default_rng(0).random(
        (8, 32, 32, 1), dtype=np.float32), 2)


# -- Keras's own architectures (random weights): full depth matches the original within 1e-4 at float32 --------
def _app_parity(build, tmp_path, n=40):
    """Random weights (seeded: unseeded, some random ResNet50s put every sample in one class), with batch-norm
    statistics set from a batch of the data: without that, random MobileNetV2 features shrink to ~1e-10 and every
    output is the uniform 1/1000, which any bundle matches."""
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    from edgekit.convert import ConvertOptions, convert
    from edgekit.runtime import EarlyExitRunner

    path, data = str(tmp_path / "m.keras"), str(tmp_path / "x.npz")
    x = np.random.default_rng(0).random((n,) + tuple(model.inputs[0].shape[1:]), dtype=np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model([x[:16]], training=True)
    ref = np.asarray(model([x], training=False))
    assert len(set(ref.argmax(-1).tolist())) > 1 and ref.max() > 5e-3     # not a constant output
    model.save(path)
    np.savez(data, x=x)                                         # no labels: the heads distil the model's output
    res = convert(ConvertOptions(path, "host-x86_64", data, str(tmp_path / "out"), precision="float32",
                                 exits=ExitOptions(auto=3, epochs=2)))
    assert len(res.manifest.stages) == 4 and res.report["exits"]["trained_by"] == "distill"
    fr = [e["fraction_of_full"] for e in res.report["exits"]["exits"]]
    assert fr == sorted(fr) and abs(fr[0] - 0.25) < 0.1 and abs(fr[1] - 0.5) < 0.1 and abs(fr[2] - 0.75) < 0.1
    scale = _runtime_checks(res.bundle_dir, model, x, 4)        # full depth vs the original: <= 1e-4 absolute
    full = EarlyExitRunner(res.bundle_dir).run(x, full_depth=True).outputs
    assert float(np.max(np.abs(full - ref))) <= 1e-3 * float(np.max(np.abs(ref)))    # and relative to its scale
    for s, mag in zip(res.report["stages"], scale):            # exit heads vs the float heads: relative 1e-4
        assert s["tflite_max_abs_error_vs_float"] <= 1e-4 * max(1.0, mag), (s, mag)
    return res


def test_mobilenet_v2_auto3_parity(tmp_path):
    import keras

    res = _app_parity(lambda: keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None),
                      tmp_path)
    assert all(len(e["crossing"]) == 1 for e in res.report["exits"]["exits"][:3])


@pytest.mark.slow
def test_resnet50_auto3_parity(tmp_path):
    import keras

    res = _app_parity(lambda: keras.applications.ResNet50(weights=None), tmp_path)
    assert [e["cut"].endswith("_out") for e in res.report["exits"]["exits"][:3]] == [True] * 3


def test_a_nested_backbone_is_named_in_the_error():
    import keras

    base = _residual()
    inp = keras.Input((16, 16, 1), name="pic")
    wrapped = keras.Model(inp, keras.layers.Dense(3, name="new_head")(base(inp)), name="wrapped")
    with pytest.raises(ModelError, match="layer 'tiny_resnet' is a whole model used as one layer"):
        choose_auto(wrapped, 2)
    with pytest.raises(ModelError, match="no layer named 'b1_out'.*'tiny_resnet' is a whole model"):
        named_cut_points(wrapped, ["b1_out"])
