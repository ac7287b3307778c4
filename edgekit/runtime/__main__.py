"""On the board: python -m edgekit.runtime BUNDLE DATA [--json] [--full-depth | --target-ms MS] [--interpreter NAME]

Prints the same JSON object as `edgekit run --json`; exit code 2 with one line on bad input.
--require-signature / --trusted-key PATH: refuse bundles not signed by a trusted key; the board's own setting
(EDGEKIT_TRUSTED_KEYS, the trusted_keys/ of the remote dirs flash recorded) applies in any case (device_keys.py).
"""
import argparse
import sys
from typing import Any, Dict, List, Optional

from edgekit.data import load_data
from edgekit.runtime.controller import controller_line
from edgekit.runtime.entry import finish
from edgekit.runtime.interpreter import BACKENDS
from edgekit.runtime.runner import EarlyExitRunner, evaluate


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgekit.runtime", description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("data", help=".npz with x (and optional y) or .npy")
    ap.add_argument("--full-depth", action="store_true", help="run every stage for every sample")
    ap.add_argument("--interpreter", choices=BACKENDS, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--require-signature", action="store_true", help="refuse bundles not signed by a trusted key")
    ap.add_argument("--trusted-key", action="append", default=None, metavar="PATH",
                    help="a trusted public key file or a directory of *.pub files (repeatable)")
    ap.add_argument("--max-batch", type=int, default=None, help="most samples per call (default: manifest, 1024)")
    ap.add_argument("--target-ms", type=float, default=None,
                    help="hold this mean latency per sample: a load controller moves the exit thresholds online")
    args = ap.parse_args(argv)

    def work() -> Dict[str, Any]:
        runner = EarlyExitRunner(args.bundle, backend=args.interpreter, num_threads=args.threads,
                                 trusted_keys=args.trusted_key, require_signature=args.require_signature,
                                 max_batch=args.max_batch)
        data = load_data(args.data, max_batch=runner.max_batch)
        result = evaluate(runner, data.x, data.y, full_depth=args.full_depth, target_ms=args.target_ms)
        result["interpreter"] = {"name": runner.backend.name, "version": runner.backend.version}
        result["delegates"] = runner.delegate_status
        return result

    return finish(work, args.json, _text)


def _text(result: Dict[str, Any]) -> str:
    acc = "n/a" if result["accuracy"] is None else "{:.4f}".format(result["accuracy"])
    lines = ["samples {}  accuracy {}  exits {}".format(len(result["exits"]), acc, result["exit_histogram"])]
    if "controller" in result:
        lines.append(controller_line(result["controller"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
