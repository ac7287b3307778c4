"""Fixtures for the deploy tests: real sshd servers on 127.0.0.1, client keys, real bundles."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from edgekit.deploy.hosts import Board, HostSpec, SshOptions

from .bundles import CACHE_VERSION, tflite_stages, write_bundle, write_data
from .sshd import APT_HINT, SSHD, SshServer, keygen

REMOTE_PYTHON = sys.executable      # the venv's python stands in for the board's python3 (numpy + ai-edge-litert)
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")   # the installed console script


def _user() -> str:
    import getpass

    return getpass.getuser()


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("client-keys")
    return {"good": keygen(d / "id_good"), "wrong": keygen(d / "id_wrong")}


def _start(root: Path, keys: Dict[str, Path], env: Optional[Dict[str, str]] = None) -> SshServer:
    if not os.path.exists(SSHD):
        pytest.fail(APT_HINT, pytrace=False)
    return SshServer(root, keys["good"].with_suffix(".pub"), env).start()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, client_keys) -> SshServer:
    server = _start(tmp_path_factory.mktemp("sshd"), client_keys)
    yield server
    server.stop()


@pytest.fixture
def sshd_factory(tmp_path_factory, client_keys) -> Callable[..., SshServer]:
    """start(env=None): another server; env: variables its sessions get (the board's environment)."""
    started: List[SshServer] = []

    def start(env: Optional[Dict[str, str]] = None) -> SshServer:
        server = _start(tmp_path_factory.mktemp("sshd-extra"), client_keys, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def stage_files(request, tmp_path_factory) -> Dict[int, List[Path]]:
    cache = getattr(request.config, "cache", None)          # absent with -p no:cacheprovider
    where = Path(cache.mkdir(CACHE_VERSION)) if cache is not None else tmp_path_factory.mktemp("tflite")
    return tflite_stages(where)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, stage_files) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    out = {"A": root / "A", "B": root / "B", "arm": root / "arm"}
    write_bundle(out["A"], stage_files[0], model_name="tiny-a")
    write_bundle(out["B"], stage_files[1], model_name="tiny-b")
    write_bundle(out["arm"], stage_files[0], target="raspberry-pi-4", model_name="tiny-arm")
    return out


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "inputs.npz")


def known_hosts_for(path: Path, *servers: SshServer) -> Path:
    path.write_text("".join(s.host_key_line for s in servers))
    return path


@pytest.fixture
def known_hosts(tmp_path, sshd) -> Path:
    return known_hosts_for(tmp_path / "known_hosts", sshd)


def make_board(server: SshServer, remote_dir: Path, known_hosts: Path, identity: Path,
               remote_python: str = REMOTE_PYTHON, target: Optional[str] = None, accept_new: bool = False) -> Board:
    return Board(host=HostSpec(user=_user(), host="127.0.0.1", port=server.port),
                 ssh=SshOptions(identity=str(identity), known_hosts=str(known_hosts), accept_new_host_key=accept_new,
                                timeout_s=30.0),     # generous: a loaded machine answers slowly
                 remote_dir=str(remote_dir), remote_python=remote_python, target=target)


@pytest.fixture
def board(tmp_path, sshd, client_keys, known_hosts) -> Board:
    return make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"])


def link(remote_dir: str, name: str = "current") -> Optional[str]:
    path = os.path.join(remote_dir, name)
    return os.path.basename(os.readlink(path)) if os.path.islink(path) else None


def board_args(board: Board) -> List[str]:
    """The command-line options that reach `board` (host, key, known hosts, remote dir and python)."""
    return ["--host", str(board.host), "--identity", board.ssh.identity, "--known-hosts", board.ssh.known_hosts,
            "--remote-dir", board.remote_dir, "--remote-python", REMOTE_PYTHON]


@pytest.fixture
def common(board) -> List[str]:
    return board_args(board)


def one_line_error(got: subprocess.CompletedProcess) -> str:
    """A refused command: exit code 2 and one `edgekit: error: ...` line on stderr, which is returned."""
    assert got.returncode == 2, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), got.stderr
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_kb, read_only=False): a small tmpfs under tmp_path (a full or read-only disk on the board);
    skipped where mounting is not allowed."""
    def mount(size_kb: int, read_only: bool = False):
        point = tmp_path / "disk{}".format(size_kb)
        point.mkdir()
        opts = "size={}k{}".format(size_kb, ",ro" if read_only else "")
        got = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True)
        if got.returncode != 0:
            pytest.skip("cannot mount a tmpfs here ({}); the full or read-only disk tests need root with "
                        "CAP_SYS_ADMIN".format(got.stderr.strip() or got.returncode))
        mounted.append(point)
        return point

    mounted = []
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
