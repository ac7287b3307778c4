"""What `edgekit bench` calls for a run on this machine: the bundle's target profile from targets/ gives the power
model. (On a board: edgekit/deploy/board_runs.py.) A bundle made for another kind of machine (a Raspberry Pi
bundle benchmarked on an x86 laptop) still runs with what its profile chose, and the result says what it borrowed.
"""
import platform
from typing import Any, Dict, List, Optional

from edgekit.bench.energy import EnergyOptions, profile_from_target
from edgekit.bench.latency import Protocol, timed_runner
from edgekit.bench.run import run_bench
from edgekit.data import load_data
from edgekit.targets import Target, get_target

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


def this_arch() -> str:
    """platform.machine() in the profiles' words (x86_64, aarch64, armv7l)."""
    machine = platform.machine()
    return _ARCH_ALIASES.get(machine.lower(), machine)


def local_bench(bundle: str, data: str, protocol: Protocol, energy: EnergyOptions,
                threads: Optional[int] = None, interpreter: Optional[str] = None) -> Dict[str, Any]:
    protocol.check()
    energy.check()
    ds = load_data(data)
    runner, init_ms = timed_runner(bundle, backend=interpreter, num_threads=threads)
    target = get_target(runner.manifest.target)
    result = run_bench(runner, ds.x, ds.y, protocol, energy, profile_from_target(target), init_ms=init_ms)
    result["borrowed_from_profile"] = borrowed_from_profile(target, runner.manifest.extra, result, threads,
                                                            this_arch())
    return result


def borrowed_from_profile(target: Target, manifest_extra: Dict[str, Any], result: Dict[str, Any],
                          threads: Optional[int], arch: str) -> List[str]:
    """What a run on this machine took from a profile made for another kind of machine, in words ([] when the
    bundle's target has this machine's arch): the thread counts per stage (unless --threads chose them) and the
    power model (when it gave the energy figures)."""
    if target.arch == arch:
        return []
    out = ["this is an {} machine and the bundle was made for {} ({}, {}): its latency here says little about "
           "the board".format(arch, target.name, target.arch, target.cpu)]
    if threads is None:
        measured = (manifest_extra.get("costs") or {}).get("measured_on", "no measurement")
        out.append("threads per stage {} come from the bundle (chosen for {}: profile default_threads {}, stage "
                   "costs from {}), capped at this machine's cores; --threads N chooses here".format(
                       result["environment"].get("stage_threads"), target.name, target.default_threads, measured))
    energy = result.get("energy") or {}
    if energy.get("meter") == "power-model":
        pm = target.power_model
        out.append("energy is ESTIMATED with {}'s power model ({:g} W idle, {:g} W active), not this machine's "
                   "power".format(target.name, pm.idle_w, pm.active_w))
    return out
