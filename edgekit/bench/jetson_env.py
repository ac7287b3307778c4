"""Jetson power settings for the bench environment: the nvpmodel mode and whether jetson_clocks is on.

Both change latency and energy several-fold, so a Jetson report records them. Read from files (no root, no
commands), all under `root` (default "/"), the same on JetPack 4 and JetPack 5/6:
  etc/nvpmodel.conf            "< POWER_MODEL ID=0 NAME=MAXN >" lines, "< PM_CONFIG DEFAULT=2 >"
  var/lib/nvpmodel/status      "pmode:0002 fmode:..." (the mode nvpmodel last set; absent: the default)
  sys/devices/system/cpu/cpu*/cpufreq/scaling_{min,max}_freq
  sys/class/devfreq/*/{min_freq,max_freq}   the GPU: 57000000.gpu (JetPack 4), 17000000.ga10b (JetPack 5),
                                           17000000.gpu (JetPack 6)
jetson_clocks pins every online CPU's and the GPU's minimum frequency to its maximum; that is what is checked
("on" only when all of them are pinned). Stdlib only, Python 3.8 syntax: runs on the board.
"""
import glob
import os
import re
from typing import Any, Dict, List, Optional

MARKERS = ("etc/nv_tegra_release", "etc/nvpmodel.conf")
CONF = "etc/nvpmodel.conf"
STATUS = "var/lib/nvpmodel/status"
GPU_DEVFREQ = ("gpu", "ga10b", "gv11b", "gp10b")      # devfreq device names of Jetson GPUs
_MODE_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)")
_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)")


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def is_jetson(root: str = "/") -> bool:
    return any(os.path.exists(os.path.join(root, m)) for m in MARKERS)


def nvpmodel_mode(root: str = "/") -> Dict[str, Any]:
    """{"id", "name", "source"}: the current power mode, or Nones with the reason in source."""
    conf = _read(os.path.join(root, CONF))
    names = dict((int(i), n) for i, n in _MODE_RE.findall(conf or ""))
    status = _read(os.path.join(root, STATUS))
    m = re.search(r"pmode:(\d+)", status or "")
    if m:
        mode, source = int(m.group(1)), "/" + STATUS
    else:
        d = _DEFAULT_RE.search(conf or "")
        if d is None:
            return {"id": None, "name": None, "source": "no /{} and no default in /{}".format(STATUS, CONF)}
        mode, source = int(d.group(1)), "/{} default (no /{})".format(CONF, STATUS)
    return {"id": mode, "name": names.get(mode), "source": source}


def _pinned(min_path: str, max_path: str) -> Optional[bool]:
    lo, hi = _read(min_path), _read(max_path)
    if lo is None or hi is None or not lo.isdigit() or not hi.isdigit():
        return None
    return int(lo) == int(hi)


def _online_cpus(root: str) -> List[str]:
    cpus = sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*")),
                  key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    return [c for c in cpus if _read(os.path.join(c, "online")) != "0" and os.path.isdir(os.path.join(c, "cpufreq"))]


def jetson_clocks(root: str = "/") -> Dict[str, Any]:
    """{"on": True/False/None, "cpus_pinned", "cpus", "gpu": name or None, "gpu_pinned"}."""
    cpus = _online_cpus(root)
    states = [_pinned(os.path.join(c, "cpufreq/scaling_min_freq"), os.path.join(c, "cpufreq/scaling_max_freq"))
              for c in cpus]
    gpu, gpu_pinned = None, None
    for dev in sorted(glob.glob(os.path.join(root, "sys/class/devfreq/*"))):
        name = os.path.basename(dev)
        if name.split(".")[-1] in GPU_DEVFREQ:
            gpu, gpu_pinned = name, _pinned(os.path.join(dev, "min_freq"), os.path.join(dev, "max_freq"))
            break
    known = [s for s in states if s is not None]
    cpus_pinned = None if not known else all(known)
    on = None if cpus_pinned is None else bool(cpus_pinned and gpu_pinned is not False)
    return {"on": on, "cpus_pinned": cpus_pinned, "cpus": len(cpus), "gpu": gpu, "gpu_pinned": gpu_pinned}


def jetson_environment(root: str = "/") -> Optional[Dict[str, Any]]:
    """The Jetson part of a bench environment, or None on any other machine."""
    if not is_jetson(root):
        return None
    release = _read(os.path.join(root, "etc/nv_tegra_release"))
    return {"l4t": release.splitlines()[0][:120] if release else None, "nvpmodel": nvpmodel_mode(root),
            "jetson_clocks": jetson_clocks(root)}
