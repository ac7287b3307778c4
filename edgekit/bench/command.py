"""What `edgekit bench` calls for a run on this machine: the bundle's target profile from targets/ gives the power
model. (On a board: edgekit/deploy/board_runs.py.)
"""
from typing import Any, Dict, Optional

from edgekit.bench.energy import EnergyOptions, profile_from_target
from edgekit.bench.latency import Protocol


def local_bench(bundle: str, data: str, protocol: Protocol, energy: EnergyOptions,
                threads: Optional[int] = None) -> Dict[str, Any]:
    from edgekit.bench.run import run_bench
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner
    from edgekit.targets import get_target

    protocol.check()
    energy.check()
    ds = load_data(data)
    runner = EarlyExitRunner(bundle, num_threads=threads)
    profile = profile_from_target(get_target(runner.manifest.target))
    return run_bench(runner, ds.x, ds.y, protocol, energy, profile)
