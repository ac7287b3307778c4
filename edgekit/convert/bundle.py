"""The bundle: its manifest (build_manifest, the one place that makes one), and the directory written atomically:
OUT/<target>/manifest.json + stage_<k>.tflite + report.json."""
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Sequence

import edgekit
from edgekit.atomic import swap_in
from edgekit.bench.energy import manifest_energy
from edgekit.convert.stages import Front, Stage
from edgekit.errors import BundleError, ModelError
from edgekit.convert.pack import Stored
from edgekit.manifest import (MANIFEST_NAME, PACKED_SCHEMA_VERSION, REPORT_NAME, SCHEMA_VERSION, ExitSpec, Manifest,
                              StageSpec, TensorSpec)
from edgekit.runtime.policy import DEFAULT_RULE, EXIT_RULES


def build_manifest(front: Front, stored: Sequence[Stored], quant: Sequence[Dict[str, Any]], costs: Dict[str, Any],
                   lite_outputs: Sequence[Any], target, precisions: Sequence[str], threshold: float,
                   exit_rule: Optional[str]) -> Manifest:
    """stored: each stage file (the model, or with 4-bit filters packed: convert/pack.py); quant: per stage, the
    carried tensors that cross their boundary as integers (convert/boundaries.py); costs: the measured stage costs
    (convert/evaluate.py); lite_outputs: each exit's output on the calibration data (its class count); threshold:
    every early exit's until thresholds are fitted. A bundle with a packed stage file is schema version 2 (an
    edgekit that reads version 1 only refuses it), any other version 1."""
    last = len(front.stages) - 1
    specs = tuple(StageSpec(
        index=st.index, file="stage_{}.tflite".format(st.index), sha256=hashlib.sha256(f.data).hexdigest(),
        precision=p, inputs=tuple(_typed(t, q) for t in st.inputs), outputs=tuple(_typed(t, q) for t in st.outputs),
        exit=ExitSpec(name=st.exit_name, threshold=threshold if st.index < last else 0.0,
                      classes=int(out.shape[-1]), rule=_rule(exit_rule, st), score=st.score_name),
        flops=st.flops, size_bytes=len(f.data), latency_ms=c["latency_ms"], packed=f.packing)
        for st, f, p, q, c, out in zip(front.stages, stored, precisions, quant, costs["stages"], lite_outputs))
    version = PACKED_SCHEMA_VERSION if any(f.packing is not None for f in stored) else SCHEMA_VERSION
    return Manifest(model_name=front.name, target=target.name, edgekit_version=edgekit.__version__,
                    input=front.input, stages=specs, extra=_board_extra(target, costs), schema_version=version)


def _typed(spec: TensorSpec, quant: Optional[Dict[str, Any]]) -> TensorSpec:
    """The spec of a carried tensor that crosses its boundary as an integer (convert/boundaries.py)."""
    q = (quant or {}).get(spec.name)
    return spec if q is None else TensorSpec(spec.name, spec.shape, q.dtype, (q.scale, q.zero_point))


def _rule(asked: Optional[str], st: Stage) -> str:
    """A stage with a learned score output uses it; others the asked rule (default max_softmax)."""
    if st.score_name:
        return "learned"
    if asked == "learned":
        raise ModelError("--exit-rule learned needs a score output per exit (a model output named {}_score); "
                         "allowed here: {}".format(st.exit_name, ", ".join(r for r in EXIT_RULES if r != "learned")))
    return asked or DEFAULT_RULE


def _board_extra(target, costs: Dict[str, Any]) -> Dict[str, Any]:
    """What the board needs from its profile, carried in the manifest: threads (per stage as measured, the
    profile's count as their upper bound) and delegates for the runtime, the measured stage costs the threads
    were chosen from, the energy meter and power model for `python -m edgekit.bench` (the board has no targets/)."""
    return {"runtime": {"num_threads": target.default_threads,
                        "stage_threads": [s["threads"] for s in costs["stages"]],
                        "delegates": [{"name": d.name, "library": d.library, "options": dict(d.options)}
                                      for d in target.delegates]},
            "costs": costs, "energy": manifest_energy(target)}


def bundle_path(out_dir: str, target: str) -> str:
    return os.path.join(out_dir, target)


def check_writable(out_dir: str, target: str, force: bool) -> str:
    """Fail before any work when the bundle exists and --force was not given."""
    path = bundle_path(out_dir, target)
    if os.path.exists(path) and not force:
        raise BundleError("bundle {} already exists; pass --force to replace it (nothing was written)".format(path))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BundleError("output {} exists and is not a directory".format(out_dir))
    return path


def write_bundle(out_dir: str, manifest: Manifest, files: Dict[str, bytes], report: Dict[str, Any],
                 force: bool) -> str:
    """Write everything into a temporary directory beside the destination, then rename it into place. A failure
    at any point leaves the previous bundle (if any) untouched."""
    dest = check_writable(out_dir, manifest.target, force)
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".{}.tmp-".format(manifest.target), dir=out_dir)
    try:
        for name, blob in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(blob)
        with open(os.path.join(tmp, MANIFEST_NAME), "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
        with open(os.path.join(tmp, REPORT_NAME), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
