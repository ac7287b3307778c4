"""Heavier pruning checks (make test-slow): Keras's own MobileNetV2 (alpha 1.0, 96x96) and ResNet50 with an
attached exit, pruned to 50% FLOPs inside convert(); keeping every channel reproduces them exactly; the demo
at 50% FLOPs with recovery stays within a point of its test accuracy."""
import os

import numpy as np
import pytest

from tests.conftest import CALIB, DEMO

pytestmark = pytest.mark.slow

ARCHS = {
    "MobileNetV2": (96, "block_5_add"),
    "ResNet50": (64, "conv3_block4_out"),
}


def _with_exit(name):
    import keras

    size, cut = ARCHS[name]
    kwargs = dict(input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None)
    base = (keras.applications.MobileNetV2(alpha=1.0, **kwargs) if name == "MobileNetV2"
            else keras.applications.ResNet50(**kwargs))
    h = keras.layers.GlobalAveragePooling2D(name="exit0_pool")(base.get_layer(cut).output)
    e0 = keras.layers.Dense(10, name="exit0")(h)
    return keras.Model(base.inputs, [e0, base.outputs[0]], name=name.lower() + "_2exit")


def _images(size, n, seed=0):
    from edgekit.convert.tf import tensorflow
    from edgekit.data import load_data

    tf = tensorflow()
    x = load_data(CALIB).x[seed:seed + n]
    return (np.repeat(tf.image.resize(x, (size, size)).numpy(), 3, axis=-1) * 2.0 - 1.0).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_architecture_pruned_to_half_the_flops_converts_with_its_exits(name, tmp_path):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.flops import model_flops
    from edgekit.convert.prune import PruneOptions
    from edgekit.convert.pruning.distortion import run_eager
    from edgekit.convert.pruning.groups import find_groups
    from edgekit.convert.pruning.surgery import rebuild
    from edgekit.runtime import EarlyExitRunner

    model = _with_exit(name)
    size = ARCHS[name][0]
    x = _images(size, 40)
    graph = find_groups(model)
    assert len(graph.prunable) > 20 and not graph.unsupported
    same = rebuild(model, graph, {g.index: np.arange(g.channels) for g in graph.prunable})
    for a, b in zip(run_eager(model, x[:4]), run_eager(same, x[:4])):
        assert np.array_equal(a, b)                               # 0% pruning reproduces the outputs exactly

    path = str(tmp_path / "model.keras")
    model.save(path)
    calib = str(tmp_path / "calib.npz")
    np.savez(calib, x=x)
    res = convert(ConvertOptions(path, "host-x86_64", calib, str(tmp_path / "out"), precision="float32",
                                 prune=PruneOptions(fraction=0.5, samples=16, ratios=(0.25, 0.5, 0.75))))
    rep = res.report["prune"]
    assert rep["flops"]["after"] <= 0.5 * model_flops(model)
    assert [s.exit.name for s in res.manifest.stages] == ["exit0", "predictions"]
    assert rep["allocation"]["dp"]["distortion_calib"] < rep["allocation"]["uniform"]["distortion_calib"]
    out = EarlyExitRunner(res.bundle_dir).run(x[:8], full_depth=True)
    assert out.outputs is not None and len(out.predictions) == 8
    assert os.path.isfile(os.path.join(res.bundle_dir, "report.json"))


def test_demo_half_flops_with_recovery_within_one_point(demo_model, test_split):
    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.data import load_data

    res = prune(demo_model, PruneOptions(fraction=0.5, samples=128, recover_epochs=25, channel_multiple=8),
                load_data(CALIB), eval_data=test_split)
    acc = res.report["accuracy"]
    assert res.report["flops"]["fraction"] <= 0.5
    assert acc["unpruned"][-1] - acc["recovered"][-1] <= 0.01
