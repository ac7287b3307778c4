"""The trust chain on the board: the bytes that were verified are the bytes that run, and the device's key setting
comes from fixed places (never from where a bundle's path leads) and fails closed when malformed."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgekit.runtime.runner as runner_mod
from bundle_edit import copy_bundle, read_stage, stage_path, write_stage, zero_weights
from edgekit.errors import BundleError, ConfigError
from edgekit.runtime import EarlyExitRunner
from edgekit.signing import ENV_TRUSTED_KEYS


@pytest.fixture(autouse=True)
def no_device_setting(monkeypatch):
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


# -- the device's key setting: fixed places, never where a bundle's path resolves ----------------------------------
RID = "0123456789abcdef"


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory):
    from edgekit.signing import generate_key

    d = tmp_path_factory.mktemp("trust-keys")
    key, pub, kid = generate_key(str(d / "owner"))
    return {"key": key, "pub": pub, "id": kid}


@pytest.fixture
def device(good, signing_keys, tmp_path):
    """A flashed layout: remote/releases/<id> (signed), remote/current -> releases/<id>, remote/trusted_keys/
    trusting the owner; and an unsigned bundle elsewhere on the same device."""
    from edgekit.signing import sign_bundle

    remote = tmp_path / "edgekit"
    release = copy_bundle(good, str(remote / "releases" / RID))
    sign_bundle(release, signing_keys["key"])
    os.symlink("releases/" + RID, str(remote / "current"))
    (remote / "trusted_keys").mkdir()
    (remote / "trusted_keys" / "owner.pub").write_text(open(signing_keys["pub"]).read())
    elsewhere = copy_bundle(good, str(tmp_path / "elsewhere" / RID))
    return {"remote": remote, "release": release, "elsewhere": elsewhere}


def _swap_link(path, target):
    tmp = str(path) + ".tmp"
    os.symlink(str(target), tmp)
    os.replace(tmp, str(path))


def _link_release(dev):
    shutil.rmtree(dev["release"])
    os.symlink(dev["elsewhere"], dev["release"])


def _link_releases(dev):
    """releases/ itself replaced by a link to a directory elsewhere."""
    shutil.rmtree(str(dev["remote"] / "releases"))
    os.symlink(os.path.dirname(dev["elsewhere"]), str(dev["remote"] / "releases"))


LINKS = {
    "current": lambda dev: _swap_link(dev["remote"] / "current", dev["elsewhere"]),
    "releases/<id>": _link_release,
    "releases/": _link_releases,
}


@pytest.mark.parametrize("linked", sorted(LINKS))
def test_a_release_linked_out_of_its_releases_dir_is_refused(device, linked):
    assert EarlyExitRunner(str(device["remote"] / "current")).signed_by is not None
    LINKS[linked](device)
    for name in ("current",) if linked == "current" else ("current", "releases/" + RID):
        with pytest.raises(BundleError, match=r"resolves to .*elsewhere.*outside .*/releases/; with a device key "
                                              r"setting \(.*trusted_keys\) a release runs only from inside"):
            EarlyExitRunner(str(device["remote"] / name))


def test_python_m_runtime_refuses_a_release_linked_elsewhere(device, tmp_path):
    data = str(tmp_path / "x.npz")
    np.savez(data, x=np.zeros((2, 32, 32, 1), np.float32))
    LINKS["current"](device)
    got = subprocess.run([sys.executable, "-m", "edgekit.runtime", str(device["remote"] / "current"), data],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stdout == "", got
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "outside" in lines[0] and lines[0].startswith("edgekit: error: bundle "), got.stderr


def test_the_recorded_device_setting_applies_wherever_the_bundle_is(device, device_config):
    """A bundle given by a path outside every release layout (as `run --host` passes the resolved path) is
    still the device's business once flash recorded the remote dir."""
    assert EarlyExitRunner(device["elsewhere"]).signed_by is None          # not recorded: an ordinary bundle
    device_config.write_text(json.dumps({"format": "edgekit-device-v1", "remote_dirs": [str(device["remote"])]}))
    with pytest.raises(BundleError, match=r"is not signed .*trusted_keys requires a signature"):
        EarlyExitRunner(device["elsewhere"])
    assert EarlyExitRunner(str(device["remote"] / "current")).signed_by is not None


MALFORMED = {
    "EDGEKIT_TRUSTED_KEYS=''": (lambda dev, env, cfg: env.setenv(ENV_TRUSTED_KEYS, ""),
                                r"EDGEKIT_TRUSTED_KEYS='' names no key"),
    "EDGEKIT_TRUSTED_KEYS=':'": (lambda dev, env, cfg: env.setenv(ENV_TRUSTED_KEYS, ":"),
                                 r"EDGEKIT_TRUSTED_KEYS=':' names no key"),
    "trusted_keys a plain file": (lambda dev, env, cfg: _replace(dev["remote"] / "trusted_keys", "file"),
                                  r"trusted_keys is not a directory; allowed: a directory of \*.pub files"),
    "trusted_keys a dangling link": (lambda dev, env, cfg: _replace(dev["remote"] / "trusted_keys", "dangling"),
                                     r"trusted_keys is a dangling link; allowed"),
    "device config not JSON": (lambda dev, env, cfg: cfg.write_text("{remote_dirs"),
                               r"device config .* is unreadable or malformed"),
    "device config of another shape": (lambda dev, env, cfg: cfg.write_text('{"remote_dirs": "x"}'),
                                       r"device config .* is unreadable or malformed"),
    "EDGEKIT_DEVICE_CONFIG=''": (lambda dev, env, cfg: env.setenv("EDGEKIT_DEVICE_CONFIG", ""),
                                 r"EDGEKIT_DEVICE_CONFIG is set but empty"),
}


def _replace(path, how):
    shutil.rmtree(str(path))
    if how == "file":
        path.write_text("edgekit-ed25519 AAAA\n")
    else:
        os.symlink(str(path) + "-gone", str(path))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_device_setting_fails_closed(device, device_config, monkeypatch, case):
    make, message = MALFORMED[case]
    make(device, monkeypatch, device_config)
    for bundle in (device["elsewhere"], str(device["remote"] / "current")):
        if "trusted_keys a" in case and bundle == device["elsewhere"]:
            continue                  # that remote dir is not recorded: the bundle elsewhere is not its business
        with pytest.raises(ConfigError, match=message):
            EarlyExitRunner(bundle)
