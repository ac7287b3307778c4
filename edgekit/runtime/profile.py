"""Per-stage costs of a bundle at each thread count, measured where it runs (python -m edgekit.runtime.profile).

On the board: python -m edgekit.runtime.profile BUNDLE DATA [--json] [--threads N] [--measured-on board]
prints the bundle's `costs` record (runtime/cost_protocol.py) as one JSON object; `edgekit profile` writes it
into the bundle. Stage inputs come from the first sample of DATA run through the chain. numpy + a TFLite
interpreter only, Python 3.8 syntax.
"""
import argparse
import json
import sys
from typing import Any, Dict, List, Optional

import numpy as np

from edgekit.data import load_data
from edgekit.errors import BundleError
from edgekit.runtime.cost_protocol import (BOARD, MEASURED_ON, CostProtocol, costs_section, resolve_stage_threads,
                                           stage_cost_table, thread_candidates)
from edgekit.runtime.entry import finish
from edgekit.runtime.guard import stage_bytes
from edgekit.runtime.interpreter import BACKENDS
from edgekit.runtime.runner import EarlyExitRunner


def _feeds(runner: EarlyExitRunner, x: np.ndarray) -> List[Dict[str, np.ndarray]]:
    return [dict(zip(step.call.input_names, values)) for _, step, values, _ in runner.chain(x[:1])]


def _blobs(runner: EarlyExitRunner) -> List[bytes]:
    """The stage models, read and checked against the manifest again (read a second time here), packed 4-bit
    weights restored (guard.stage_bytes)."""
    try:
        return [stage_bytes(runner.bundle_dir, st) for st in runner.manifest.stages]
    except BundleError as exc:
        raise BundleError("a stage file changed while the bundle was profiled: {}".format(exc))


def profile_bundle(bundle_dir: str, x: np.ndarray, threads: Optional[int] = None, measured_on: str = BOARD,
                   protocol: Optional[CostProtocol] = None, backend: Optional[str] = None,
                   cores: Optional[int] = None) -> Dict[str, Any]:
    """The bundle's `costs` record measured here: every stage at each thread count 1..cores (or `threads`)."""
    if threads is not None:
        resolve_stage_threads({}, 1, threads)             # a bad count fails before anything is loaded
    runner = EarlyExitRunner(bundle_dir, backend=backend, num_threads=1)
    counts = resolve_stage_threads({}, 1, threads) if threads is not None else thread_candidates(256, cores)
    proto = protocol or CostProtocol()
    table = stage_cost_table(runner.backend, _blobs(runner), _feeds(runner, x), counts, proto)
    section = costs_section(table, measured_on, proto)
    section["interpreter"] = {"name": runner.backend.name, "version": runner.backend.version}
    return section


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgekit.runtime.profile", description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("data", help=".npz with x or .npy: the first sample feeds the stages")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    ap.add_argument("--threads", type=int, default=None, help="measure this thread count only")
    ap.add_argument("--measured-on", choices=MEASURED_ON, default=BOARD)
    ap.add_argument("--max-seconds", type=float, default=None, help="bound on the measurement (seconds)")
    ap.add_argument("--interpreter", choices=BACKENDS, default=None)
    args = ap.parse_args(argv)

    def work() -> Dict[str, Any]:
        proto = CostProtocol() if args.max_seconds is None else CostProtocol(max_seconds=args.max_seconds).check()
        return profile_bundle(args.bundle, load_data(args.data).x, args.threads, args.measured_on, proto,
                              args.interpreter)

    return finish(work, True, json.dumps)


if __name__ == "__main__":
    sys.exit(main())
