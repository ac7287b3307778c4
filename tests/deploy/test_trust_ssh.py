"""The board's key setting is the device's, against a real sshd: releases linked out of releases/ are refused by
`run --host`, a malformed setting refuses every flash, and a recorded remote dir's keys cover the whole device."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_edit import read_stage, write_stage, zero_weights
from edgekit.deploy import DeployError, flash, rollback, run_remote
from edgekit.errors import BundleError, ConfigError
from edgekit.signing import SIGNATURE_NAME, generate_key, sign_bundle

from .conftest import known_hosts_for, make_board

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def owner(tmp_path_factory, bundles):
    d = tmp_path_factory.mktemp("trust-ssh")
    key, pub, kid = generate_key(str(d / "owner"))
    signed = d / "signed"
    shutil.copytree(str(bundles["A"]), str(signed))
    sign_bundle(str(signed), key)
    return {"key": key, "pub": pub, "id": kid, "signed": str(signed)}


@pytest.fixture
def device(sshd_factory, client_keys, tmp_path):
    """start(env=None, name='board'): a board (remote dir `name`) on this test's own server, i.e. its own device
    with its own device config (server.device_config); the same env gives the same server."""
    servers = {}

    def start(env=None, name="board"):
        key = tuple(sorted((env or {}).items()))
        if key not in servers:
            servers[key] = sshd_factory(env)
        server = servers[key]
        start.server = server
        return make_board(server, tmp_path / name, known_hosts_for(tmp_path / "known_hosts", server),
                          client_keys["good"])

    return start


def _trust(board, pub):
    keys = Path(board.remote_dir, "trusted_keys")
    keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(pub, str(keys / "owner.pub"))


def _evil_copy(release: str, dest: Path) -> str:
    """The release (runtime included) with stage_0's weights zeroed, its manifest fixed up, unsigned."""
    shutil.copytree(release, str(dest))
    write_stage(str(dest), 0, zero_weights(read_stage(str(dest), 0)))
    os.remove(str(dest / SIGNATURE_NAME))
    return str(dest)


def _link_current(board, rid, elsewhere):
    tmp = os.path.join(board.remote_dir, "current.tmp")
    os.symlink(str(elsewhere), tmp)
    os.replace(tmp, os.path.join(board.remote_dir, "current"))


def _link_release(board, rid, elsewhere):
    release = os.path.join(board.remote_dir, "releases", rid)
    shutil.rmtree(release)
    os.symlink(str(elsewhere), release)


def _link_releases(board, rid, elsewhere):
    releases = os.path.join(board.remote_dir, "releases")
    shutil.rmtree(releases)
    os.symlink(os.path.dirname(str(elsewhere)), releases)


@pytest.mark.parametrize("relink", [_link_current, _link_release, _link_releases],
                         ids=["current", "releases/<id>", "releases/"])
def test_run_host_refuses_a_release_linked_out_of_releases(device, owner, data_file, tmp_path, relink):
    board = device()
    _trust(board, owner["pub"])
    rid = flash(owner["signed"], board).bundle_id
    assert len(run_remote(board, "current", str(data_file))["predictions"]) == 20
    evil = _evil_copy(os.path.join(board.remote_dir, "releases", rid), tmp_path / "elsewhere" / rid)
    relink(board, rid, evil)
    for name in ("current", rid):
        if relink is _link_current and name == rid:
            continue                                    # releases/<id> itself is untouched then
        with pytest.raises(DeployError, match=r"release '{}' resolves to .*/elsewhere/{}, outside .*/board/releases/; "
                                              r"a release runs only from inside its own".format(name, rid)):
            run_remote(board, name, str(data_file))


def _plain_file(board):
    os.makedirs(board.remote_dir)
    Path(board.remote_dir, "trusted_keys").write_text("edgekit-ed25519 AAAA\n")


def _dangling(board):
    os.makedirs(board.remote_dir)
    os.symlink(os.path.join(board.remote_dir, "gone"), os.path.join(board.remote_dir, "trusted_keys"))


@pytest.mark.parametrize("env,make,said", [
    ({}, _plain_file, r"trusted_keys is not a directory"),
    ({}, _dangling, r"trusted_keys is a dangling link"),
    ({"EDGEKIT_TRUSTED_KEYS": ""}, None, r"EDGEKIT_TRUSTED_KEYS='' names no key"),
], ids=["trusted_keys a plain file", "trusted_keys a dangling link", "EDGEKIT_TRUSTED_KEYS empty"])
def test_a_malformed_board_setting_refuses_every_flash(device, owner, bundles, env, make, said):
    board = device(env)
    if make is not None:
        make(board)
    for bundle in (str(bundles["A"]), owner["signed"]):
        with pytest.raises(ConfigError, match=r"the board's key setting is malformed: .*{}.*nothing is "
                                              r"flashed".format(said)):
            flash(bundle, board)
    releases = os.path.join(board.remote_dir, "releases")
    assert not os.path.isdir(releases) or os.listdir(releases) == []


def test_a_malformed_device_config_refuses_every_flash(device, owner):
    board = device()
    flash(owner["signed"], board)                   # flash records its remote dir in the board's device config
    config = device.server.device_config
    assert json.loads(config.read_text()) == {"format": "edgekit-device-v1", "remote_dirs": [board.remote_dir]}
    config.write_text("{not json")
    with pytest.raises(ConfigError, match=r"malformed: device config .* is unreadable or malformed"):
        flash(owner["signed"], board)


def test_the_keys_of_one_remote_dir_cover_the_whole_device(device, owner, bundles, data_file):
    """A board whose recorded remote dir has trusted_keys/ runs (and takes) only signed bundles in any dir."""
    first = device(name="first")
    _trust(first, owner["pub"])
    flash(owner["signed"], first)
    second = device(name="second")                  # the same server (device), another remote dir, no keys
    with pytest.raises(BundleError, match=r"is not signed .* the board .*first/trusted_keys\) requires"):
        flash(str(bundles["A"]), second)
    assert flash(owner["signed"], second).signed_by == owner["id"]
    assert len(run_remote(second, "current", str(data_file))["predictions"]) == 20


def test_a_board_without_cryptography_verifies_signed_bundles(device, owner, bundles, data_file, tmp_path):
    """Verification needs no third-party package on the board: a signed bundle flashes and runs there, an
    unsigned one is refused, and rolling back stays possible."""
    block = tmp_path / "no-cryptography"
    block.mkdir()
    (block / "cryptography.py").write_text("raise ImportError('not installed on this board')\n")
    python = tmp_path / "python-without-cryptography"
    python.write_text('#!/bin/sh\nPYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} exec {} "$@"\n'.format(block,
                                                                                              sys.executable))
    python.chmod(0o755)
    board = dataclasses.replace(device(), remote_python=str(python))
    first = flash(owner["signed"], board)                           # no keys yet: any bundle
    _trust(board, owner["pub"])
    resigned = tmp_path / "signed-b"
    shutil.copytree(str(bundles["B"]), str(resigned))
    sign_bundle(str(resigned), owner["key"])
    second = flash(str(resigned), board)
    assert second.signed_by == owner["id"]
    out = run_remote(board, "current", str(data_file))
    assert len(out["predictions"]) == 20
    probe = subprocess.run([str(python), "-c", "import cryptography"], capture_output=True, text=True)
    assert probe.returncode != 0 and "not installed on this board" in probe.stderr
    with pytest.raises(BundleError, match="is not signed"):
        flash(str(bundles["A"]), board)
    assert rollback(board).current == first.bundle_id
    assert len(run_remote(board, "current", str(data_file))["predictions"]) == 20
