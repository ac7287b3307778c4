"""Split parity: chaining the stage sub-models reproduces the original model exactly."""
import numpy as np
import pytest

from edgekit.convert.split import run_stages_keras, split_model
from edgekit.errors import ModelError


def _skip_across_cut():
    """exit0 is taken inside a residual block, so the skip (a) and the branch (b) both cross the cut."""
    import keras

    inp = keras.Input((16, 16, 1), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(a)
    e0 = keras.layers.Dense(10, name="exit0")(keras.layers.GlobalAveragePooling2D(name="g0")(b))
    c = keras.layers.Conv2D(8, 3, padding="same", name="c3")(b)
    d = keras.layers.Add(name="add")([a, c])
    e1 = keras.layers.Dense(10, name="exit1")(keras.layers.GlobalAveragePooling2D(name="g1")(d))
    f = keras.layers.Conv2D(8, 3, padding="same", name="c4")(d)
    g = keras.layers.Concatenate(name="cat")([inp, f])          # the model input crosses two cuts
    e2 = keras.layers.Dense(10, name="exit2")(keras.layers.Flatten(name="fl")(g))
    return keras.Model(inp, [e0, e1, e2])


def test_frontier_holds_every_tensor_crossing_the_cut():
    stages = split_model(_skip_across_cut())
    assert stages[0].input_names == ("image",)
    assert set(stages[0].carried_names) == {"c_c1", "c_c2", "image"}
    assert set(stages[1].input_names) == {"c_c1", "c_c2", "image"}
    assert set(stages[1].carried_names) == {"c_add", "image"}
    assert set(stages[2].input_names) == {"c_add", "image"}


def test_chained_stages_reproduce_the_model():
    model = _skip_across_cut()
    x = np.random.default_rng(0).random((5, 16, 16, 1), dtype=np.float32)
    ref = [np.asarray(o) for o in model(x)]
    got = run_stages_keras(split_model(model), x, "image")
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


def test_demo_model_split_parity(demo_model, test_split):
    x = test_split.x[:16]
    ref = [np.asarray(o) for o in demo_model(x)]
    stages = split_model(demo_model)
    assert len(stages) == 3
    for r, g in zip(ref, run_stages_keras(stages, x, "image")):
        np.testing.assert_allclose(r, g, atol=1e-6)


def test_single_output_model_is_refused():
    import keras

    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ModelError, match="single output and no exits"):
        split_model(model)
