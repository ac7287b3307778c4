"""The device's own signature setting: which keys this board trusts, found in fixed places, never through the
path a bundle happens to resolve to.

Sources (each one present must trust a bundle's signer; none present = no device setting):
  EDGEKIT_TRUSTED_KEYS   paths separated by ':' (key files or directories of *.pub files). Set but naming
                         no path (e.g. '' or ':') is malformed.
  the device config      ~/.config/edgekit/device.json (or the path in EDGEKIT_DEVICE_CONFIG), written by
                         `edgekit flash` on every install: {"format": "edgekit-device-v1", "remote_dirs": [...]}.
                         Every recorded <remote_dir>/trusted_keys/ that exists is a source, for every bundle
                         on the device, wherever it lies.
  the bundle's own       <remote_dir>/trusted_keys/ when the bundle is named as <remote_dir>/current, /previous
  remote_dir             or /releases/<id> (a board flashed before the device config existed).
A trusted_keys that exists but is not a directory (a plain file, a dangling link), an unreadable or malformed
device config, or an empty EDGEKIT_TRUSTED_KEYS is a ConfigError: the device's setting fails closed.
With a device setting, a bundle named as a release must resolve inside its own <remote_dir>/releases/ (no
`current`, `releases/<id>` or `releases/` linked elsewhere).

Python 3.8 syntax, standard library only (this file runs on the board).
"""
import json
import os
import re
from typing import List, Optional, Tuple

from edgekit.errors import BundleError, ConfigError, first_line

ENV_TRUSTED_KEYS = "EDGEKIT_TRUSTED_KEYS"
ENV_DEVICE_CONFIG = "EDGEKIT_DEVICE_CONFIG"
DEFAULT_DEVICE_CONFIG = "~/.config/edgekit/device.json"
DEVICE_FORMAT = "edgekit-device-v1"
DEVICE_KEYS_DIR = "trusted_keys"
MAX_DEVICE_CONFIG_BYTES = 1 << 16
_RELEASE_RE = re.compile(r"^[0-9a-f]{16}$")


def device_config_path() -> str:
    value = os.environ.get(ENV_DEVICE_CONFIG)
    if value is None:
        return os.path.expanduser(DEFAULT_DEVICE_CONFIG)
    if not value.strip():
        raise ConfigError("{} is set but empty; allowed: the path of the device config (unset it for {})".format(
            ENV_DEVICE_CONFIG, DEFAULT_DEVICE_CONFIG))
    return os.path.expanduser(value)


def recorded_remote_dirs() -> List[str]:
    """The remote dirs `edgekit flash` recorded in the device config ([] when there is no config file)."""
    path = device_config_path()
    if not os.path.lexists(path):
        return []
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_DEVICE_CONFIG_BYTES:
            raise ValueError("not a regular file of at most {} bytes".format(MAX_DEVICE_CONFIG_BYTES))
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        dirs = data.get("remote_dirs") if isinstance(data, dict) and data.get("format") == DEVICE_FORMAT else None
        if not isinstance(dirs, list) or not all(isinstance(d, str) and os.path.isabs(d) for d in dirs):
            raise ValueError("expected {{\"format\": \"{}\", \"remote_dirs\": [absolute paths]}}".format(DEVICE_FORMAT))
    except (OSError, ValueError) as exc:
        raise ConfigError("device config {} is unreadable or malformed ({}); the device's key setting fails "
                          "closed until it is fixed".format(path, first_line(exc)))
    return list(dirs)


def release_layout(bundle_dir: str) -> Optional[str]:
    """The remote_dir when bundle_dir is named as <remote_dir>/current, /previous or /releases/<name> (by the
    path given, else by where it resolves); None for a bundle anywhere else."""
    given = os.path.abspath(bundle_dir)
    if os.path.basename(given) in ("current", "previous"):
        return os.path.dirname(given)
    for path in (given, os.path.realpath(given)):
        parent = os.path.dirname(path)
        if os.path.basename(parent) == "releases":
            return os.path.dirname(parent)
    return None


def _keys_dir_source(remote_dir: str) -> Optional[str]:
    """<remote_dir>/trusted_keys when it exists (a directory); ConfigError when it exists as anything else."""
    path = os.path.join(remote_dir, DEVICE_KEYS_DIR)
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        what = "a dangling link" if os.path.islink(path) else "not a directory"
        raise ConfigError("device key setting {} is {}; allowed: a directory of *.pub files (an empty one trusts "
                          "no one); nothing runs until it is fixed".format(path, what))
    return path


def device_key_paths(bundle_dir: str) -> List[Tuple[str, List[str]]]:
    """The device's settings: [(name of the setting, key paths)], possibly empty. ConfigError when one is
    malformed; BundleError when one exists and bundle_dir is a release resolving outside its releases/."""
    found = []   # type: List[Tuple[str, List[str]]]
    env = os.environ.get(ENV_TRUSTED_KEYS)
    if env is not None:
        paths = [p for p in env.split(os.pathsep) if p]
        if not paths:
            raise ConfigError("{}={!r} names no key; allowed: key files or directories of *.pub files separated "
                              "by '{}' (unset it to drop the setting)".format(ENV_TRUSTED_KEYS, env, os.pathsep))
        found.append((ENV_TRUSTED_KEYS, paths))
    layout = release_layout(bundle_dir)
    seen = set()
    for remote_dir in recorded_remote_dirs() + ([layout] if layout else []):
        path = _keys_dir_source(remote_dir)
        if path is not None and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            found.append((path, [path]))
    if found and layout is not None:
        check_inside_releases(bundle_dir, layout, found[0][0])
    return found


def check_inside_releases(bundle_dir: str, remote_dir: str, setting: str) -> None:
    """A release runs only from a real directory <remote_dir>/releases/<id>: no link out of releases/."""
    releases = os.path.join(os.path.realpath(remote_dir), "releases")
    real = os.path.realpath(bundle_dir)
    if os.path.realpath(os.path.join(remote_dir, "releases")) != releases or os.path.dirname(real) != releases or \
            not _RELEASE_RE.match(os.path.basename(real)):
        raise BundleError("bundle {} resolves to {}, outside {}/; with a device key setting ({}) a release runs "
                          "only from inside its own releases/ directory".format(bundle_dir, real, releases, setting))
