"""Dependency groups of every kind, and surgery parity: the rebuilt model with channels removed equals the
original with those channels masked (zeroed where they are read), and cost models count the rebuilt model
exactly as flops.model_flops and keras count_params do."""
import numpy as np
import pytest

from tests.prune_models import KINDS, inputs_for, random_keep


@pytest.fixture(scope="module")
def built():
    from edgekit.convert.pruning.groups import find_groups

    cache = {}

    def get(kind):
        if kind not in cache:
            model = KINDS[kind]()
            cache[kind] = (model, find_groups(model))
        return cache[kind]

    return get


def _group(graph, producer):
    found = [g for g in graph.groups if producer in g.producers]
    assert len(found) == 1, [g.to_dict() for g in graph.groups]
    return found[0]


def test_conv_batchnorm_next_conv(built):
    _, graph = built("conv_bn_conv")
    g = _group(graph, "c1")
    assert g.prunable and g.channels == 16
    assert g.members == ("bn1",) and g.consumers == ("c2",)
    assert {"conv2d", "batchnormalization"} <= set(g.kinds)
    g2 = _group(graph, "c2")
    assert g2.prunable and g2.consumers == ("out",) and g2.members == ("bn2",)
    assert "globalaveragepooling2d" in g2.kinds


def test_depthwise_shares_its_input_channels(built):
    _, graph = built("depthwise")
    g = _group(graph, "expand")
    assert g.prunable and set(g.members) == {"bn_e", "dw", "bn_dw"} and g.consumers == ("project",)
    assert "depthwiseconv2d" in g.kinds


def test_residual_add_ties_both_branches(built):
    _, graph = built("residual_add")
    g = _group(graph, "stem")
    assert set(g.producers) == {"stem", "b2"} and "add" in g.kinds and g.prunable
    assert set(g.consumers) == {"b1", "after"}
    inner = _group(graph, "b1")
    assert inner.prunable and inner.consumers == ("b2",)


def test_multiply_ties_the_gate_to_the_features(built):
    _, graph = built("squeeze_excite")
    g = _group(graph, "feat")
    assert set(g.producers) == {"feat", "se_expand"} and "multiply" in g.kinds
    assert set(g.consumers) == {"se_reduce", "after"} and g.prunable


def test_concatenation_keeps_each_input_its_own_group_at_an_offset(built):
    _, graph = built("concat")
    left, right = _group(graph, "left"), _group(graph, "right")
    assert left.index != right.index and left.prunable and right.prunable
    assert "concat" in left.kinds and "concat" in right.kinds
    lin, _ = graph.layer_io["fuse"]
    assert [(g, n) for g, n in lin.segments] == [(left.index, 16), (right.index, 24)]
    assert "bn_cat" in left.members and "bn_cat" in right.members


def test_dense_after_flatten_reads_every_spatial_copy(built):
    from edgekit.convert.pruning.groups import kept_indices

    _, graph = built("flatten_dense")
    g = _group(graph, "conv")
    assert g.prunable and "dense_after_flatten" in g.kinds and "flatten" in g.kinds
    lin, _ = graph.layer_io["fc"]
    assert lin.repeat == 4 and lin.width == 64
    idx = kept_indices(lin, {g.index: np.array([1, 5])})
    assert idx.tolist() == [1, 5, 17, 21, 33, 37, 49, 53]
    assert _group(graph, "fc").prunable           # dense -> dense


def test_exit_heads_prune_with_the_trunk_and_outputs_stay(built):
    _, graph = built("two_exits")
    g = _group(graph, "stem")
    assert "exit_head" in g.kinds and "exit0" in g.consumers and g.prunable
    for name in ("exit0", "exit1"):
        out = _group(graph, name)
        assert not out.prunable and "model output" in out.reason
    assert not graph.groups[0].prunable and "model input" in graph.groups[0].reason


def test_unsupported_layer_is_named_and_pruned_around(built):
    _, graph = built("with_reshape")
    assert [n for n, _ in graph.unsupported] == ["odd_reshape"]
    before = _group(graph, "before")
    assert not before.prunable and "odd_reshape" in before.reason and "Reshape" in before.reason
    assert _group(graph, "after1").prunable and _group(graph, "after2").prunable


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_surgery_equals_masking_and_costs_are_exact(built, kind):
    from edgekit.convert.flops import model_flops
    from edgekit.convert.pruning.compensate import Compensator
    from edgekit.convert.pruning.cost import flops_cost, params_cost
    from edgekit.convert.pruning.distortion import DistortionProbe, run_eager
    from edgekit.convert.pruning.surgery import rebuild

    model, graph = built(kind)
    x = inputs_for(model)
    keep = random_keep(graph, seed=len(kind))
    assert keep, "no prunable group in " + kind
    removed = {g: np.setdiff1d(np.arange(graph.groups[g].channels), k) for g, k in keep.items()}
    comp = Compensator(model, graph, x)                   # mean compensation on, in both paths
    pruned = rebuild(model, graph, keep, comp.adjustments(removed))
    masked = DistortionProbe(model, graph, x, comp).masked_outputs(removed)
    got = run_eager(pruned, x)
    for m, o in zip(masked, got):
        np.testing.assert_allclose(o, m, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(m).max())))
    assert pruned.count_params() < model.count_params()
    fractions = {g: len(k) / graph.groups[g].channels for g, k in keep.items()}
    assert flops_cost(model, graph).evaluate(fractions) == pytest.approx(model_flops(pruned), rel=1e-9)
    assert params_cost(model, graph).evaluate(fractions) == pytest.approx(pruned.count_params(), rel=1e-9)
    assert flops_cost(model, graph).full() == pytest.approx(model_flops(model), rel=1e-9)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_keeping_every_channel_reproduces_the_outputs_exactly(built, kind):
    from edgekit.convert.pruning.distortion import run_eager
    from edgekit.convert.pruning.surgery import rebuild

    model, graph = built(kind)
    x = inputs_for(model, seed=1)
    full = {g.index: np.arange(g.channels) for g in graph.prunable}
    copy = rebuild(model, graph, full)
    for a, b in zip(run_eager(model, x), run_eager(copy, x)):
        assert np.array_equal(a, b)
    assert list(copy.output_names) == list(model.output_names)
    assert copy.inputs[0].name == model.inputs[0].name


def _constant_channels():
    """c1 -> bn -> relu -> c2 (no bias) -> bn2 -> relu -> dense: channels 2 and 5 of c1 are constant after
    bn+relu (gamma 0, beta 1.5); 'valid' padding, so folding their mean in is exact."""
    import keras

    inp = keras.Input((10, 10, 3), name="img")
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.ReLU(name="r1")(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="c2")(x)
    x = keras.layers.ReLU(name="r2")(keras.layers.BatchNormalization(name="bn2")(x))
    out = keras.layers.Dense(4, name="out")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, out, name="constant_channels")
    gamma = np.ones(8, np.float32)
    beta = np.full(8, 0.2, np.float32)
    gamma[[2, 5]], beta[[2, 5]] = 0.0, 1.5
    model.get_layer("bn").set_weights([gamma, beta, np.zeros(8, np.float32), np.ones(8, np.float32)])
    return model


def test_mean_compensation_removes_constant_channels_exactly():
    from edgekit.convert.pruning.compensate import Compensator
    from edgekit.convert.pruning.distortion import distortion, run_eager
    from edgekit.convert.pruning.groups import find_groups
    from edgekit.convert.pruning.surgery import rebuild

    model = _constant_channels()
    graph = find_groups(model)
    g = _group(graph, "c1")
    x = inputs_for(model, 16)
    comp = Compensator(model, graph, x)
    assert comp.targets["c2"] == ("bn2", "moving_mean", -1.0)        # no bias: folded into the BatchNorm
    removed = {g.index: np.array([2, 5])}
    keep = {g.index: np.array([0, 1, 3, 4, 6, 7])}
    ref = run_eager(model, x)
    plain = run_eager(rebuild(model, graph, keep), x)
    folded = run_eager(rebuild(model, graph, keep, comp.adjustments(removed)), x)
    assert distortion(plain, ref) > 1e-3
    np.testing.assert_allclose(folded[0], ref[0], rtol=1e-4, atol=1e-5)
