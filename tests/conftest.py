"""Shared fixtures: demo bundles converted once per test session, and the shipped data splits."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")
DEMO = os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras")


def conv_dense_builds(filters: int, units: int, samples: int):
    """A tiny seeded 3x3 conv + dense model on 8x8x3 inputs, its inputs, and its float32 and int8 builds
    (model, x, float32 blob, int8 blob): a real converted stage small enough for per-op tests."""
    import keras
    import numpy as np

    from edgekit.convert.quantize import quantize_stage

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv")(inp)
    y = keras.layers.Dense(units, name="fc")(keras.layers.GlobalAveragePooling2D(name="pool")(h))
    model = keras.Model(inp, {"y": y}, name="m")
    x = np.random.default_rng(0).random((samples, 8, 8, 3)).astype(np.float32)
    return model, x, quantize_stage(model, "float32", {"image": x}), quantize_stage(model, "int8", {"image": x})


@pytest.fixture(autouse=True)
def device_config(tmp_path_factory, monkeypatch):
    """Each test's device config (the remote dirs whose trusted_keys/ the device enforces) is its own, empty
    one, never the developer's ~/.config/edgekit/device.json (edgekit/device_keys.py)."""
    path = tmp_path_factory.mktemp("device") / "device.json"
    monkeypatch.setenv("EDGEKIT_DEVICE_CONFIG", str(path))
    return path


@pytest.fixture(scope="session")
def demo_bundles(tmp_path_factory):
    """precision -> bundle directory, converted lazily (each conversion takes a few seconds)."""
    from edgekit.convert import ConvertOptions, convert

    made = {}

    def get(precision: str, target: str = "raspberry-pi-5") -> str:
        key = (precision, target)
        if key not in made:
            out = str(tmp_path_factory.mktemp("bundle-{}-{}".format(precision, target)))
            made[key] = convert(ConvertOptions(DEMO, target, CALIB, out, precision=precision)).bundle_dir
        return made[key]

    return get


@pytest.fixture(scope="session")
def demo_model():
    import keras

    return keras.models.load_model(DEMO, compile=False)


@pytest.fixture(scope="session")
def test_split():
    from edgekit.data import load_data

    return load_data(TEST)
