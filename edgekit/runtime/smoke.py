"""On the board: python -m edgekit.runtime.smoke BUNDLE DATA [--json] [--max-samples N]

The smoke test of a canary rollout (`edgekit flash --canary`): run the release on a small data file one sample
at a time, as a deployed model is called, and report accuracy (with labels) and per-call latency. The laptop
compares them with the rollout's bounds; this side only measures. Exit code 2 with one line on bad input.
"""
import argparse
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from edgekit.data import load_data
from edgekit.errors import ConfigError
from edgekit.runtime.entry import finish
from edgekit.runtime.runner import EarlyExitRunner

DEFAULT_MAX_SAMPLES = 64
WARMUP_CALLS = 2


def smoke(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray]) -> Dict[str, Any]:
    """Accuracy and per-call latency over x, one sample per call after a short warm-up."""
    for i in range(min(WARMUP_CALLS, len(x))):
        runner.run(x[i:i + 1])
    preds, exits, times = [], [], []
    for i in range(len(x)):
        t0 = time.perf_counter()
        r = runner.run(x[i:i + 1])
        times.append((time.perf_counter() - t0) * 1000.0)
        preds.append(int(r.predictions[0]))
        exits.append(int(r.exits[0]))
    ms = np.asarray(times)
    acc = None if y is None else float(np.mean(np.asarray(preds) == np.asarray(y[:len(preds)])))
    return {"samples": len(preds), "accuracy": acc, "bundle_id": runner.manifest.bundle_id,
            "latency_ms": {"p50": float(np.median(ms)), "mean": float(ms.mean()), "max": float(ms.max())},
            "exit_histogram": np.bincount(np.asarray(exits), minlength=runner.num_stages).tolist()}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgekit.runtime.smoke", description=__doc__.splitlines()[2])
    ap.add_argument("bundle")
    ap.add_argument("data", help=".npz with x (and y for accuracy) or .npy")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES, help="samples used (default 64)")
    args = ap.parse_args(argv)

    def work() -> Dict[str, Any]:
        if args.max_samples < 1:
            raise ConfigError("--max-samples: expected at least 1, got {}".format(args.max_samples))
        data = load_data(args.data, limit=args.max_samples)
        return smoke(EarlyExitRunner(args.bundle), data.x[:args.max_samples],
                     None if data.y is None else data.y[:args.max_samples])

    return finish(work, args.json, _text)


def _text(result: Dict[str, Any]) -> str:
    acc = "n/a" if result["accuracy"] is None else "{:.4f}".format(result["accuracy"])
    return "samples {}  accuracy {}  p50 {:.3f} ms".format(result["samples"], acc, result["latency_ms"]["p50"])


if __name__ == "__main__":
    sys.exit(main())
