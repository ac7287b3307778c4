"""One SSH connection to a board: strict host keys, key or agent auth, argv-only remote commands, SFTP.

Remote commands are argv lists; each element is shlex-quoted, so no user-built string reaches the remote
shell unquoted. Unknown host keys are refused unless accept_new_host_key; a changed key is always refused.
"""
import logging
import os
import shlex
import socket
import threading
import time
from typing import Any, List, NamedTuple, Optional, Sequence, Set, Tuple

from edgekit.atomic import write_atomic
from edgekit.deploy.errors import DeployError, HostKeyError
from edgekit.deploy.hosts import Board
from edgekit.errors import first_line

KEEPALIVE_S = 5
_KNOWN_HOSTS_LOCK = threading.Lock()
# paramiko logs a transport's failure (with its traceback) before raising it; without a handler Python would
# print that on stderr. The failure reaches the user once, as the DeployError below.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class KnownHosts(NamedTuple):
    path: str
    revoked: Set[Tuple[str, str]]         # (key type, base64) of the @revoked lines
    cert_authorities: int                 # @cert-authority lines, ignored (edgekit checks plain host keys)

    def note(self) -> str:
        if not self.cert_authorities:
            return ""
        return " ({} @cert-authority line(s) in {} were ignored: edgekit checks plain host keys, not host " \
               "certificates)".format(self.cert_authorities, self.path)


def load_known_hosts(client: Any, path: str, label: str) -> KnownHosts:
    """Read an OpenSSH known_hosts file into the client's host keys: @revoked keys are collected (and never
    trusted), @cert-authority lines are counted and skipped; any other unreadable line is a HostKeyError."""
    from paramiko import SSHException
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

    entries, revoked, cas = [], set(), 0
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HostKeyError("{}: cannot read known hosts file {}: {}".format(label, path, first_line(exc)))
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0] == "@cert-authority":
            cas += 1
            continue
        if fields[0] == "@revoked" and len(fields) >= 4:
            revoked.add((fields[2], fields[3]))
            continue
        if fields[0].startswith("@"):
            raise HostKeyError("{}: {}:{}: unknown marker {}; allowed: @cert-authority, @revoked".format(
                label, path, n, fields[0][:40]))
        try:
            entry = HostKeyEntry.from_line(" ".join(fields), n)     # None for a key type paramiko lacks
        except (InvalidHostKey, SSHException, ValueError, TypeError):
            raise HostKeyError("{}: {}:{}: not a known_hosts line ({!r}...); fix or remove that line".format(
                label, path, n, line[:40]))
        if entry is not None:
            entries.append(entry)
    keys = client.get_host_keys()
    for e in entries:
        if (e.key.get_name(), e.key.get_base64()) not in revoked:
            for name in e.hostnames:
                keys.add(name, e.key.get_name(), e.key)
    return KnownHosts(path, revoked, cas)


class CommandResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _fingerprint(key) -> str:
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode("ascii").rstrip("=")
    return "{} SHA256:{}".format(key.get_name(), digest)


def _policy(board: Board, known_hosts: KnownHosts):
    import paramiko

    class Strict(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko hook
            if (key.get_name(), key.get_base64()) in known_hosts.revoked:
                raise HostKeyError("{}: the host key {} of {} is marked @revoked in {}; refusing to connect".format(
                    board.label, _fingerprint(key), hostname, known_hosts.path))
            if not board.ssh.accept_new_host_key:
                raise HostKeyError(
                    "{}: unknown host key {} for {} (not in {}); check it on the board "
                    "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and pass --accept-new-host-key, or add it to "
                    "that file{}".format(board.label, _fingerprint(key), hostname, known_hosts.path, known_hosts.note()))
            _append_known_host(known_hosts.path, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return Strict()


def _append_known_host(path: str, hostname: str, key) -> None:
    """Add one line to known_hosts atomically (write a copy beside it, then rename)."""
    with _KNOWN_HOSTS_LOCK:                 # fleet flashes accept keys from several threads at once
        _append_locked(path, hostname, key)


def _append_locked(path: str, hostname: str, key) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    old = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            old = f.read()
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = "{} {} {}\n".format(hostname, key.get_name(), key.get_base64()).encode("ascii")
    write_atomic(path, old + line, 0o600)


class Session:
    """An open connection to one board. Use as a context manager; every failure is a DeployError."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._client = None
        self._sftp = None

    def __enter__(self) -> "Session":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        try:
            import paramiko
        except ImportError as exc:
            raise DeployError("flashing needs paramiko, which is not importable here ({}); install edgekit with "
                              "the deploy extra: pip install -c constraints.txt 'edgekit[deploy]'".format(exc))
        b, opts = self.board, self.board.ssh
        known_hosts = os.path.expanduser(opts.known_hosts)
        identity = None if opts.identity is None else os.path.expanduser(opts.identity)
        client = paramiko.SSHClient()
        known = KnownHosts(known_hosts, set(), 0)
        if os.path.exists(known_hosts):
            known = load_known_hosts(client, known_hosts, b.label)
        client.set_missing_host_key_policy(_policy(b, known))
        try:
            client.connect(b.host.host, port=b.host.port, username=b.host.user, key_filename=identity,
                           look_for_keys=opts.identity is None, allow_agent=opts.identity is None,
                           timeout=opts.timeout_s, banner_timeout=opts.timeout_s, auth_timeout=opts.timeout_s,
                           channel_timeout=opts.timeout_s)
        except HostKeyError:
            client.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - mapped to one clear message below
            transport = client.get_transport()
            behind = transport.get_exception() if transport is not None else None   # what ended the transport
            client.close()
            raise self._connect_error(behind if behind is not None and "No existing session" in str(exc) else exc)
        client.get_transport().set_keepalive(KEEPALIVE_S)
        self._client = client

    def _connect_error(self, exc: BaseException) -> BaseException:
        import paramiko

        b = self.board
        where = "{}:{}".format(b.host.host, b.host.port)
        if isinstance(exc, paramiko.SSHException) and ("banner" in str(exc) or "No existing session" in str(exc)):
            # paramiko gives up on the greeting with an EOFError behind it when the port closed the connection,
            # with a timeout behind it (or, past its own wait, "No existing session") when the port said nothing
            if not isinstance(exc.__context__, EOFError):
                return DeployError("{}: no SSH greeting from {} within {:g} s: the port takes connections but does "
                                   "not answer like an SSH server (wrong port, or the board is overloaded)".format(
                                       b.label, where, b.ssh.timeout_s))
            return DeployError("{}: {} accepted the connection and closed it before SSH was set up (is an SSH "
                               "server listening on that port, and does it allow this client?)".format(b.label, where))
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                "{}: the host key changed: the board offers {}, {} records {}; refusing to connect. If the board "
                "was reinstalled, remove the old entry (ssh-keygen -R '[{}]:{}' -f {}) and connect again".format(
                    b.label, _fingerprint(exc.key), b.ssh.known_hosts, _fingerprint(exc.expected_key),
                    b.host.host, b.host.port, b.ssh.known_hosts))
        if isinstance(exc, paramiko.PasswordRequiredException):
            return DeployError("{}: the key {} is passphrase-protected; load it into ssh-agent and omit "
                               "--identity".format(b.label, b.ssh.identity))
        if isinstance(exc, paramiko.AuthenticationException):
            how = "key {}".format(b.ssh.identity) if b.ssh.identity else "ssh-agent and ~/.ssh keys"
            return DeployError("{}: authentication as {!r} failed with {}{}; put the public key in that user's "
                               "~/.ssh/authorized_keys on the board (ssh-copy-id)".format(
                                   b.label, b.host.user, how, _allowed_auth(exc)))
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reasons = sorted({os.strerror(e.errno) if getattr(e, "errno", None) else first_line(e)
                              for e in exc.errors.values()})
            return DeployError("{}: cannot connect to {}:{}: {} (is the board on and sshd running on that "
                               "port?)".format(b.label, b.host.host, b.host.port, "; ".join(reasons)))
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return DeployError("{}: no answer from {}:{} within {:g} s".format(
                b.label, b.host.host, b.host.port, b.ssh.timeout_s))
        if isinstance(exc, (OSError, paramiko.SSHException, EOFError)):
            return DeployError("{}: cannot connect to {}:{}: {}".format(
                b.label, b.host.host, b.host.port, first_line(exc)))
        if isinstance(exc, KeyboardInterrupt):
            return exc
        return DeployError("{}: cannot connect: {}: {}".format(b.label, type(exc).__name__, first_line(exc)))

    def close(self) -> None:
        for obj in (self._sftp, self._client):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass
        self._sftp = self._client = None

    def is_alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    @property
    def sftp(self):
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
                self._sftp.get_channel().settimeout(max(30.0, self.board.ssh.timeout_s))
            except Exception as exc:  # noqa: BLE001
                raise self.lost("opening SFTP", exc)
        return self._sftp

    def lost(self, doing: str, exc: BaseException) -> DeployError:
        """The error for a transport failure while doing something."""
        return DeployError("{}: connection lost while {}: {}".format(self.board.label, doing, describe(exc)))

    def run(self, argv: Sequence[str], stdin: Optional[bytes] = None, timeout_s: Optional[float] = None,
            doing: str = "running a command") -> CommandResult:
        """Run argv on the board (each element shlex-quoted); returns code, stdout, stderr."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise DeployError("internal: remote argv must be a non-empty list of strings, got {!r}".format(argv))
        command = " ".join(shlex.quote(a) for a in argv)
        try:
            chan = self._client.get_transport().open_session(timeout=self.board.ssh.timeout_s)
            chan.settimeout(timeout_s)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = _drain(chan, timeout_s)
            code = chan.recv_exit_status()
            chan.close()
        except DeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - socket, paramiko, timeout: all mean the link failed
            raise self.lost(doing, exc)
        if code < 0:
            raise self.lost(doing, EOFError("the command ended without an exit status"))
        return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def _drain(chan, timeout_s: Optional[float]) -> "tuple":
    """Read stdout and stderr until the command exits (both streams, so neither pipe fills up)."""
    out: List[bytes] = []
    err: List[bytes] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        got = False
        while chan.recv_ready():
            out.append(chan.recv(65536))
            got = True
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
            got = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if chan.closed and not got:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise socket.timeout("no exit after {:g} s".format(timeout_s))
        if not got:
            time.sleep(0.005)
    return b"".join(out), b"".join(err)


def _allowed_auth(exc: BaseException) -> str:
    allowed = getattr(exc, "allowed_types", None)
    return " (the board accepts only: {})".format(", ".join(allowed)) if allowed else ""


def describe(exc: BaseException) -> str:
    """One line saying what a transport or SFTP failure means (paramiko raises a bare EOFError when the other
    end goes away)."""
    text = str(exc).strip()
    if isinstance(exc, EOFError) or text.startswith(("Server connection dropped", "Socket is closed")):
        return "the connection was closed (the board, its sshd or the network dropped it)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer in time ({})".format(first_line(exc)) if str(exc) else "no answer in time"
    return first_line(exc)


