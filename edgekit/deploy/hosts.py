"""Who to connect to and how: host specs, SSH options, boards, and the fleet inventory file."""
import getpass
import ipaddress
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from edgekit.errors import ConfigError

DEFAULT_REMOTE_DIR = "~/edgekit"
DEFAULT_REMOTE_PYTHON = "python3"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_TIMEOUT_S = 10.0
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,31}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-.]{0,251}[A-Za-z0-9])?$")
_PYTHON_RE = re.compile(r"^[A-Za-z0-9_./+\-]{1,255}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
INVENTORY_KEYS = ("host", "port", "user", "key", "remote_dir", "target", "remote_python", "name")


@dataclass(frozen=True)
class HostSpec:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "{}@{}:{}".format(self.user, host, self.port)


@dataclass(frozen=True)
class SshOptions:
    """How to authenticate and which host keys to trust. identity=None means ssh-agent and ~/.ssh keys."""
    identity: Optional[str] = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    accept_new_host_key: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Board:
    host: HostSpec
    ssh: SshOptions = SshOptions()
    remote_dir: str = DEFAULT_REMOTE_DIR
    remote_python: str = DEFAULT_REMOTE_PYTHON
    target: Optional[str] = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or str(self.host)


@dataclass(frozen=True)
class BoardDefaults:
    """What inventory entries do not say: taken from the command line."""
    ssh: SshOptions = SshOptions()
    remote_dir: str = DEFAULT_REMOTE_DIR
    remote_python: str = DEFAULT_REMOTE_PYTHON
    target: Optional[str] = None


def check_hostname(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("{}: expected a host name or IP address, got {!r}".format(where, value))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value) or ".." in value:
        raise ConfigError("{}: invalid host {!r}; allowed: a DNS name (letters, digits, '-', '.') or an IP "
                          "address".format(where, value))
    return value


def check_user(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _USER_RE.match(value):
        raise ConfigError("{}: invalid user name {!r}; allowed: letters, digits, '_', '-', '.', up to 32 "
                          "characters, not starting with a digit".format(where, value))
    return value


def check_port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError("{}: invalid port {!r}; allowed: an integer from 1 to 65535".format(where, value))
    return value


def parse_host(spec: str, where: str = "--host") -> HostSpec:
    """'user@host', 'user@host:port', 'user@[v6addr]:port'; without 'user@' the local login name is used."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("{}: expected user@host[:port], got {!r}".format(where, spec))
    rest = spec.strip()
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
    port: Any = 22
    if rest.startswith("["):
        end = rest.find("]")
        tail = rest[end + 1:] if end >= 0 else ""
        if end < 0 or (tail and not tail.startswith(":")):
            raise ConfigError("{}: malformed address {!r}; expected user@[v6addr]:port".format(where, spec))
        host = rest[1:end]
        if tail:
            port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host = rest
    if port == "" or (isinstance(port, str) and not port.isdigit()):
        raise ConfigError("{}: invalid port {!r} in {!r}; allowed: 1 to 65535".format(where, port, spec))
    user = check_user(user if user is not None else _local_user(), where + " user")
    return HostSpec(user=user, host=check_hostname(host, where + " host"), port=check_port(port, where + " port"))


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise ConfigError("--host: no user given and the local user name is unknown; use user@host")


def check_remote_dir(value: Any, where: str = "--remote-dir") -> str:
    """An absolute path, '~/…' or a path relative to the login's home; no '..' parts, no control characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise ConfigError("{}: expected a directory path on the board, got {!r}".format(where, value))
    if _CONTROL_RE.search(value):
        raise ConfigError("{}: {!r} contains control characters; allowed: a plain path".format(where, value))
    parts = [p for p in value.split("/") if p]
    if ".." in parts:
        raise ConfigError("{}: {!r} has a '..' part; allowed: a path without '..'".format(where, value))
    if value.startswith("~") and not (value == "~" or value.startswith("~/")):
        raise ConfigError("{}: {!r}: only '~/…' (the login's own home) is understood".format(where, value))
    norm = posixpath.normpath(value)
    if norm in ("/", "~", "."):
        raise ConfigError("{}: {!r} is too broad; give a directory for edgekit's releases, e.g. "
                          "{}".format(where, value, DEFAULT_REMOTE_DIR))
    return norm


def check_remote_python(value: Any, where: str = "--remote-python") -> str:
    if not isinstance(value, str) or not _PYTHON_RE.match(value):
        raise ConfigError("{}: invalid interpreter {!r}; allowed: a command name or path made of letters, "
                          "digits, '_', '.', '/', '+', '-'".format(where, value))
    return value


def check_timeout(value: Any, where: str = "--timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise ConfigError("{}: expected seconds from 0 to 3600, got {!r}".format(where, value))
    return float(value)


def make_ssh_options(identity: Optional[str], known_hosts: Optional[str], accept_new_host_key: bool,
                     timeout_s: float, where: str = "") -> SshOptions:
    key = None
    if identity is not None:
        key = os.path.abspath(os.path.expanduser(identity))
        if not os.path.isfile(key):
            raise ConfigError("{}identity file not found: {} (from {!r})".format(where, key, identity))
    kh = os.path.abspath(os.path.expanduser(known_hosts or DEFAULT_KNOWN_HOSTS))
    return SshOptions(identity=key, known_hosts=kh, accept_new_host_key=bool(accept_new_host_key),
                      timeout_s=check_timeout(timeout_s))


def load_inventory(path: str, defaults: BoardDefaults = BoardDefaults()) -> List[Board]:
    """A YAML list of boards (or {boards: [...]}); each needs host and user. Keys: see INVENTORY_KEYS.

    Per-board values override `defaults` (whose ssh options other than the key apply to every board).
    """
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("cannot read inventory {}: {}".format(path, exc))
    if isinstance(data, dict) and set(data) == {"boards"}:
        data = data["boards"]
    if not isinstance(data, list) or not data:
        raise ConfigError("inventory {}: expected a non-empty list of boards (or 'boards:' holding one), got "
                          "{}".format(path, type(data).__name__))
    base = os.path.dirname(os.path.abspath(path))
    boards = [_board_from_dict(item, "{}[{}]".format(os.path.basename(path), i), base, defaults)
              for i, item in enumerate(data)]
    seen: Dict[Tuple[str, int, str], str] = {}
    for b in boards:
        key = (b.host.host, b.host.port, b.remote_dir)
        if key in seen:
            raise ConfigError("inventory {}: {} and {} are the same board and directory ({}:{}); list each "
                              "once".format(path, seen[key], b.label, b.host.host, b.remote_dir))
        seen[key] = b.label
    return boards


def _board_from_dict(item: Any, where: str, base: str, defaults: BoardDefaults) -> Board:
    if not isinstance(item, dict):
        raise ConfigError("{}: expected a mapping with {}, got {!r}".format(where, ", ".join(INVENTORY_KEYS), item))
    unknown = sorted(set(item) - set(INVENTORY_KEYS))
    if unknown:
        raise ConfigError("{}: unknown key(s) {}; allowed: {}".format(where, ", ".join(map(str, unknown)),
                                                                     ", ".join(INVENTORY_KEYS)))
    for k in ("host", "user"):
        if k not in item:
            raise ConfigError("{}: missing key '{}'".format(where, k))
    host = HostSpec(user=check_user(item["user"], where + ".user"), host=check_hostname(item["host"], where + ".host"),
                    port=check_port(item.get("port", 22), where + ".port"))
    ssh = defaults.ssh
    if item.get("key") is not None:
        key = item["key"]
        if not isinstance(key, str):
            raise ConfigError("{}.key: expected a path to a private key, got {!r}".format(where, key))
        key = os.path.join(base, os.path.expanduser(key))
        ssh = make_ssh_options(key, ssh.known_hosts, ssh.accept_new_host_key, ssh.timeout_s, where + ".key: ")
    target = item.get("target")
    if target is not None and not isinstance(target, str):
        raise ConfigError("{}.target: expected a target name, got {!r}".format(where, target))
    name = item.get("name", "")
    if not isinstance(name, str):
        raise ConfigError("{}.name: expected a string, got {!r}".format(where, name))
    return Board(host=host, ssh=ssh,
                 remote_dir=check_remote_dir(item.get("remote_dir", defaults.remote_dir), where + ".remote_dir"),
                 remote_python=check_remote_python(item.get("remote_python", defaults.remote_python),
                                                   where + ".remote_python"),
                 target=target if target is not None else defaults.target, name=name)
