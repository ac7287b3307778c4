"""The board's failure states, against a real sshd: what failed flashes leave is cleaned, SSH failures are one
line naming host, port and cause, and messages name what really happened."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from edgekit.deploy import DeployError, VerifyError, flash
from edgekit.deploy.agent import MARKER
from edgekit.deploy.errors import HostKeyError
from edgekit.manifest import read_manifest

from .bundles import write_bundle
from .conftest import EDGEKIT, link, make_board, one_line_error
from .sshd import _children

pytestmark = pytest.mark.ssh


def staging(remote_dir) -> list:
    return sorted(p for p in os.listdir(os.path.join(str(remote_dir), "releases")) if p.startswith(".partial-"))


def _age(path: Path, seconds: float) -> None:
    """Move the times of path and everything in it `seconds` into the past."""
    for p in [path] + list(path.rglob("*")):
        st = os.lstat(str(p))
        os.utime(str(p), (st.st_atime - seconds, st.st_mtime - seconds), follow_symlinks=False)


def test_an_install_that_fails_leaves_no_staging_dir(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id

    def break_the_install(event, detail):
        if event == "uploaded":                 # the marker cannot be written (as on a disk that filled up)
            Path(detail, MARKER + ".tmp").mkdir()

    with pytest.raises(DeployError, match=r"verifying and switching failed on the board: IsADirectoryError"):
        flash(str(bundles["B"]), board, on_event=break_the_install)
    assert staging(board.remote_dir) == [] and link(board.remote_dir) == a
    assert flash(str(bundles["B"]), board).current == read_manifest(str(bundles["B"])).bundle_id


def test_the_next_flash_clears_what_failed_flashes_left_before_the_space_check(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    releases = Path(board.remote_dir, "releases")
    died_in_install = releases / ".partial-{}-aaaaaaaaaaaa".format(a)       # verified, marked, never moved
    died_in_install.mkdir()
    (died_in_install / "stage_0.tflite").write_bytes(b"\0" * (1 << 20))
    (died_in_install / MARKER).write_text("{}")
    _age(died_in_install, 120)
    abandoned = releases / ".partial-{}-bbbbbbbbbbbb".format(a)             # an upload nobody finished
    (abandoned / "runtime").mkdir(parents=True)
    (abandoned / "runtime" / "x.py").write_text("x")
    _age(abandoned, 3600)
    uploading = releases / ".partial-{}-cccccccccccc".format(a)             # another flash uploading right now
    uploading.mkdir()
    (uploading / "manifest.json").write_text("{}")
    partials = [releases / a / "stage_0.tflite.partial-0badc0de",           # in-place repairs cut off
                releases / a / "runtime" / "edgekit" / "data.py.partial-12345678"]
    for p in partials:
        p.write_bytes(b"half")
    seen = []

    def after_probe(event, detail):
        if event == "probed":
            seen.append(staging(board.remote_dir))
            seen.append([p.name for p in partials if os.path.lexists(str(p))])

    flash(str(bundles["B"]), board, on_event=after_probe)
    assert seen == [[uploading.name], []]              # gone before the space check and the upload
    assert os.path.isfile(str(releases / a / "stage_0.tflite"))


def test_disk_full_after_upload_leaves_no_staging_dir(small_disk, sshd, client_keys, known_hosts, bundles):
    disk = small_disk(3072)
    b = make_board(sshd, disk / "edgekit", known_hosts, client_keys["good"])
    a = flash(str(bundles["A"]), b).bundle_id

    def fill_disk(event, detail):
        if event == "uploaded":                 # every file is there; installing it needs a little more
            with open(str(disk / "filler"), "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass

    with pytest.raises(DeployError, match=r"verifying and switching failed on the board: .*No space left"):
        flash(str(bundles["B"]), b, on_event=fill_disk)
    assert link(b.remote_dir) == a and staging(b.remote_dir) == []
    os.remove(str(disk / "filler"))
    assert flash(str(bundles["B"]), b).current == read_manifest(str(bundles["B"])).bundle_id


# -- SSH failures: one line naming host, port and cause ------------------------------------------------------------
def _flash_cli(bundle, host, *extra):
    return subprocess.run([EDGEKIT, "flash", str(bundle), "--host", host] + list(extra), capture_output=True,
                          text=True, timeout=120)


def _known_hosts(tmp_path, *lines) -> str:
    path = tmp_path / "known_hosts"
    path.write_text("".join(lines))
    return str(path)


def _host_key(sshd) -> str:
    return " ".join(sshd.host_key_line.split()[1:3])


def test_cert_authority_lines_are_ignored_with_a_note(sshd, client_keys, bundles, tmp_path):
    ca = "@cert-authority *.example.org {}\n".format(_host_key(sshd))
    ok = make_board(sshd, tmp_path / "b", _known_hosts(tmp_path, ca, sshd.host_key_line), client_keys["good"])
    assert flash(str(bundles["A"]), ok).current
    alone = make_board(sshd, tmp_path / "b", _known_hosts(tmp_path, ca), client_keys["good"])
    with pytest.raises(HostKeyError, match=r"unknown host key .* \(1 @cert-authority line\(s\) in .* were ignored"):
        flash(str(bundles["A"]), alone)
    got = _flash_cli(bundles["A"], str(alone.host), "--identity", str(client_keys["good"]), "--known-hosts",
                     alone.ssh.known_hosts, "--remote-dir", alone.remote_dir)
    assert "unknown host key" in one_line_error(got) and "Traceback" not in got.stderr


def test_a_revoked_host_key_is_refused(sshd, client_keys, bundles, tmp_path):
    revoked = "@revoked * {}\n".format(_host_key(sshd))
    for accept_new in (False, True):
        b = make_board(sshd, tmp_path / "b", _known_hosts(tmp_path, sshd.host_key_line, revoked), client_keys["good"],
                       accept_new=accept_new)
        with pytest.raises(HostKeyError, match=r"the host key ssh-ed25519 SHA256:\S+ of \S+ is marked @revoked in"):
            flash(str(bundles["A"]), b)
    assert not os.path.exists(str(tmp_path / "b"))
    got = _flash_cli(bundles["A"], str(b.host), "--identity", str(client_keys["good"]), "--known-hosts",
                     b.ssh.known_hosts, "--remote-dir", b.remote_dir)
    assert "is marked @revoked" in one_line_error(got)


@pytest.fixture
def fake_port():
    """start(mode): a TCP port on 127.0.0.1 that accepts and closes ('close') or accepts and says nothing."""
    socks = []

    def start(mode):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        socks.append(srv)

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                if mode == "close":
                    conn.close()
                else:
                    socks.append(conn)

        threading.Thread(target=serve, daemon=True).start()
        return srv.getsockname()[1]

    yield start
    for s in socks:
        s.close()


@pytest.mark.parametrize("mode,timeout,said", [
    ("close", "10", r"127\.0\.0\.1:{port} accepted the connection and closed it before SSH was set up"),
    ("silent", "1", r"no SSH greeting from 127\.0\.0\.1:{port} within 1 s"),
])
def test_a_port_that_is_not_sshd_is_one_line(fake_port, bundles, tmp_path, mode, timeout, said):
    port = fake_port(mode)
    got = _flash_cli(bundles["A"], "root@127.0.0.1:{}".format(port), "--known-hosts", str(tmp_path / "kh"),
                     "--timeout", timeout)
    line = one_line_error(got)
    assert re.search(said.format(port=port), line), line
    assert "Traceback" not in got.stderr and "paramiko" not in got.stderr


# -- messages that name what happened --------------------------------------------------------------------------------
def _session_pids(sshd) -> list:
    pids, stack = [], list(_children(sshd.proc.pid))
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(_children(pid))
    return pids


def test_a_lost_connection_is_not_called_eoferror(board, sshd, bundles):
    flash(str(bundles["A"]), board)

    def drop(event, detail):
        if event == "upload":                   # the board freezes, then its sshd dies while a reply is awaited
            for pid in _session_pids(sshd):
                os.kill(pid, signal.SIGSTOP)
            threading.Timer(0.5, sshd.kill_sessions).start()

    with pytest.raises(DeployError, match=r"connection lost while uploading stage_0\.tflite \(the connection was "
                                          r"closed \(the board, its sshd or the network dropped it\)\)") as err:
        flash(str(bundles["B"]), board, on_event=drop)
    assert "EOFError" not in str(err.value), err.value


def test_a_read_only_remote_dir_is_named_so(small_disk, sshd, client_keys, known_hosts, bundles):
    disk = small_disk(8192, read_only=True)
    b = make_board(sshd, disk / "edgekit", known_hosts, client_keys["good"])
    with pytest.raises(DeployError, match=r"upload failed while uploading manifest\.json: the file system holding "
                                          r"\S+ is read-only \(SFTP said 'Failure'\)"):
        flash(str(bundles["A"]), b)


def test_a_flash_racing_another_names_where_current_points_now(board, bundles, stage_files, tmp_path):
    a = flash(str(bundles["A"]), board).bundle_id
    b = flash(str(bundles["B"]), board).bundle_id
    c = write_bundle(tmp_path / "C", stage_files[0], model_name="tiny-c").bundle_id

    def race(event, detail):
        if event == "uploaded":                 # another flash switched current back to A and pruned B
            Path(detail, "stage_0.tflite").write_bytes(b"corrupted on the board")
            tmp = os.path.join(board.remote_dir, "current.tmp")
            os.symlink("releases/" + a, tmp)
            os.replace(tmp, os.path.join(board.remote_dir, "current"))
            shutil.rmtree(os.path.join(board.remote_dir, "releases", b))

    with pytest.raises(VerifyError, match=r"current now points at {} \(another flash switched it from {}\)".format(
            a, b)):
        flash(str(tmp_path / "C"), board, on_event=race)
    assert link(board.remote_dir) == a and c not in os.listdir(os.path.join(board.remote_dir, "releases"))
