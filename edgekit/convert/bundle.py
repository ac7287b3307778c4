"""Write a bundle directory atomically: OUT/<target>/manifest.json + stage_<k>.tflite + report.json."""
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional

from edgekit.atomic import swap_in
from edgekit.errors import BundleError
from edgekit.manifest import MANIFEST_NAME, REPORT_NAME, Manifest


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
                 force: bool, finalize: Optional[Callable[[str], None]] = None) -> str:
    """Write everything into a temporary directory beside the destination, let `finalize` work on it
    (e.g. fit thresholds on the written stages), then rename it into place. A failure at any point
    leaves the previous bundle (if any) untouched."""
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
        if finalize is not None:
            finalize(tmp)
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
