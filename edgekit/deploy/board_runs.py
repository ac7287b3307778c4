"""`edgekit bench`, `run` and `profile` with --host: the command runs on the board, in the flashed release, over
SSH, and its JSON result comes back.

The bench runs as `python -m edgekit.bench` there with every profile's energy data passed as JSON (the board has no
YAML parser and no targets/; this laptop's profiles take precedence over the copy that the bundle's manifest
carries for runs by hand); a run as `python -m edgekit.runtime`; a profile as `python -m edgekit.runtime.profile`.
"""
import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

from edgekit.bench.energy import EnergyOptions, profile_from_target
from edgekit.bench.latency import Protocol
from edgekit.bench.profile import sample_input
from edgekit.deploy.hosts import Board
from edgekit.deploy.remote import run_remote
from edgekit.errors import ConfigError
from edgekit.manifest import MANIFEST_NAME, load_bundle, read_manifest
from edgekit.runtime.cost_protocol import resolve_stage_threads
from edgekit.targets import list_targets

_RELEASE_RE = re.compile(r"^(current|previous|[0-9a-f]{16})$")
BENCH_MODULE = "edgekit.bench"
PROFILE_MODULE = "edgekit.runtime.profile"


def release_for(bundle: str) -> str:
    """With --host, BUNDLE names a release on the board: 'current', 'previous', a 16-hex bundle id, or a
    local bundle directory (its bundle id; it must have been flashed)."""
    if os.path.isfile(os.path.join(bundle, MANIFEST_NAME)):
        return read_manifest(bundle).bundle_id
    if _RELEASE_RE.match(bundle):
        return bundle
    raise ConfigError("with --host, BUNDLE {!r} must be a release on the board: allowed: 'current', 'previous', "
                      "a 16-hex-digit bundle id, or a local bundle directory that was flashed".format(bundle))


def profiles_table() -> Dict[str, Dict[str, Any]]:
    """Every board profile's energy data, by target name, for `--profiles` on the board."""
    return {t.name: {k: v for k, v in profile_from_target(t).to_dict().items() if k != "name"}
            for t in list_targets()}


def bench_args(protocol: Protocol, energy: EnergyOptions) -> List[str]:
    args = ["--runs", str(protocol.runs), "--warmup", str(protocol.warmup), "--seconds", repr(protocol.min_seconds),
            "--meter", energy.meter, "--blocks", str(energy.blocks), "--block-seconds", repr(energy.block_seconds),
            "--idle-seconds", repr(energy.idle_seconds),
            "--profiles", json.dumps(profiles_table(), separators=(",", ":"), sort_keys=True)]
    if energy.usb_device:
        args += ["--usb-meter", energy.usb_device]
    return args


def board_bench(board: Board, bundle: str, data: str, protocol: Protocol, energy: EnergyOptions,
                threads: Optional[int] = None, interpreter: Optional[str] = None) -> Dict[str, Any]:
    """The bench run on `board` (an edgekit.deploy Board) with the same protocol; its JSON result."""
    protocol.check()
    energy.check()
    result = run_remote(board, release_for(bundle), data, bench_args(protocol, energy) +
                        _runtime_args(threads, interpreter, None), module=BENCH_MODULE)
    result["host"] = board.label
    return result


def _runtime_args(threads: Optional[int], interpreter: Optional[str], max_batch: Optional[int]) -> List[str]:
    """--threads, --interpreter, --max-batch for the board's python -m edgekit.runtime / edgekit.bench."""
    args = [] if threads is None else ["--threads", str(resolve_stage_threads({}, 1, threads)[0])]
    args += [] if interpreter is None else ["--interpreter", interpreter]
    return args + ([] if max_batch is None else ["--max-batch", str(max_batch)])


def board_run(board: Board, bundle: str, data: str, full_depth: bool, threads: Optional[int] = None,
              target_ms: Optional[float] = None, interpreter: Optional[str] = None,
              max_batch: Optional[int] = None) -> Dict[str, Any]:
    """`python -m edgekit.runtime` on `board`: predictions, exits, accuracy, as `edgekit run --json`."""
    args = (["--full-depth"] if full_depth else []) + ([] if target_ms is None else ["--target-ms", repr(target_ms)])
    result = run_remote(board, release_for(bundle), data, args + _runtime_args(threads, interpreter, max_batch))
    result["host"] = board.label
    return result


def profile_board(board: Board, bundle: str, data: Optional[str], threads: Optional[int] = None) -> Dict[str, Any]:
    """The costs record measured on `board` for the flashed release of `bundle`."""
    release = release_for(bundle)
    args = [] if threads is None else ["--threads", str(int(threads))]
    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
        if data is None:
            data = os.path.join(tmp, "sample.npy")
            np.save(data, sample_input(load_bundle(bundle)))
        section = run_remote(board, release, data, args, module=PROFILE_MODULE)
    section["host"] = board.label
    return section
