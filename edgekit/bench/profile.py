"""`edgekit profile`: measure a bundle's per-stage costs here or on the board and write them into the bundle.

The measurement is the runtime's (edgekit/runtime/profile.py, the shared protocol); on a board it runs as
`python -m edgekit.runtime.profile` on the flashed release over SSH (edgekit/deploy/board_runs.py). The bundle is rewritten atomically (a
copy is edited, then swapped in): each stage's latency_ms, the thread count chosen per stage
(runtime.stage_threads) and the `costs` record with its spread and the machine. A signature no longer matches
the new manifest: it is removed and the caller says the bundle needs signing again.
"""
import os
from dataclasses import replace
from typing import Any, Callable, Dict, Optional

import numpy as np

from edgekit.atomic import swap_in_edited_copy
from edgekit.errors import BundleError, ConfigError
from edgekit.manifest import MANIFEST_NAME, Manifest, load_bundle
from edgekit.runtime.cost_protocol import CONVERTING_MACHINE, MEASURED_ON, CostProtocol
from edgekit.signing import SIGNATURE_NAME


def sample_input(manifest: Manifest, seed: int = 0) -> np.ndarray:
    """One synthetic batch-1 input of the bundle's shape (uniform in [0, 1)) when no data is given."""
    shape = tuple(1 if d is None else int(d) for d in manifest.input.shape)
    return np.random.RandomState(seed).random_sample(shape).astype(np.float32)


def profile_here(bundle: str, x: np.ndarray, threads: Optional[int] = None,
                 protocol: Optional[CostProtocol] = None) -> Dict[str, Any]:
    from edgekit.runtime.profile import profile_bundle

    return profile_bundle(bundle, x, threads, CONVERTING_MACHINE, protocol)


def apply_costs(manifest: Manifest, section: Dict[str, Any]) -> Manifest:
    """The manifest with the measured per-stage latency, thread counts and costs record."""
    stages = section.get("stages")
    if section.get("measured_on") not in MEASURED_ON or not isinstance(stages, list) or \
            len(stages) != len(manifest.stages):
        raise BundleError("the costs measured do not fit this bundle: {} stage(s) measured on {!r}, the bundle has "
                          "{}".format(len(stages or []), section.get("measured_on"), len(manifest.stages)))
    new_stages = tuple(replace(s, latency_ms=float(c["latency_ms"])) for s, c in zip(manifest.stages, stages))
    runtime = dict(manifest.extra.get("runtime", {}), stage_threads=[int(c["threads"]) for c in stages])
    return replace(manifest, stages=new_stages, extra=dict(manifest.extra, runtime=runtime, costs=section))


def rewrite_bundle(bundle_dir: str, edit: Callable[[str], None]) -> bool:
    """Run edit() on a copy of the bundle, then swap the copy in; on any failure the bundle is as it was.
    A signature in the bundle covers the old manifest: it is left out of the new one. True when it was signed."""
    def unsign_then_edit(work: str) -> bool:
        signed = os.path.isfile(os.path.join(work, SIGNATURE_NAME))
        if signed:
            os.remove(os.path.join(work, SIGNATURE_NAME))
        edit(work)
        return signed

    return swap_in_edited_copy(bundle_dir, unsign_then_edit, ".profile-")


def write_costs(bundle_dir: str, section: Dict[str, Any]) -> bool:
    """Write the measured costs into the bundle atomically; True when a signature had to be dropped."""
    manifest = apply_costs(load_bundle(bundle_dir), section)

    def edit(work: str) -> None:
        Manifest.from_json(manifest.to_json())       # what is written must load again
        with open(os.path.join(work, MANIFEST_NAME), "w", encoding="utf-8") as f:
            f.write(manifest.to_json())

    return rewrite_bundle(bundle_dir, edit)


def check_threads(threads: Optional[int]) -> Optional[int]:
    if threads is not None and not 1 <= threads <= 256:
        raise ConfigError("--threads {}: allowed an integer from 1 to 256".format(threads))
    return threads


def cost_rows(section: Dict[str, Any]):
    """Table rows: stage, each thread count's median [p10-p90], the chosen count."""
    rows = []
    for k, st in enumerate(section["stages"]):
        cells = ["{}: {:.4f} [{:.4f}-{:.4f}]".format(t, c["median_ms"], c["p10_ms"], c["p90_ms"])
                 for t, c in sorted(st["by_threads"].items(), key=lambda kv: int(kv[0]))]
        rows.append((str(k), "  ".join(cells), str(st["threads"]), "{:.4f}".format(st["latency_ms"])))
    return rows


def summary(section: Dict[str, Any]) -> str:
    m = section.get("machine", {})
    return "measured_on: {}  ({}, {}, {} cores{})".format(
        section["measured_on"], m.get("hostname", "?"), m.get("cpu_model", "?"), m.get("cores", "?"),
        ", " + section["host"] if section.get("host") else "")
