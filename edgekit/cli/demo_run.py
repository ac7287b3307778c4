"""`edgekit demo`: convert the shipped demo model with thresholds fitted on the held-out part of the calibration
split (at most one point of accuracy lost; the model never trained on it), then run the digits test split and time
early exit against full depth."""
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional

from edgekit.bench.latency import Protocol, bench
from edgekit.data import load_data
from edgekit.errors import ConfigError
from edgekit.models.demo import ASSET, CALIB_DIR
from edgekit.runtime import EarlyExitRunner

MAX_DROP = 0.01


def _check_checkout() -> None:
    """The demo model and the digits splits are read in place from a source checkout; an installed wheel
    does not carry them (a board install stays small)."""
    for path in (ASSET, CALIB_DIR):
        if not os.path.exists(path):
            raise ConfigError("the demo needs a source checkout of edgekit: {} is missing (installed packages carry "
                              "no demo models or data); clone the repository and run `make demo` there".format(path))


def run_demo(target: str, out_dir: Optional[str], runs: int,
             progress: Optional[Callable[[int, int, str], None]] = None) -> Dict[str, Any]:
    _check_checkout()
    from edgekit.convert import ConvertOptions, convert

    keep = out_dir is not None
    work = out_dir if keep else tempfile.mkdtemp(prefix="edgekit-demo-")
    try:
        split = {s: os.path.join(CALIB_DIR, "digits_{}.npz".format(s)) for s in ("calib", "test")}
        res = convert(ConvertOptions(ASSET, target, split["calib"], work, force=keep, max_drop=MAX_DROP),
                      progress=progress)
        test = load_data(split["test"])
        if progress is not None:
            progress(0, 0, "bench: early exit and full depth on the test split, {} calls each".format(runs))
        b = bench(EarlyExitRunner(res.bundle_dir), test.x, test.y, Protocol(runs=runs, warmup=20))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "target": target, "precision": res.report["precision"], "bundle_dir": res.bundle_dir if keep else "(removed)",
        "bundle_size_bytes": res.report["bundle_size_bytes"],
        "accuracy_early_exit": b["early_exit"]["accuracy"], "accuracy_full_depth": b["full_depth"]["accuracy"],
        "mean_ms_early_exit": b["early_exit"]["latency_ms"]["mean"],
        "mean_ms_full_depth": b["full_depth"]["latency_ms"]["mean"], "speedup": b["speedup"],
        "exit_histogram": b["early_exit"]["exit_histogram"], "thresholds": b["thresholds"][:-1],
    }
