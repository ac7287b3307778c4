"""What goes onto the board: the bundle's files and edgekit's pure-Python runtime, each with its sha256."""
import glob
import os
from dataclasses import dataclass
from typing import Dict, Tuple

from edgekit.errors import BundleError
from edgekit.manifest import MANIFEST_NAME, REPORT_NAME, Manifest, load_bundle, sha256_file
from edgekit.signing import SIGNATURE_NAME

# The runtime that runs on the board, relative to the directory holding the edgekit package. These files keep
# to Python 3.8 syntax and import only numpy and a TFLite interpreter. One list, here.
RUNTIME_FILES = ("edgekit/__init__.py", "edgekit/errors.py", "edgekit/manifest.py", "edgekit/data.py",
                 "edgekit/manifest_checks.py", "edgekit/rungs.py", "edgekit/power_model.py", "edgekit/atomic.py",
                 "edgekit/device_keys.py", "edgekit/ed25519.py",
                 "edgekit/runtime/*.py", "edgekit/signing.py",
                 # python -m edgekit.bench: latency protocol, energy blocks, meters, curve
                 "edgekit/bench/__init__.py", "edgekit/bench/__main__.py", "edgekit/bench/latency.py",
                 "edgekit/bench/energy.py", "edgekit/bench/curve.py", "edgekit/bench/run.py",
                 "edgekit/bench/jetson_env.py",
                 "edgekit/bench/meters/*.py")
RUNTIME_DIR = "runtime"          # inside a release: runtime/edgekit/... goes on PYTHONPATH


@dataclass(frozen=True)
class PayloadFile:
    rel: str          # path inside the release directory, '/'-separated
    local: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Payload:
    bundle_dir: str
    manifest: Manifest
    files: Tuple[PayloadFile, ...]

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def expected(self) -> Dict[str, str]:
        return {f.rel: f.sha256 for f in self.files}


def _file(rel: str, local: str) -> PayloadFile:
    return PayloadFile(rel=rel, local=local, sha256=sha256_file(local), size=os.path.getsize(local))


def runtime_files() -> Tuple[PayloadFile, ...]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = []
    for pattern in RUNTIME_FILES:
        matches = sorted(glob.glob(os.path.join(root, pattern)))
        if not matches:
            raise BundleError("edgekit's runtime is incomplete here: nothing matches {} under {}".format(pattern, root))
        for path in matches:
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out.append(_file(RUNTIME_DIR + "/" + rel, path))
    return tuple(out)


def build_payload(bundle_dir: str) -> Payload:
    """Check the bundle locally (every sha256 in the manifest) and list what a release holds."""
    manifest = load_bundle(bundle_dir, verify=True)
    files = [_file(MANIFEST_NAME, os.path.join(bundle_dir, MANIFEST_NAME))]
    files += [_file(s.file, os.path.join(bundle_dir, s.file)) for s in manifest.stages]
    for extra in (REPORT_NAME, SIGNATURE_NAME):
        if os.path.isfile(os.path.join(bundle_dir, extra)):
            files.append(_file(extra, os.path.join(bundle_dir, extra)))
    names = [f.rel for f in files]
    if any(n.startswith(RUNTIME_DIR + "/") or n == RUNTIME_DIR for n in names):
        raise BundleError("bundle {}: a file is named like the runtime directory {!r}".format(bundle_dir, RUNTIME_DIR))
    return Payload(bundle_dir=os.path.abspath(bundle_dir), manifest=manifest, files=tuple(files) + runtime_files())
