"""End-to-end timing of several bundles, interleaved under the cost protocol, in a process of its own.

`python -m edgekit.optimize.timing DATA BUNDLE [BUNDLE ...]` prints one JSON object: per bundle, the mean batch-1
latency per inference (ms) over every sample of DATA run through the runtime as `edgekit bench` runs it. A call is
one pass over the samples; the calls of all bundles are interleaved, the order rotating, until the medians settle.
It runs apart from the optimizer because a process that has run TensorFlow (conversion, head training) keeps
threads that slow every later interpreter call (measured here: 0.21 ms per sample in a fresh process, 0.38 ms in
the same process after a Keras predict). numpy and the runtime only.
"""
import json
import sys
from typing import Any, Dict, List, Optional

from edgekit.data import load_data
from edgekit.errors import EdgekitError
from edgekit.runtime.cost_protocol import CostProtocol, measure_candidates
from edgekit.runtime.runner import EarlyExitRunner

PROTOCOL = CostProtocol(warmup=1, chunk=5, min_rounds=10, max_rounds=200, max_seconds=30.0)


def time_bundles(bundles: List[str], data: str, protocol: Optional[CostProtocol] = None) -> Dict[str, Any]:
    x = load_data(data).x
    runners = [EarlyExitRunner(b) for b in bundles]

    def call(runner: EarlyExitRunner):
        def run_all() -> None:
            for i in range(len(x)):
                runner.run(x[i:i + 1])
        return run_all

    costs = measure_candidates({k: call(r) for k, r in enumerate(runners)}, protocol or PROTOCOL)
    return {"mean_ms": [costs[k].median_ms / len(x) for k in range(len(bundles))],
            "calls": [costs[k].calls for k in range(len(bundles))], "samples": len(x),
            "stable": [costs[k].stable for k in range(len(bundles))], "protocol": (protocol or PROTOCOL).to_dict()}


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m edgekit.optimize.timing DATA BUNDLE [BUNDLE ...]", file=sys.stderr)
        return 2
    try:
        print(json.dumps(time_bundles(args[1:], args[0])))
    except EdgekitError as exc:
        print("edgekit: error: {}".format(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
