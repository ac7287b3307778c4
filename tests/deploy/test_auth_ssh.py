"""Host keys and client keys against a real sshd: unknown keys refused, changed keys always refused."""
import pytest

from edgekit.deploy import DeployError, HostKeyError, flash, list_releases

from .conftest import link, make_board
from .sshd import keygen

pytestmark = pytest.mark.ssh


def test_unknown_host_key_is_refused_then_accepted_on_request(tmp_path, sshd, client_keys, bundles):
    kh = tmp_path / "ssh" / "known_hosts"                  # the directory does not exist yet either
    strict = make_board(sshd, tmp_path / "board", kh, client_keys["good"])
    with pytest.raises(HostKeyError, match=r"unknown host key ssh-ed25519 SHA256:\S+ for \[127\.0\.0\.1\]:{}"
                       .format(sshd.port)):
        flash(str(bundles["A"]), strict)
    assert not kh.exists() and link(strict.remote_dir) is None

    trusting = make_board(sshd, tmp_path / "board", kh, client_keys["good"], accept_new=True)
    rid = flash(str(bundles["A"]), trusting).bundle_id
    assert kh.read_text() == sshd.host_key_line
    assert list_releases(strict).current == rid              # recorded: later connections need no flag


def test_changed_host_key_is_refused_even_with_accept_new(tmp_path, sshd, client_keys, bundles):
    other = keygen(tmp_path / "other_host_key")
    kind, blob = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:{} {} {}\n".format(sshd.port, kind, blob))
    b = make_board(sshd, tmp_path / "board", kh, client_keys["good"], accept_new=True)
    with pytest.raises(HostKeyError, match="the host key changed.*refusing to connect.*ssh-keygen -R"):
        flash(str(bundles["A"]), b)
    assert kh.read_text().split()[2] == blob and other.exists()
    assert link(b.remote_dir) is None


def test_wrong_client_key(tmp_path, sshd, client_keys, known_hosts, bundles):
    rid = flash(str(bundles["A"]), make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"])).bundle_id
    b = make_board(sshd, tmp_path / "board", known_hosts, client_keys["wrong"])
    with pytest.raises(DeployError, match=r"authentication as '\w+' failed with key .*id_wrong; put the public "
                                          r"key in that user's ~/\.ssh/authorized_keys"):
        flash(str(bundles["B"]), b)
    assert link(b.remote_dir) == rid


def test_nothing_listening(tmp_path, client_keys, known_hosts, sshd_factory):
    server = sshd_factory()
    server.stop()
    b = make_board(server, tmp_path / "board", known_hosts, client_keys["good"])
    with pytest.raises(DeployError, match=r"cannot connect to 127\.0\.0\.1:{}".format(server.port)):
        list_releases(b)
