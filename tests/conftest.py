"""Shared fixtures: demo bundles converted once per test session, and the shipped data splits."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")
DEMO = os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras")


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
