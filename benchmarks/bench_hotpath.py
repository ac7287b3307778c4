"""EarlyExitRunner.run() against the raw interpreter calls it makes, batch 1, a sample that exits at stage 0.

raw: on the same interpreter, set the input, invoke stage 0, copy out its exit output (the interpreter wrapper's
own calls, no edgekit code). run(): the whole runtime call, every check included. The two are called in turn,
each timed alone, so a busy machine slows both alike; medians are printed with their difference.
Goal: run() adds at most 10 us over raw.

    python benchmarks/bench_hotpath.py [--bundle DIR] [--runs 20000]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.data import load_data  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402

GOAL_US = 10.0
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")


def demo_bundle(tmp: str) -> str:
    from edgekit.convert import ConvertOptions, convert
    from edgekit.models.demo import CALIB_DIR

    demo = os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras")
    calib = os.path.join(CALIB_DIR, "digits_calib.npz")
    return convert(ConvertOptions(demo, "host-x86_64", calib, tmp, precision="int8")).bundle_dir


def stage0_sample(runner: EarlyExitRunner, x: np.ndarray) -> np.ndarray:
    for i in range(len(x)):
        if int(runner.run(x[i:i + 1]).exits[0]) == 0:
            return np.ascontiguousarray(x[i:i + 1], dtype=np.float32)
    raise SystemExit("no test sample exits at stage 0 with this bundle's thresholds")


def measure(runner: EarlyExitRunner, x: np.ndarray, runs: int, warmup: int = 500):
    call = runner._steps[0].call
    w, sub, inp = call._wrapper, call._subgraph, call._in[0]
    out = call.indices([runner.manifest.stages[0].exit.name])[0]
    if w is None:
        raise SystemExit("backend {} has no interpreter wrapper to call directly".format(runner.backend.name))
    clock = time.perf_counter
    raw, full = [], []
    for r in range(warmup + runs):
        t0 = clock()
        w.SetTensor(inp, x, sub)
        w.Invoke(sub)
        w.GetTensor(out, sub)
        t1 = clock()
        res = runner.run(x)
        t2 = clock()
        if r >= warmup:
            raw.append(t1 - t0)
            full.append(t2 - t1)
        if r == 0 and int(res.exits[0]) != 0:
            raise SystemExit("the sample did not exit at stage 0")
    return np.median(raw) * 1e6, np.median(full) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle directory (default: convert the demo at int8)")
    ap.add_argument("--runs", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runner = EarlyExitRunner(args.bundle or demo_bundle(tmp))
        x = stage0_sample(runner, load_data(TEST).x)
        raw, full = measure(runner, x, args.runs)
    print("batch 1, exit at stage 0, {} calls each, interleaved, {} ({}), {} thread(s)".format(
        args.runs, runner.backend.name, runner.backend.version, runner.num_threads))
    print("raw interpreter calls (set input, invoke, read exit): median {:.1f} us".format(raw))
    print("EarlyExitRunner.run():                                median {:.1f} us".format(full))
    over = full - raw
    print("goal: run() adds <= {:.0f} us over raw: {} ({:.1f} us)".format(GOAL_US, "met" if over <= GOAL_US
                                                                          else "NOT met", over))


if __name__ == "__main__":
    main()
