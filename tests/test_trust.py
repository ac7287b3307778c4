"""The trust chain on the board: the bytes that were verified are the bytes that run."""
import os

import numpy as np
import pytest

import edgekit.runtime.runner as runner_mod
from bundle_edit import copy_bundle, read_stage, stage_path, write_stage, zero_weights
from edgekit.runtime import EarlyExitRunner
from edgekit.signing import ENV_TRUSTED_KEYS


@pytest.fixture(autouse=True)
def no_device_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_TRUSTED_KEYS, raising=False)


@pytest.fixture(scope="module")
def good(demo_bundles, tmp_path_factory):
    return copy_bundle(demo_bundles("float32"), str(tmp_path_factory.mktemp("toctou") / "good"))


def _overwrite_in_place(path: str, data: bytes) -> None:
    """Rewrite a file's bytes in place (same inode, same size) and put its mtime back, as the probe did."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_stage_file_rewritten_between_verification_and_load_is_not_what_runs(good, tmp_path, test_split,
                                                                                monkeypatch):
    x = test_split.x[:200]
    want = EarlyExitRunner(good).run(x, full_depth=True).predictions
    evil_bytes = zero_weights(read_stage(good, 0))
    assert len(evil_bytes) == len(read_stage(good, 0))
    evil = copy_bundle(good, str(tmp_path / "evil"))
    write_stage(evil, 0, evil_bytes)                        # the altered file really answers differently
    assert (EarlyExitRunner(evil).run(x, full_depth=True).predictions != want).mean() > 0.5

    victim = copy_bundle(good, str(tmp_path / "victim"))
    real = runner_mod.load_checked
    swapped = []

    def verified_then_swapped(*args, **kwargs):
        out = real(*args, **kwargs)                         # every sha256 checked against the manifest ...
        _overwrite_in_place(stage_path(victim, 0), evil_bytes)   # ... then the file changes before the load
        swapped.append(True)
        return out

    monkeypatch.setattr(runner_mod, "load_checked", verified_then_swapped)
    got = EarlyExitRunner(victim).run(x, full_depth=True).predictions
    assert swapped and read_stage(victim, 0) == evil_bytes
    np.testing.assert_array_equal(got, want)               # the verified (good) weights ran
