"""Run the on-board runtime over SSH and bring its JSON back (for `edgekit run/bench --host`)."""
import json
import os
import posixpath
import re
import secrets
from typing import Any, Dict, Optional, Sequence, Union

from edgekit.data import FORMATS, open_data_file
from edgekit.deploy.errors import DeployError
from edgekit.deploy.hosts import (DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON, Board, SshOptions, check_remote_dir,
                                  check_remote_python, parse_host)
from edgekit.deploy.package import RUNTIME_DIR
from edgekit.deploy.ssh import Session
from edgekit.errors import ConfigError, DataError

_RELEASE_RE = re.compile(r"^(current|previous|[0-9a-f]{16})$")
_MODULE_RE = re.compile(r"^edgekit(\.[a-z_][a-z0-9_]*)*$")
_BAD_ARG_RE = re.compile(r"[\x00\n\r]")
DEFAULT_RUN_TIMEOUT_S = 3600.0


def make_board(host_spec: Union[str, Board], ssh: Optional[SshOptions] = None, remote_dir: str = DEFAULT_REMOTE_DIR,
               remote_python: str = DEFAULT_REMOTE_PYTHON) -> Board:
    if isinstance(host_spec, Board):
        return host_spec
    return Board(host=parse_host(host_spec), ssh=ssh or SshOptions(), remote_dir=check_remote_dir(remote_dir),
                 remote_python=check_remote_python(remote_python))


def run_remote(host_spec: Union[str, Board], bundle_id_or_current: str, data_path: str,
               extra_args: Sequence[str] = (), ssh: Optional[SshOptions] = None,
               remote_dir: str = DEFAULT_REMOTE_DIR, remote_python: str = DEFAULT_REMOTE_PYTHON,
               timeout_s: float = DEFAULT_RUN_TIMEOUT_S, module: str = "edgekit.runtime") -> Dict[str, Any]:
    """Upload data_path to a temp file on the board, run
    `env PYTHONPATH=<release>/runtime <python> -m <module> <release> <data> --json <extra_args...>` there
    (argv, each part shlex-quoted) and return the parsed JSON. <release> is DIR/current (or previous, or a
    bundle id) resolved once to its real directory, so a flash during the run cannot mix two releases.
    """
    board = make_board(host_spec, ssh, remote_dir, remote_python)
    _check_args(bundle_id_or_current, data_path, extra_args, module)
    ext = os.path.splitext(data_path)[1].lower()
    with Session(board) as session:
        sftp = session.sftp
        try:
            base = _absolute(sftp.normalize("."), board.remote_dir)
            release = _release_dir(session, base, bundle_id_or_current)
            tmp_dir = posixpath.join(base, "tmp")
            try:
                sftp.stat(tmp_dir)
            except FileNotFoundError:
                sftp.mkdir(tmp_dir, 0o700)
            remote_data = posixpath.join(tmp_dir, "run-{}{}".format(secrets.token_hex(8), ext))
            sftp.put(data_path, remote_data, confirm=True)
        except (DeployError, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - SFTP status errors and dropped links
            raise session.lost("uploading {}".format(data_path), exc)
        argv = ["env", "PYTHONPATH=" + posixpath.join(release, RUNTIME_DIR), board.remote_python, "-m", module,
                release, remote_data, "--json"] + list(extra_args)
        try:
            res = session.run(argv, timeout_s=timeout_s, doing="running {} on the board".format(module))
        finally:
            if session.is_alive():
                try:
                    sftp.remove(remote_data)
                except Exception:  # noqa: BLE001 - the temp file is in DIR/tmp; harmless if left
                    pass
    return _parse(board, res.returncode, res.stdout, res.stderr, module)


def _check_args(release: str, data_path: str, extra_args: Sequence[str], module: str) -> None:
    if not isinstance(release, str) or not _RELEASE_RE.match(release):
        raise ConfigError("release {!r}: allowed: 'current', 'previous' or a 16-hex-digit bundle id".format(release))
    ext = os.path.splitext(data_path)[1].lower()
    if ext not in FORMATS:
        raise DataError("data file {}: unsupported format {!r}; allowed: {}".format(data_path, ext, ", ".join(FORMATS)))
    open_data_file(data_path).close()                 # missing, or a FIFO / device / directory: refused here
    if isinstance(extra_args, str) or not all(isinstance(a, str) and not _BAD_ARG_RE.search(a) for a in extra_args):
        raise ConfigError("extra_args: expected a list of single-line strings, got {!r}".format(extra_args))
    if not _MODULE_RE.match(module):
        raise ConfigError("module {!r}: allowed: an edgekit module path such as edgekit.runtime".format(module))


def _absolute(home: str, remote_dir: str) -> str:
    if remote_dir.startswith("/"):
        return remote_dir
    rest = remote_dir[2:] if remote_dir.startswith("~/") else remote_dir
    return posixpath.normpath(posixpath.join(home, rest))


def _release_dir(session: Session, base: str, release: str) -> str:
    """The real directory of the release, which must be base/releases/<id> itself: a `current`, `releases/<id>`
    or `releases/` linked elsewhere is refused (flash never makes one, and what it leads to was not verified)."""
    sftp = session.sftp
    label = session.board.label
    link = posixpath.join(base, release if release in ("current", "previous") else "releases/" + release)
    try:
        real = sftp.normalize(link)
        sftp.stat(posixpath.join(real, "manifest.json"))
        sftp.stat(posixpath.join(real, RUNTIME_DIR, "edgekit", "runtime", "__main__.py"))
        releases = posixpath.join(sftp.normalize(base), "releases")
        real_releases = sftp.normalize(posixpath.join(base, "releases"))
    except (FileNotFoundError, IOError):
        raise DeployError("{}: no release {!r} in {}; flash a bundle first (edgekit flash BUNDLE --host {})".format(
            label, release, base, session.board.host))
    if real_releases != releases or posixpath.dirname(real) != releases or \
            not re.match(r"^[0-9a-f]{16}$", posixpath.basename(real)):
        raise DeployError("{}: release {!r} resolves to {}, outside {}/; a release runs only from inside its own "
                          "releases/ directory (a link out of it is refused)".format(label, release, real, releases))
    return real


def _parse(board: Board, code: int, stdout: str, stderr: str, module: str) -> Dict[str, Any]:
    if code != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith("edgekit: error: ")]
        if said:
            raise DeployError("{}: on the board: {}".format(board.label, said[-1][len("edgekit: error: "):]))
        if code == 127:
            raise DeployError("{}: the board has no {!r}; pass --remote-python PATH".format(
                board.label, board.remote_python))
        raise DeployError("{}: {} -m {} failed on the board (exit {}): {}".format(
            board.label, board.remote_python, module, code, lines[-1] if lines else "(no message)"))
    for text in (stdout, (stdout.strip().splitlines() or [""])[-1]):
        try:
            result = json.loads(text)
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    raise DeployError("{}: {} printed no JSON object on the board: {!r}".format(board.label, module, stdout[-200:]))
