"""Deploy logic that needs no SSH: input validation, the inventory, board checks, and the board-side agent."""
import ast
import json
import os
import subprocess
import sys

import pytest

from edgekit.deploy import agent
from edgekit.deploy.hosts import (BoardDefaults, HostSpec, check_remote_dir, check_remote_python, load_inventory,
                                  make_ssh_options, parse_host)
from edgekit.deploy.package import RUNTIME_DIR, build_payload
from edgekit.deploy.probe import BoardInfo, check_board
from edgekit.deploy.errors import BoardMismatchError
from edgekit.deploy.remote import run_remote
from edgekit.deploy.upload import agent_source
from edgekit.errors import BundleError, ConfigError, DataError
from edgekit.targets import get_target

from .bundles import write_bundle


@pytest.mark.parametrize("spec, expected", [
    ("pi@raspberrypi.local", HostSpec("pi", "raspberrypi.local", 22)),
    ("pi@10.0.0.7:2222", HostSpec("pi", "10.0.0.7", 2222)),
    ("nvidia@[fe80::1]:22", HostSpec("nvidia", "fe80::1", 22)),
    ("root@::1", HostSpec("root", "::1", 22)),
])
def test_parse_host(spec, expected):
    assert parse_host(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("pi@", "expected a host name or IP address, got ''"), ("pi@host:abc", "invalid port 'abc'"), ("pi@host:0", "invalid port 0"),
    ("p i@host", "invalid user name"), ("pi@ho st", "invalid host"), ("pi@[::1", "malformed address"),
    ("pi@host;reboot", "invalid host"), ("", "expected user@host"),
])
def test_parse_host_rejects(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_host(spec)


def test_remote_dir_and_python_checks():
    assert check_remote_dir("~/edgekit/") == "~/edgekit" and check_remote_dir("/opt/ek") == "/opt/ek"
    for bad, msg in (("/", "too broad"), ("~other/x", "only '~/"), ("a/../b", "'..' part"), ("a\nb", "control")):
        with pytest.raises(ConfigError, match=msg):
            check_remote_dir(bad)
    assert check_remote_python("/usr/bin/python3.8") == "/usr/bin/python3.8"
    with pytest.raises(ConfigError, match="invalid interpreter"):
        check_remote_python("python3 -c 'import os'")


def test_inventory(tmp_path):
    key = tmp_path / "keys" / "id_pi"
    key.parent.mkdir()
    key.write_text("not read until connecting")
    inv = tmp_path / "hosts.yaml"
    inv.write_text("boards:\n"
                   "  - {host: 10.0.0.7, user: pi, key: keys/id_pi, remote_dir: /opt/ek, target: raspberry-pi-4}\n"
                   "  - {host: jetson.lab, port: 2201, user: nvidia, remote_python: python3.8, name: jet}\n")
    defaults = BoardDefaults(ssh=make_ssh_options(None, str(tmp_path / "kh"), True, 7.0), remote_dir="~/ek")
    pi, jet = load_inventory(str(inv), defaults)
    assert pi.ssh.identity == str(key) and pi.ssh.accept_new_host_key and pi.ssh.timeout_s == 7.0
    assert (pi.remote_dir, pi.target, pi.label) == ("/opt/ek", "raspberry-pi-4", "pi@10.0.0.7:22")
    assert (jet.host.port, jet.remote_dir, jet.remote_python, jet.label, jet.ssh.identity) == (
        2201, "~/ek", "python3.8", "jet", None)


@pytest.mark.parametrize("text, message", [
    ("[]", "non-empty list"), ("- {host: a, user: pi, passwd: x}", r"unknown key\(s\) passwd; allowed: host, port"),
    ("- {host: a}", "missing key 'user'"), ("- {host: a, user: pi, port: 70000}", "invalid port 70000"),
    ("- {host: a, user: pi, key: nokey}", "identity file not found"),
    ("- {host: a, user: pi}\n- {host: a, user: pi}", "are the same board"), ("- [1]", "expected a mapping"),
])
def test_inventory_errors(tmp_path, text, message):
    inv = tmp_path / "hosts.yaml"
    inv.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_inventory(str(inv))


def _info(**kw) -> BoardInfo:
    base = dict(python="3.11.2", platform="linux", os="Debian 12", kernel="6.1", arch="aarch64", cores=4,
                memory_mb=3790, model="Raspberry Pi 4 Model B Rev 1.4", numpy="1.26.4",
                interpreters=(("ai_edge_litert", "2.1.0"), ("tensorflow", None), ("tflite_runtime", None)),
                free_bytes=10 ** 9, current=None, previous=None, release_state="absent", release_bad=(),
                remote_dir="/home/pi/edgekit")
    base.update(kw)
    return BoardInfo(**base)


def test_board_checks():
    pi4 = get_target("raspberry-pi-4")
    assert check_board(_info(), pi4, "raspberry-pi-4", 10 ** 6, False, "pi") == []
    with pytest.raises(BoardMismatchError, match="CPU arch is armv7l.*numpy is not importable"):
        check_board(_info(arch="armv7l", numpy=None), pi4, "raspberry-pi-4", 1, True, "pi")
    with pytest.raises(BoardMismatchError, match=r"Python is 3\.7\.3, the runtime needs >= 3\.8"):
        check_board(_info(python="3.7.3"), pi4, "raspberry-pi-4", 1, True, "pi")
    with pytest.raises(BoardMismatchError, match=r"only 2\.0 MB free"):
        check_board(_info(free_bytes=2 * 10 ** 6), pi4, "raspberry-pi-4", 5 * 10 ** 6, True, "pi")
    pi5_board = _info(model="Raspberry Pi 5 Model B Rev 1.0", cores=4)
    with pytest.raises(BoardMismatchError, match="profile expects a Raspberry Pi 4; pass --force"):
        check_board(pi5_board, pi4, "raspberry-pi-4", 1, False, "pi")
    warnings = check_board(pi5_board, pi4, "raspberry-pi-4", 1, True, "pi")
    assert warnings == ["the board says it is 'Raspberry Pi 5 Model B Rev 1.0', the profile expects a Raspberry Pi 4"]


def test_a_new_board_is_one_profile_file(tmp_path):
    """The board model flash checks comes from the profile itself: a board added as one YAML file is checked too."""
    import yaml

    from edgekit.targets import load_target_file, targets_dir

    with open(os.path.join(targets_dir(), "raspberry-pi-4.yaml")) as f:
        data = yaml.safe_load(f)
    data.update(name="rock-pi-4", board_model="Radxa ROCK Pi 4")
    (tmp_path / "rock-pi-4.yaml").write_text(yaml.safe_dump(data))
    rock = get_target("rock-pi-4", str(tmp_path))
    assert rock.board_model == "Radxa ROCK Pi 4"
    assert check_board(_info(model="Radxa ROCK Pi 4B"), rock, "rock-pi-4", 1, False, "r") == []
    assert check_board(_info(), rock, "rock-pi-4", 1, True, "r") == [
        "the board says it is 'Raspberry Pi 4 Model B Rev 1.4', the profile expects a Radxa ROCK Pi 4"]
    del data["board_model"]
    (tmp_path / "rock-pi-4.yaml").write_text(yaml.safe_dump(data))
    assert load_target_file(str(tmp_path / "rock-pi-4.yaml")).board_model is None
    assert check_board(_info(), get_target("rock-pi-4", str(tmp_path)), "rock-pi-4", 1, False, "r") == []


def test_payload_lists_bundle_and_runtime(tmp_path, stage_files):
    write_bundle(tmp_path / "b", stage_files[0])
    payload = build_payload(str(tmp_path / "b"))
    rels = [f.rel for f in payload.files]
    assert rels[:4] == ["manifest.json", "stage_0.tflite", "stage_1.tflite", "report.json"]
    assert RUNTIME_DIR + "/edgekit/runtime/runner.py" in rels and RUNTIME_DIR + "/edgekit/data.py" in rels
    assert not any("deploy" in r or "convert" in r for r in rels)
    (tmp_path / "b" / "stage_1.tflite").write_bytes(b"changed")
    with pytest.raises(BundleError, match="stage file altered"):
        build_payload(str(tmp_path / "b"))


def test_manifest_names_cannot_escape(tmp_path, stage_files):
    manifest = write_bundle(tmp_path / "b", stage_files[0])
    d = json.loads((tmp_path / "b" / "manifest.json").read_text())
    d["stages"][0]["file"] = "../../home/pi/.bashrc"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match="invalid name"):
        build_payload(str(tmp_path / "b"))
    assert manifest.stages[0].file == "stage_0.tflite"
    base = tmp_path / "release"
    base.mkdir()
    os.symlink("/etc", str(base / "etc"))
    for rel in ("../x", "/etc/passwd", "a/../../b", "etc/passwd", "a//b", ""):
        with pytest.raises(agent.Refused):
            agent.safe_join(str(base), rel)


def test_run_remote_checks_arguments_before_connecting(tmp_path):
    data = tmp_path / "x.npz"
    data.write_bytes(b"")
    for release, path, args, error in (("../../etc", data, [], ConfigError), ("current", tmp_path / "x.csv", [], DataError),
                                       ("current", data, "--full-depth", ConfigError),
                                       ("current", data, ["a\nb"], ConfigError)):
        with pytest.raises(error):
            run_remote("pi@192.0.2.1", release, str(path), args)


def _agent(*args, stdin=None):
    got = subprocess.run([sys.executable, "-c", agent_source()] + [str(a) for a in args],
                         input=json.dumps(stdin or {}), capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def test_agent_install_switch_rollback_locally(tmp_path):
    """The board-side steps, run here directly: verify, refuse a bad staging dir, switch, swap back."""
    remote = tmp_path / "ek"
    ids = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
    for rid, body in zip(ids, (b"one", b"two")):
        staging = remote / "releases" / ".partial-{}-0123456789ab".format(rid)
        staging.mkdir(parents=True)
        (staging / "f.bin").write_bytes(body)
        marker = {"files": {"f.bin": agent.sha256(str(staging / "f.bin"))}, "flashed_at": rid}
        bad = dict(marker, files={"f.bin": "0" * 64})
        assert _agent("install", remote, rid, staging.name, 3, stdin=bad)["ok"] is False
        assert not staging.exists()                               # refused uploads are removed
        staging.mkdir()
        (staging / "f.bin").write_bytes(body)
        assert _agent("install", remote, rid, staging.name, 3, stdin=marker)["current"] == rid
    assert os.readlink(str(remote / "current")) == "releases/" + ids[1]
    assert _agent("rollback", remote)["current"] == ids[0]
    listing = _agent("list", remote)
    assert (listing["current"], listing["previous"]) == tuple(ids) and len(listing["releases"]) == 2
    assert "invalid release id" in _agent("install", remote, "../x", "-", 3, stdin={"files": {}})["error"]
    assert "unsafe file name" in _agent("probe", remote, ids[0], stdin={"files": {"../../x": "0" * 64}})["error"]


def test_agent_keeps_old_python_syntax_and_import_stays_light():
    ast.parse(agent_source(), feature_version=(3, 5))
    got = subprocess.run([sys.executable, "-c", "import sys, edgekit.deploy, edgekit.cli.flash; "
                          "print(sorted(m for m in ('paramiko', 'tensorflow') if m in sys.modules))"],
                         capture_output=True, text=True, timeout=60)
    assert got.stdout.strip() == "[]", got.stderr
