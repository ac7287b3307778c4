"""auto:N exits placed by measured prefix latency rather than FLOPs, and head designs that keep spatial resolution.
Positions are fixed numbers where the choice is checked (no assertion on a measured time); the measuring path
runs real conversions and interpreters on a tiny model."""
import os

import numpy as np
import pytest

from edgekit.convert.exit_heads import design_head
from edgekit.convert.exits import PLACES, ExitOptions, attach_exits, choose_auto
from edgekit.data import Dataset
from edgekit.errors import ConfigError
from tests.conftest import ROOT

CNN = os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras")
# the plain CNN's cut candidates at the prefix-latency fractions measured once on an x86 host (int8): the stem is
# 18% of the time at 1% of the FLOPs, the first block 55% at 27%
MEASURED = {"relu1_1": 0.18, "pool1": 0.55, "relu2_1": 0.65, "relu2_2": 0.74, "pool2": 0.84, "relu3_1": 0.88}


@pytest.fixture(scope="module")
def cnn():
    import keras

    return keras.models.load_model(CNN, compile=False)


def _fixed(table):
    seen = []

    def positions(cands):
        seen.append([c.layer for c in cands])
        return [table[c.layer] for c in cands]
    return positions, seen


def test_auto_by_latency_follows_the_positions_given_not_the_flops(cnn):
    assert [c.layer for c in choose_auto(cnn, 2)] == ["relu2_1", "relu2_2"]        # FLOPs: 38% and 57%
    positions, seen = _fixed(MEASURED)
    assert [c.layer for c in choose_auto(cnn, 2, positions=positions)] == ["relu1_1", "relu2_1"]   # 1/3, 2/3
    assert seen == [list(MEASURED)]                        # asked once, for every candidate in depth order
    assert [c.layer for c in choose_auto(cnn, 1, positions=_fixed(MEASURED)[0])] == ["pool1"]
    assert [c.layer for c in choose_auto(cnn, 3, positions=_fixed(MEASURED)[0])] == ["relu1_1", "pool1", "relu2_2"]
    flat = dict(MEASURED, relu1_1=0.5, pool1=0.5)          # ties go to the earlier cut, and cuts stay nested
    assert [c.layer for c in choose_auto(cnn, 2, positions=_fixed(flat)[0])] == ["relu1_1", "relu2_1"]


def test_latency_placement_is_recorded_and_needs_positions(cnn):
    from edgekit.data import load_data
    from tests.conftest import CALIB

    calib = load_data(CALIB)
    data = Dataset(calib.x[:120], calib.y[:120], "small")
    res = attach_exits(cnn, ExitOptions(auto=1, epochs=1, place="latency"), data, positions=_fixed(MEASURED)[0])
    assert res.report["placement"] == {"by": "latency", "latency_fraction_of_prefix": MEASURED}
    assert [c.layer for c in res.cuts] == ["pool1"]
    with pytest.raises(ConfigError, match="placement 'latency' needs the prefix latencies measured"):
        attach_exits(cnn, ExitOptions(auto=1, epochs=1, place="latency"), data)
    named = attach_exits(cnn, ExitOptions(layers=("relu1_1",), epochs=1), data)
    assert named.report["placement"] == {"by": "layer names", "latency_fraction_of_prefix": None}


@pytest.mark.parametrize("fields, needle", [
    ({"auto": 2, "place": "time"}, "exit placement 'time'; allowed: flops, latency"),
    ({"layers": ("pool1",), "place": "latency"}, "exit placement 'latency' applies to auto:N"),
])
def test_bad_placements(fields, needle):
    with pytest.raises(ConfigError) as err:
        ExitOptions(**fields).check()
    assert needle in str(err.value)


def test_cli_placement_option_maps_and_needs_exits():
    from edgekit.cli import options
    from edgekit.cli.convert import exit_options

    assert options.EXIT_PLACES == PLACES
    assert exit_options("auto:2", None, None, None, None, None, None, "latency").place == "latency"
    assert exit_options("auto:2", None, None, None, None, None, None).place == "flops"
    with pytest.raises(ConfigError, match="--exit-placement given without --exits"):
        exit_options(None, None, None, None, None, None, None, "latency")


def test_head_prefers_the_finer_grid_over_a_wider_hidden_layer():
    # after the plain CNN's stem (32x32x32) with a 10% budget of its 0.64 MFLOPs: a 4x4 grid with no hidden
    # layer fits (42 kFLOPs), and so does a 2x2 grid with 64 hidden units (54 kFLOPs); the grid wins
    d = design_head((32, 32, 32), 10, 64000, 1e9, "relu1_1")
    assert d.pooled == (4, 4, 32) and d.width == 0
    d = design_head((32, 32, 32), 10, 1e9, 1e9, "relu1_1")                # no limit: the finest grid, widest
    assert d.pooled == (4, 4, 32) and d.width == 256
    assert design_head((96,), 10, 1e9, 1e9, "gap").width == 256           # no spatial axes: widest


def test_prefix_times_measure_every_cut_and_the_backbone_once():
    import keras

    from edgekit.convert import exit_latency
    from edgekit.convert.exits import _CutGraph, _representatives
    from edgekit.targets import get_target

    L = keras.layers
    inp = keras.Input((16, 16, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    out = L.Dense(4, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, out, name="two_convs")
    g = _CutGraph(model)
    cuts = _representatives(g, [c for c in g.all_cuts() if g.problem(c, 1) is None])
    assert [c.layer for c in cuts] == ["c1", "c2"]
    x = np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32)
    target = get_target("host-x86_64")
    before = len(exit_latency._MEMO)
    times, full = exit_latency.prefix_times(model, cuts, x, "float32", target)
    assert len(times) == 2 and all(t > 0 for t in times) and full > 0
    assert len(exit_latency._MEMO) == before + 1
    assert exit_latency.prefix_times(model, cuts, x, "float32", target) == (times, full)   # measured once
    got = exit_latency.latency_positions(model, x, "float32", target)(cuts)
    assert got == [min(1.0, t / full) for t in times]
