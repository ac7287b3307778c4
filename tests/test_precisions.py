"""Each precision converts the demo; float32 matches Keras; int8 keeps last-exit accuracy within 1 point."""
import numpy as np
import pytest

from edgekit.convert.split import split_model
from edgekit.manifest import load_bundle
from edgekit.runtime import EarlyExitRunner, evaluate


def _full_depth_exits(bundle, x):
    """Every exit's output from the bundle's TFLite stages, all stages run."""
    runner = EarlyExitRunner(bundle)
    feed = {runner.manifest.input.name: x}
    outs = []
    for st, sig in zip(runner.manifest.stages, [step.call for step in runner._steps]):
        res = sig(**{t.name: feed[t.name] for t in st.inputs})
        feed.update(res)
        outs.append(res[st.exit.name])
    return outs


def test_float32_full_depth_matches_keras(demo_bundles, demo_model, test_split):
    bundle = demo_bundles("float32", "host-x86_64")
    x = test_split.x
    ref = [np.asarray(o) for o in demo_model(x)]
    for r, g in zip(ref, _full_depth_exits(bundle, x)):
        assert np.max(np.abs(r - g)) <= 1e-4


def test_int8_last_exit_within_one_point_of_float(demo_bundles, demo_model, test_split):
    x, y = test_split.x, test_split.y
    float_acc = float(np.mean(np.argmax(np.asarray(demo_model(x)[-1]), 1) == y))
    r = evaluate(EarlyExitRunner(demo_bundles("int8")), x, y, full_depth=True)
    assert float_acc >= 0.97
    assert r["accuracy"] >= float_acc - 0.01


# max |logit difference| allowed on the demo's last exit, whose logits span about +-30
@pytest.mark.parametrize("precision, tol", [("float16", 0.05), ("int16x8", 0.5), ("int8", 1.5)])
def test_precision_close_to_float(demo_bundles, demo_model, test_split, precision, tol):
    bundle = demo_bundles(precision)
    m = load_bundle(bundle)
    assert {s.precision for s in m.stages} == {precision}
    x = test_split.x[:64]
    ref = np.asarray(demo_model(x)[-1])
    got = _full_depth_exits(bundle, x)[-1]
    assert np.max(np.abs(ref - got)) < tol
    assert np.mean(np.argmax(ref, 1) == np.argmax(got, 1)) >= 0.97


def test_smaller_precisions_make_smaller_stages(demo_bundles):
    sizes = {p: sum(s.size_bytes for s in load_bundle(demo_bundles(p)).stages) for p in ("float16", "int8")}
    f32 = sum(s.size_bytes for s in load_bundle(demo_bundles("float32", "host-x86_64")).stages)
    assert sizes["float16"] < 0.6 * f32 and sizes["int8"] < 0.35 * f32


def test_manifest_names_match_split(demo_bundles, demo_model):
    m = load_bundle(demo_bundles("int8"))
    stages = split_model(demo_model)
    for spec, st in zip(m.stages, stages):
        assert tuple(t.name for t in spec.inputs) == st.input_names
        assert spec.exit.name == st.exit_name
        assert spec.flops > 0
    assert m.stages[0].flops < m.stages[2].flops


def test_every_target_gets_a_bundle(demo_bundles, test_split):
    from edgekit.targets import list_targets

    for target in list_targets():
        bundle = demo_bundles(target.default_precision, target.name)
        m = load_bundle(bundle)
        assert m.target == target.name and m.stages[0].precision == target.default_precision
        assert m.extra["runtime"]["num_threads"] == target.default_threads
        r = evaluate(EarlyExitRunner(bundle), test_split.x, test_split.y)
        assert r["accuracy"] >= 0.95, (target.name, r["accuracy"])
