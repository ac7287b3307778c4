"""Fast checks of `make test-arm64`'s plumbing (tests/emulated/); the emulated run itself is not part of this."""
import json
import os
import pwd
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(HERE, "emulated"))

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


def test_main_without_root_says_skipped_and_returns_3(monkeypatch, capsys, tmp_path):
    import run_arm64

    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert run_arm64.main(["--cache", str(tmp_path / "never")]) == run_arm64.SKIPPED == 3
    assert capsys.readouterr().out.startswith("skipped: needs root (mount, chroot, debootstrap); running as uid 65534")
    assert not (tmp_path / "never").exists()


def test_as_an_unprivileged_user_the_script_exits_3(tmp_path):
    """The same, for real: the script run as 'nobody' (when this clone and venv are readable by it)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop to another user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run as")
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run(drop + [sys.executable, "-c", "open({!r}).close()".format(SCRIPT)], cwd="/",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        pytest.skip("user 'nobody' cannot read this clone or run its venv's Python")
    res = subprocess.run(drop + [sys.executable, SCRIPT, "--cache", str(tmp_path / "never")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, cwd="/")
    out = res.stdout.decode()
    assert res.returncode == 3, out
    assert out.startswith("skipped: needs root"), out


def test_board_venv_takes_the_project_pins_and_numpy_stays_below_2():
    pins = dict(p.split("==") for p in rootfs.board_pins())
    assert set(pins) == {"numpy", "tflite-runtime"}
    assert int(pins["numpy"].split(".")[0]) < 2, "tflite-runtime 2.14's aarch64 wheels need numpy<2"


def test_board_pins_name_what_is_missing(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("numpy==1.26.4\n# tflite-runtime==2.14.0\n")
    with pytest.raises(RuntimeError, match="pins no version of tflite-runtime"):
        rootfs.board_pins(str(path))


def test_bullseye_takes_the_newest_tflite_runtime_its_glibc_installs_and_numpy_from_pypi():
    stacks = rootfs.stacks()
    assert sorted(stacks) == ["bookworm", "bullseye"]
    bookworm, bullseye = dict(p.split("==") for p in stacks["bookworm"].pip), dict(p.split("==") for p in
                                                                                 stacks["bullseye"].pip)
    assert bullseye == {"numpy": bookworm["numpy"], "tflite-runtime": "2.13.0"}
    assert stacks["bullseye"].base_key() != stacks["bookworm"].base_key()


def test_each_suite_has_its_own_cache_dir(monkeypatch):
    monkeypatch.setenv("EDGEKIT_ARM64_ROOTFS", "/srv/pi-root")
    dirs = {name: rootfs.default_cache_dir(spec) for name, spec in rootfs.stacks().items()}
    assert dirs == {"bookworm": "/srv/pi-root", "bullseye": "/srv/pi-root-bullseye"}
    monkeypatch.delenv("EDGEKIT_ARM64_ROOTFS")
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/tmp/xdg")
    assert rootfs.default_cache_dir(rootfs.stacks()["bullseye"]) == "/var/tmp/xdg/edgekit/arm64-bullseye"
