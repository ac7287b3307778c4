"""Board profiles loaded from targets/*.yaml and validated: unknown keys and bad values are errors."""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from edgekit.errors import ConfigError
from edgekit.manifest import PRECISIONS
from edgekit.power_model import METER_NAMES, PowerModel

ARCHES = ("aarch64", "armv7l", "x86_64")
RUNTIME_PACKAGES = ("ai-edge-litert", "tflite-runtime")
_REQUIRED = ("name", "description", "arch", "cpu", "cores", "default_threads", "memory_mb", "runtime_package",
             "python", "precisions", "fp16_compute", "delegates", "energy_meter", "power_model")
_OPTIONAL = ("channel_multiple", "board_model")
PACKAGED_TARGETS = "_targets"     # the copy of targets/ that an installed edgekit carries (setup.py writes it)


def targets_dir() -> str:
    """The board profiles: the copy inside an installed package (edgekit/_targets), else targets/ beside the
    package in a source checkout or editable install, where targets/ is the one source of truth."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = (os.path.join(here, PACKAGED_TARGETS), os.path.join(os.path.dirname(here), "targets"))
    for cand in candidates:
        if os.path.isdir(cand):
            return cand
    raise ConfigError("no board profiles found: looked in {}; an installed edgekit carries them in "
                      "edgekit/{}, a source checkout in targets/".format(" and ".join(candidates), PACKAGED_TARGETS))


@dataclass(frozen=True)
class Delegate:
    name: str
    library: str
    options: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str
    cpu: str
    cores: int
    default_threads: int
    memory_mb: int
    runtime_package: str
    python: Tuple[str, str]
    precisions: Tuple[str, ...]
    fp16_compute: bool
    delegates: Tuple[Delegate, ...]
    energy_meter: str
    power_model: PowerModel
    channel_multiple: int = 1
    board_model: Optional[str] = None    # what /proc/device-tree/model on such a board contains; None: not checked

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "arch": self.arch, "cpu": self.cpu,
            "cores": self.cores, "default_threads": self.default_threads, "memory_mb": self.memory_mb,
            "runtime_package": self.runtime_package, "python": {"min": self.python[0], "max": self.python[1]},
            "precisions": list(self.precisions), "fp16_compute": self.fp16_compute,
            "delegates": [{"name": d.name, "library": d.library, "options": dict(d.options)} for d in self.delegates],
            "energy_meter": self.energy_meter,
            "power_model": self.power_model.to_dict(), "channel_multiple": self.channel_multiple,
            "board_model": self.board_model,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Target":
        if not isinstance(d, dict):
            raise ConfigError("{}: expected a mapping of profile keys, got {}".format(where, type(d).__name__))
        unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise ConfigError("{}: unknown key(s) {}; allowed: {}".format(
                where, ", ".join(unknown), ", ".join(_REQUIRED + _OPTIONAL)))
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ConfigError("{}: missing key(s) {}".format(where, ", ".join(missing)))
        arch = _choice(d["arch"], ARCHES, where + ".arch")
        cores = _int(d["cores"], where + ".cores", 1, 256)
        precisions = d["precisions"]
        if not isinstance(precisions, list) or not precisions:
            raise ConfigError("{}.precisions: expected a non-empty list, got {!r}".format(where, precisions))
        for p in precisions:
            _choice(p, PRECISIONS, where + ".precisions")
        fp16 = _bool(d["fp16_compute"], where + ".fp16_compute")
        return cls(
            name=_str(d["name"], where + ".name"), description=_str(d["description"], where + ".description"),
            arch=arch, cpu=_str(d["cpu"], where + ".cpu"), cores=cores,
            default_threads=_int(d["default_threads"], where + ".default_threads", 1, cores),
            memory_mb=_int(d["memory_mb"], where + ".memory_mb", 64, 1 << 22),
            runtime_package=_choice(d["runtime_package"], RUNTIME_PACKAGES, where + ".runtime_package"),
            python=_python_range(d["python"], where + ".python"), precisions=tuple(precisions),
            fp16_compute=fp16, delegates=_delegates(d["delegates"], where + ".delegates"),
            energy_meter=_choice(d["energy_meter"], METER_NAMES, where + ".energy_meter"),
            power_model=PowerModel.from_dict(d["power_model"], where + ".power_model"),
            channel_multiple=_int(d.get("channel_multiple", 1), where + ".channel_multiple", 1, 64),
            board_model=None if d.get("board_model") is None else _str(d["board_model"], where + ".board_model"),
        )


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError("{}: expected a non-empty string, got {!r}".format(where, v))
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError("{}: expected an integer from {} to {}, got {!r}".format(where, lo, hi, v))
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError("{}: expected true or false (a YAML boolean), got {!r}".format(where, v))
    return v


def _choice(v: Any, allowed: Tuple[str, ...], where: str) -> str:
    if v not in allowed:
        raise ConfigError("{}: got {!r}; allowed: {}".format(where, v, ", ".join(allowed)))
    return v


def _python_range(v: Any, where: str) -> Tuple[str, str]:
    if not isinstance(v, dict) or set(v) != {"min", "max"}:
        raise ConfigError("{}: expected {{min: '3.x', max: '3.y'}}, got {!r}".format(where, v))
    lo, hi = str(v["min"]), str(v["max"])
    try:
        if tuple(int(x) for x in lo.split(".")) > tuple(int(x) for x in hi.split(".")):
            raise ConfigError("{}: min {} is above max {}".format(where, lo, hi))
    except ValueError:
        raise ConfigError("{}: versions must look like '3.11', got {!r}".format(where, v))
    return lo, hi


def _delegates(v: Any, where: str) -> Tuple[Delegate, ...]:
    if not isinstance(v, list):
        raise ConfigError("{}: expected a list (may be empty), got {!r}".format(where, v))
    out = []
    for i, item in enumerate(v):
        w = "{}[{}]".format(where, i)
        if not isinstance(item, dict) or not {"name", "library"} <= set(item) <= {"name", "library", "options"}:
            raise ConfigError("{}: expected {{name, library, options?}}, got {!r}".format(w, item))
        opts = item.get("options") or {}
        if not isinstance(opts, dict):
            raise ConfigError("{}.options: expected a mapping, got {!r}".format(w, opts))
        out.append(Delegate(_str(item["name"], w + ".name"), _str(item["library"], w + ".library"),
                            tuple(sorted((str(k), str(x)) for k, x in opts.items()))))
    return tuple(out)


def load_target_file(path: str) -> Target:
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("cannot read target profile {}: {}".format(path, exc))
    target = Target.from_dict(data, os.path.basename(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    if target.name != stem:
        raise ConfigError("{}: name {!r} must match the file name {!r}".format(path, target.name, stem))
    return target


def list_targets(directory: Optional[str] = None) -> List[Target]:
    """Every profile in targets/ (the schema and template files are not profiles)."""
    directory = directory or targets_dir()
    names = sorted(f for f in os.listdir(directory) if f.endswith(".yaml") and not f.startswith("_"))
    return [load_target_file(os.path.join(directory, f)) for f in names]


def get_target(name: str, directory: Optional[str] = None) -> Target:
    known = list_targets(directory)
    for t in known:
        if t.name == name:
            return t
    raise ConfigError("unknown target {!r}; known targets: {}".format(name, ", ".join(t.name for t in known)))
