"""The board-side agent's first part (upload.agent_source() sends it before agent.py): the device's key settings
as edgekit/device_keys.py reads them on the board, and the device config that `edgekit flash` records remote
dirs in. Standard library only, Python 3.5 syntax; self-contained (it runs before agent.py is defined).
"""
import json
import os

KEYS_DIR = "trusted_keys"       # DIR/trusted_keys/*.pub: the board runs only bundles signed by one of them
MAX_KEY_FILE = 1 << 16
ENV_KEYS = "EDGEKIT_TRUSTED_KEYS"
ENV_DEVICE_CONFIG = "EDGEKIT_DEVICE_CONFIG"
DEVICE_CONFIG = "~/.config/edgekit/device.json"
DEVICE_FORMAT = "edgekit-device-v1"


class Refused(Exception):
    pass


def read_text(path, default=""):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return default


def key_texts(path, dir_only=False):
    """{path of each key file: text (None if unreadable or too large)} of a directory of *.pub (or, unless
    dir_only, of a key file)."""
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".pub")]
    elif os.path.isfile(path) and not dir_only:
        files = [path]
    else:
        raise Refused("{} {}; allowed: a key file or a directory of *.pub files".format(
            path, "is a dangling link" if os.path.islink(path) else "is not a directory" if os.path.lexists(path)
            else "does not exist"))
    return dict((f, read_text(f, None) if os.path.isfile(f) and os.path.getsize(f) <= MAX_KEY_FILE else None)
                for f in files)


def device_config_path():
    value = os.environ.get(ENV_DEVICE_CONFIG)
    if value is not None and not value.strip():
        raise Refused("{} is set but empty; allowed: the path of the device config".format(ENV_DEVICE_CONFIG))
    return os.path.expanduser(DEVICE_CONFIG if value is None else value)


def recorded_dirs():
    """The remote dirs recorded in the device config (edgekit/device_keys.py reads the same file)."""
    path = device_config_path()
    if not os.path.lexists(path):
        return []
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_KEY_FILE:
            raise ValueError("not a regular file of at most {} bytes".format(MAX_KEY_FILE))
        with open(path, "r") as f:
            data = json.load(f)
        dirs = data.get("remote_dirs") if isinstance(data, dict) and data.get("format") == DEVICE_FORMAT else None
        if not isinstance(dirs, list) or not all(isinstance(d, str) and os.path.isabs(d) for d in dirs):
            raise ValueError("expected format {} with a list of absolute remote_dirs".format(DEVICE_FORMAT))
    except (OSError, ValueError) as exc:
        raise Refused("device config {} is unreadable or malformed ({})".format(path, exc))
    return dirs


def record_dir(remote_dir):
    """Add remote_dir to the device config (dropping dirs that no longer exist), by rename(2)."""
    old = recorded_dirs()
    dirs = [d for d in old if os.path.isdir(d) and d != remote_dir] + [remote_dir]
    if dirs == old:
        return
    path = device_config_path()
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = "{}.tmp-{}".format(path, os.getpid())
    try:
        with open(tmp, "w") as f:
            json.dump({"format": DEVICE_FORMAT, "remote_dirs": dirs}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def device_keys(remote_dir):
    """The device's key settings as the runtime sees them for a release in remote_dir: a list of
    {"source": name, "keys": {key file: text}} or {"source": name, "error": why it is malformed}."""
    out = []
    env = os.environ.get(ENV_KEYS)
    if env is not None:
        sources = [(ENV_KEYS, [p for p in env.split(":") if p] or None)]
    else:
        sources = []
    try:
        dirs = recorded_dirs()
    except Refused as exc:
        out.append({"source": "device config", "error": str(exc)})
        dirs = []
    seen = set()
    for d in dirs + [remote_dir]:
        path = os.path.join(d, KEYS_DIR)
        if os.path.lexists(path) and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            sources.append((path, [path]))
    for name, paths in sources:
        try:
            if paths is None:
                raise Refused("{}={!r} names no key".format(ENV_KEYS, env))
            keys = {}
            for p in paths:
                keys.update(key_texts(p, name != ENV_KEYS))
            out.append({"source": name, "keys": keys})
        except (Refused, OSError) as exc:
            out.append({"source": name, "error": str(exc)})
    return out
