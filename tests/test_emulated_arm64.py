"""Fast checks of `make test-arm64`'s plumbing (tests/emulated/); the emulated run itself is not part of this."""
import json
import os
import pwd
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "emulated"))

import rootfs  # noqa: E402

SCRIPT = os.path.join(HERE, "emulated", "run_arm64.py")


def test_stamp_key_survives_the_json_round_trip():
    spec = rootfs.RootfsSpec()
    assert json.loads(json.dumps(spec.base_key())) == spec.base_key()
    assert rootfs.RootfsSpec(include=("python3",)).base_key() != spec.base_key()


def test_unreachable_registry_is_a_skip_not_a_failure():
    spec = rootfs.RootfsSpec(mirror="http://127.0.0.1:9/debian")      # discard port: nothing listens
    with pytest.raises(rootfs.Skip, match="package registry unreachable: http://127.0.0.1:9/debian"):
        rootfs.check_registries(spec)


def test_cache_dir_is_outside_the_clone_and_movable(monkeypatch):
    monkeypatch.delenv("EDGEKIT_ARM64_ROOTFS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/tmp/xdg")
    assert rootfs.default_cache_dir(rootfs.RootfsSpec()) == "/var/tmp/xdg/edgekit/arm64-bookworm"
    monkeypatch.setenv("EDGEKIT_ARM64_ROOTFS", "/srv/pi-root")
    assert rootfs.default_cache_dir(rootfs.RootfsSpec()) == "/srv/pi-root"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_safe_rmtree_refuses_a_root_with_something_mounted_inside(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "dev")], check=True)
    try:
        with pytest.raises(RuntimeError, match="still mounted inside"):
            rootfs.safe_rmtree(str(root))
        assert (root / "dev").is_dir()
    finally:
        subprocess.run(["umount", str(root / "dev")], check=True)
    rootfs.safe_rmtree(str(root))
    assert not root.exists()


def test_without_root_the_target_says_skipped_and_exits_3(tmp_path):
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user 'nobody' to run as")
        if not shutil.which("setpriv"):
            pytest.skip("no setpriv to drop root")
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    else:
        prefix = []
    res = subprocess.run(prefix + [sys.executable, SCRIPT, "--cache", str(tmp_path / "never")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, cwd="/")
    out = res.stdout.decode()
    assert res.returncode == 3, out
    assert out.startswith("skipped: needs root"), out
    assert not (tmp_path / "never").exists()
