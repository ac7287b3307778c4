"""Channel importance: each registered criterion ranks channels as constructed, and pruning keeps the top."""
import numpy as np
import pytest

from edgekit.errors import ConfigError
from tests.prune_models import conv_bn_conv, inputs_for, residual_add


@pytest.fixture(scope="module")
def crafted():
    """conv_bn_conv with c1's filters, bn1's scales and shifts set so each criterion has a known order."""
    from edgekit.convert.pruning.groups import find_groups

    model = conv_bn_conv()
    c1 = model.get_layer("c1")
    kernel, bias = [w.numpy() for w in c1.weights]
    kernel = np.zeros_like(kernel)
    rng = np.random.RandomState(0)
    l1_order = rng.permutation(16)                 # channel l1_order[i] gets the i-th smallest L1 norm
    for rank, c in enumerate(l1_order):
        kernel[..., c] = (rank + 1) / kernel[..., c].size
    # channels 0 and 1: same support size differs -> L1 and L2 disagree
    kernel[..., 0] = 0.0
    kernel[..., 1] = 0.0
    kernel[0, 0, 0, 0] = 3.0                       # L1 3, L2 3
    kernel[0, 0, :, 1] = 1.0                       # 3 input channels: L1 3, L2 sqrt(3)
    kernel[0, 1, 0, 1] = 0.5                       # L1 3.5, L2 ~1.80
    c1.set_weights([kernel, bias])
    bn = model.get_layer("bn1")
    gamma = np.linspace(0.1, 1.6, 16).astype(np.float32)[rng.permutation(16)]
    beta = np.zeros(16, np.float32)
    beta[[3, 7]] = -50.0                           # after ReLU these two channels are always zero
    bn.set_weights([gamma, beta, np.zeros(16, np.float32), np.ones(16, np.float32)])
    return model, find_groups(model), l1_order, gamma


def _scores(name, crafted):
    from edgekit.convert.pruning.importance import channel_importance

    model, graph, _, _ = crafted
    g = [g for g in graph.groups if "c1" in g.producers][0]
    return channel_importance(name, model, graph, inputs_for(model, 32))[g.index]


def test_registry_lists_the_criteria_and_rejects_others():
    from edgekit.convert.pruning.importance import IMPORTANCE, check_importance

    assert list(IMPORTANCE) == ["l1", "l2", "bn_scale", "activation"]
    with pytest.raises(ConfigError, match="unknown importance 'taylor'; allowed: l1, l2, bn_scale, activation"):
        check_importance("taylor")


def test_l1_and_l2_rank_filters_by_their_norms(crafted):
    _, _, order, _ = crafted
    l1, l2 = _scores("l1", crafted), _scores("l2", crafted)
    rest = [c for c in order if c not in (0, 1)]
    assert [c for c in np.argsort(l1, kind="stable") if c not in (0, 1)] == rest
    assert [c for c in np.argsort(l2, kind="stable") if c not in (0, 1)] == rest
    assert l1[1] > l1[0] and l2[0] > l2[1]          # the two criteria disagree where they should


def test_bn_scale_ranks_by_gamma(crafted):
    _, _, _, gamma = crafted
    s = _scores("bn_scale", crafted)
    assert list(np.argsort(s)) == list(np.argsort(np.abs(gamma)))


def test_bn_scale_without_batchnorm_is_an_error():
    from edgekit.convert.pruning.groups import find_groups
    from edgekit.convert.pruning.importance import channel_importance

    model = residual_add()
    with pytest.raises(ConfigError, match="bn_scale.*no.*allowed there: l1, l2, activation"):
        channel_importance("bn_scale", model, find_groups(model), inputs_for(model))


def test_activation_ranks_dead_channels_last(crafted):
    s = _scores("activation", crafted)
    assert set(np.argsort(s)[:2]) == {3, 7}
    assert s[3] == 0.0 and s[7] == 0.0 and np.all(np.delete(s, [3, 7]) > 0)


def test_group_scores_sum_over_every_producer():
    from edgekit.convert.pruning.groups import find_groups
    from edgekit.convert.pruning.importance import channel_importance

    model = residual_add()
    graph = find_groups(model)
    g = [g for g in graph.groups if "stem" in g.producers][0]
    norms = []
    for name in ("stem", "b2"):
        k = model.get_layer(name).weights[0].numpy()
        n = np.abs(k.reshape(-1, k.shape[-1])).sum(0)
        norms.append(n / n.mean())
    got = channel_importance("l1", model, graph, inputs_for(model))[g.index]
    np.testing.assert_allclose(got, norms[0] + norms[1], rtol=1e-6)


def test_pruning_keeps_the_most_important_filters(crafted):
    from edgekit.convert.prune import _top
    from edgekit.convert.pruning.surgery import rebuild

    model, graph, _, _ = crafted
    g = [g for g in graph.groups if "c1" in g.producers][0]
    scores = _scores("l1", crafted)
    keep = _top(scores, 8)
    pruned = rebuild(model, graph, {g.index: keep})
    kept = pruned.get_layer("c1").weights[0].numpy()
    want = model.get_layer("c1").weights[0].numpy()[..., np.sort(np.argsort(-scores)[:8])]
    np.testing.assert_array_equal(kept, want)
    assert pruned.get_layer("c2").weights[0].shape[2] == 8
