"""What the board is (from the agent's probe) and whether it can run a bundle made for a target profile.

Hard problems stop a flash always; soft ones (a different board of the same arch, fewer cores, less memory,
another interpreter package or Python than the profile names) stop it unless --force, then become warnings.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from edgekit.deploy.errors import BoardMismatchError, DeployError
from edgekit.targets import Target

MIN_PYTHON = (3, 8)            # the runtime keeps to Python 3.8 syntax
DISK_MARGIN_BYTES = 1 << 20
PREFERENCE = ("ai_edge_litert", "tflite_runtime", "tensorflow")       # as edgekit/runtime/interpreter.py
INTERPRETER_PACKAGES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}


@dataclass(frozen=True)
class BoardInfo:
    python: str
    platform: str
    os: str
    kernel: str
    arch: str
    cores: int
    memory_mb: Optional[int]
    model: str
    numpy: Optional[str]
    interpreters: Tuple[Tuple[str, Optional[str]], ...]
    free_bytes: int
    current: Optional[str]
    previous: Optional[str]
    release_state: str                   # absent | complete | damaged (for the bundle being flashed)
    release_bad: Tuple[str, ...]
    remote_dir: str                      # absolute, as the board resolved it
    device_keys: Tuple["KeySource", ...] = ()    # the board's key settings (edgekit/device_keys.py); () = none

    @classmethod
    def from_dict(cls, d: Dict[str, Any], label: str) -> "BoardInfo":
        try:
            rel = d["release"]
            return cls(python=str(d["python"]), platform=str(d["platform"]), os=str(d["os"]),
                       kernel=str(d["kernel"]), arch=str(d["arch"]), cores=int(d["cores"] or 1),
                       memory_mb=None if d["memory_mb"] is None else int(d["memory_mb"]), model=str(d["model"]),
                       numpy=d["numpy"], interpreters=tuple(sorted(d["interpreters"].items())),
                       free_bytes=int(d["free_bytes"]), current=d["current"], previous=d["previous"],
                       release_state=str(rel["state"]), release_bad=tuple(str(b[0]) for b in rel["bad"]),
                       remote_dir=str(d["remote_dir"]), device_keys=board_keys(d.get("device_keys")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeployError("{}: the board's probe answer is malformed ({}: {})".format(label, type(exc).__name__, exc))

    @property
    def python_version(self) -> Tuple[int, ...]:
        return _version(self.python)

    def usable_interpreters(self) -> List[str]:
        """Importable interpreter packages, in the runtime's order of preference."""
        found = dict(self.interpreters)
        return [name for name in PREFERENCE if found.get(name) is not None]

    def to_dict(self) -> Dict[str, Any]:
        return {"python": self.python, "os": self.os, "kernel": self.kernel, "arch": self.arch, "cores": self.cores,
                "memory_mb": self.memory_mb, "model": self.model, "numpy": self.numpy,
                "interpreters": dict(self.interpreters), "free_bytes": self.free_bytes}


@dataclass(frozen=True)
class KeySource:
    """One of the board's key settings: its key files' texts (None: unreadable), or why it is malformed."""
    source: str
    keys: Tuple[Tuple[str, Optional[str]], ...] = ()
    error: Optional[str] = None


def board_keys(value: Any) -> Tuple[KeySource, ...]:
    """The agent's device_keys answer: [{"source", "keys": {file: text or None}} or {"source", "error"}]."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TypeError("device_keys is a {}".format(type(value).__name__))
    out = []
    for item in value:
        keys = item.get("keys") or {}
        out.append(KeySource(str(item["source"]), tuple(sorted((str(k), None if v is None else str(v))
                                                               for k, v in keys.items())),
                             None if item.get("error") is None else str(item["error"])))
    return tuple(out)


def _version(text: str) -> Tuple[int, ...]:
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_board(info: BoardInfo, target: Target, bundle_target: str, need_bytes: int, force: bool,
                label: str) -> List[str]:
    """Raise BoardMismatchError on a hard problem (or a soft one without force); return soft warnings."""
    hard, soft = _hard_problems(info, target, need_bytes), _soft_problems(info, target, bundle_target)
    if hard:
        raise BoardMismatchError("{}: the board cannot run this bundle (target {}): {}{}".format(
            label, target.name, "; ".join(hard), "" if not soft else "; also: " + "; ".join(soft)))
    if soft and not force:
        raise BoardMismatchError("{}: the board differs from target {}: {}; pass --force to flash anyway".format(
            label, target.name, "; ".join(soft)))
    return soft


def _hard_problems(info: BoardInfo, target: Target, need_bytes: int) -> List[str]:
    hard = []
    if info.platform != "linux":
        hard.append("OS is {!r}, edgekit's runtime needs Linux".format(info.platform))
    if info.arch != target.arch:
        hard.append("CPU arch is {}, the bundle's target needs {}".format(info.arch, target.arch))
    if info.python_version[:2] < MIN_PYTHON:
        hard.append("Python is {}, the runtime needs >= {}.{}".format(info.python, *MIN_PYTHON))
    if info.numpy is None:
        hard.append("numpy is not importable by the board's Python (install python3-numpy or pip numpy)")
    if not info.usable_interpreters():
        hard.append("no TFLite interpreter package is importable (ai_edge_litert, tflite_runtime or tensorflow); "
                    "install {} on the board".format(target.runtime_package))
    need = need_bytes + DISK_MARGIN_BYTES
    if info.free_bytes < need:
        hard.append("only {} free on the board's disk, the upload needs {}".format(_size(info.free_bytes), _size(need)))
    return hard


def _soft_problems(info: BoardInfo, target: Target, bundle_target: str) -> List[str]:
    soft = []
    if bundle_target != target.name:
        soft.append("the bundle was built for {}, the board is declared as {}".format(bundle_target, target.name))
    lo, hi = _version(target.python[0]), _version(target.python[1])
    if info.python_version[:2] >= MIN_PYTHON and not lo[:2] <= info.python_version[:2] <= hi[:2]:
        soft.append("Python {} is outside the profile's {}..{}".format(info.python, target.python[0], target.python[1]))
    wanted = INTERPRETER_PACKAGES.get(target.runtime_package)
    usable = info.usable_interpreters()
    if usable and wanted not in usable:
        soft.append("{} is not installed, the runtime will use {}".format(target.runtime_package, usable[0]))
    if info.cores < target.cores:
        soft.append("{} CPU cores, the profile has {}".format(info.cores, target.cores))
    if info.memory_mb is not None and info.memory_mb < 0.85 * target.memory_mb:
        soft.append("{} MB of memory, the profile has {} MB".format(info.memory_mb, target.memory_mb))
    hint = target.board_model
    if hint is not None and hint not in info.model:
        soft.append("the board says it is {!r}, the profile expects a {}".format(info.model or "unknown", hint))
    return soft


def _size(n: int) -> str:
    return "{:.1f} MB".format(n / 1e6) if n >= 100000 else "{} bytes".format(n)
