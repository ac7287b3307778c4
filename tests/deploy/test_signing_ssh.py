"""`edgekit flash --require-signature / --trusted-key` and the board's own DIR/trusted_keys/, against a real sshd."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.deploy import DeployError, flash, rollback, run_remote
from edgekit.deploy.signature import SignaturePolicy
from edgekit.errors import BundleError, ConfigError
from edgekit.manifest import read_manifest
from edgekit.signing import generate_key, sign_bundle

from .conftest import EDGEKIT, board_args, link, one_line_error

pytestmark = pytest.mark.ssh


@pytest.fixture
def sshd(sshd_factory):
    """A server (a device) per test: a board's trusted_keys/, once flash recorded its remote dir in the device
    config, applies to every bundle on that device, so tests that give boards keys do not share one."""
    return sshd_factory()


@pytest.fixture(scope="module")
def signing(tmp_path_factory, bundles):
    d = tmp_path_factory.mktemp("signing")
    owner_key, owner_pub, owner_id = generate_key(str(d / "owner"))
    other_key, other_pub, other_id = generate_key(str(d / "other"))
    out = {"owner_pub": owner_pub, "owner_id": owner_id, "other_pub": other_pub, "other_id": other_id}
    for name, key, src in (("signed", owner_key, "A"), ("foreign", other_key, "A"), ("signed_b", owner_key, "B")):
        shutil.copytree(str(bundles[src]), str(d / name))
        sign_bundle(str(d / name), key)
        out[name] = str(d / name)
    return out


def _cli(board, *args):
    return subprocess.run([EDGEKIT, "flash"] + [str(a) for a in args] + board_args(board), capture_output=True,
                          text=True, timeout=180)


def _releases(board) -> list:
    path = os.path.join(board.remote_dir, "releases")
    return sorted(n for n in os.listdir(path) if not n.startswith(".")) if os.path.isdir(path) else []


def test_flash_require_signature_from_the_command_line(board, bundles, signing):
    got = _cli(board, bundles["A"], "--require-signature", "--trusted-key", signing["owner_pub"])
    assert got.returncode == 2 and "is not signed (manifest.sig missing)" in got.stderr, got.stderr
    assert not os.path.exists(board.remote_dir)                 # refused before connecting
    got = _cli(board, signing["foreign"], "--trusted-key", signing["owner_pub"])
    assert got.returncode == 2 and "signed by key {}".format(signing["other_id"]) in got.stderr
    got = _cli(board, signing["signed"], "--require-signature")
    assert got.returncode == 2 and "has no trusted_keys/ directory and no --trusted-key" in got.stderr
    assert _releases(board) == []
    got = _cli(board, signing["signed"], "--require-signature", "--trusted-key", signing["owner_pub"])
    assert got.returncode == 0, got.stderr
    assert "signature verified: signed by key {}".format(signing["owner_id"]) in got.stdout
    assert link(board.remote_dir) == read_manifest(signing["signed"]).bundle_id
    rid = link(board.remote_dir)
    assert os.path.isfile(os.path.join(board.remote_dir, "releases", rid, "manifest.sig"))
    assert os.path.isfile(os.path.join(board.remote_dir, "releases", rid, "runtime", "edgekit", "signing.py"))


def test_a_board_with_trusted_keys_takes_only_bundles_signed_by_them(board, bundles, signing, data_file):
    keys = Path(board.remote_dir, "trusted_keys")
    keys.mkdir(parents=True)
    shutil.copy(signing["owner_pub"], str(keys / "owner.pub"))
    with pytest.raises(BundleError,
                       match=r"is not signed .* the board .* \(.*/board/trusted_keys\) requires a signature"):
        flash(str(bundles["A"]), board)
    with pytest.raises(BundleError, match="signed by key {}, which the board .* does not trust".format(
            signing["other_id"])):
        flash(signing["foreign"], board)
    assert _releases(board) == [] and link(board.remote_dir) is None      # nothing was uploaded
    res = flash(signing["signed"], board)
    assert res.signed_by == signing["owner_id"] and res.to_dict()["signed_by"] == signing["owner_id"]
    out = run_remote(board, "current", str(data_file))
    assert len(out["predictions"]) == 20


def test_the_board_refuses_to_run_a_release_that_predates_its_keys(board, bundles, signing, data_file):
    flash(str(bundles["A"]), board)                              # unsigned, flashed while the board trusted anyone
    assert len(run_remote(board, "current", str(data_file))["predictions"]) == 20
    keys = Path(board.remote_dir, "trusted_keys")
    keys.mkdir()
    shutil.copy(signing["owner_pub"], str(keys / "owner.pub"))
    with pytest.raises(DeployError, match=r"on the board: bundle .* is not signed .*trusted_keys requires"):
        run_remote(board, "current", str(data_file))


def _trust(board, pub) -> None:
    keys = Path(board.remote_dir, "trusted_keys")
    keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(pub, str(keys / "owner.pub"))


def test_rollback_to_a_release_that_predates_the_boards_keys_is_refused(board, bundles, signing):
    flash(str(bundles["B"]), board)                              # unsigned, while the board trusted anyone
    flash(signing["signed"], board)
    current, previous = link(board.remote_dir), link(board.remote_dir, "previous")
    assert previous == read_manifest(str(bundles["B"])).bundle_id
    _trust(board, signing["owner_pub"])
    with pytest.raises(BundleError, match=r"bundle .*:.*/releases/{} is not signed .* the board .* requires".format(
            previous)):
        rollback(board)
    assert "is not signed" in one_line_error(_cli(board, "--rollback"))
    assert (link(board.remote_dir), link(board.remote_dir, "previous")) == (current, previous)   # nothing switched


def test_rollback_to_a_signed_release_checks_the_signer(board, signing):
    _trust(board, signing["owner_pub"])
    flash(signing["signed_b"], board)
    flash(signing["signed"], board)
    before = (link(board.remote_dir), link(board.remote_dir, "previous"))
    with pytest.raises(BundleError, match="signed by key {}".format(signing["owner_id"])):
        rollback(board, signature=SignaturePolicy(trusted_keys=(signing["other_pub"],)))   # the laptop's keys too
    assert (link(board.remote_dir), link(board.remote_dir, "previous")) == before
    res = rollback(board)
    assert res.signed_by == signing["owner_id"] and res.to_dict()["signed_by"] == signing["owner_id"]
    assert (res.current, res.previous) == (before[1], before[0]) == (link(board.remote_dir),
                                                                    link(board.remote_dir, "previous"))


def test_rollback_on_a_board_without_keys_checks_nothing_unless_asked(board, bundles, signing):
    flash(str(bundles["B"]), board)
    flash(str(bundles["A"]), board)
    with pytest.raises(ConfigError, match="has no trusted_keys/ directory and no --trusted-key"):
        rollback(board, signature=SignaturePolicy(require=True))
    res = rollback(board)
    assert res.signed_by is None and res.current == read_manifest(str(bundles["B"])).bundle_id
