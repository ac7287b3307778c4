"""Fitted exit thresholds on the demo bundle (int8): accuracy kept, latency saved, budget honoured.

One run: convert the demo at int8, fit thresholds on the val split with --max-accuracy-drop 0.01,
then on the test split measure early exit against full depth with the latency protocol (interleaved,
batch 1), the fitted point's expected cost against the oracle's, and a latency budget of 60% of the
full-depth mean (budget and anytime modes). Goals: test accuracy within 1 point of full depth,
mean latency >= 2.5x lower, expected cost <= 1.3x the oracle's, >= 99% of budget calls and of anytime calls
within budget + 1 ms (anytime gives up on a stage in flight at the deadline).

    python benchmarks/bench_thresholds.py [--runs 400] [--calls 2000]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.bench.latency import Protocol, bench  # noqa: E402
from edgekit.convert import ConvertOptions, convert  # noqa: E402
from edgekit.data import load_data  # noqa: E402
from edgekit.models.demo import ASSET, CALIB_DIR  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402


def goal(ok):
    return "met" if ok else "NOT met"


def budget_calls(runner, x, budget, calls, anytime):
    within, exits = 0, []
    for i in range(calls):
        t0 = time.perf_counter()
        r = runner.run(x[i % len(x):i % len(x) + 1], budget_ms=budget, anytime=anytime)
        if (time.perf_counter() - t0) * 1000.0 <= budget + 1.0:
            within += 1
        exits.append(int(r.exits[0]))
    return within / float(calls), np.bincount(exits, minlength=runner.num_stages).tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    data = {s: os.path.join(CALIB_DIR, "digits_{}.npz".format(s)) for s in ("calib", "val", "test")}
    with tempfile.TemporaryDirectory() as tmp:
        res = convert(ConvertOptions(ASSET, "host-x86_64", data["calib"], tmp, precision="int8", max_drop=0.01,
                                     threshold_data=data["val"], holdout=data["test"]))
        fit = res.report["thresholds"]["fit"]
        runner = EarlyExitRunner(res.bundle_dir)
        test = load_data(data["test"])
        b = bench(runner, test.x, test.y, Protocol(runs=args.runs, warmup=50))
        budget = 0.6 * b["full_depth"]["latency_ms"]["mean"]
        within, exits = budget_calls(runner, test.x, budget, args.calls, anytime=False)
        within_any, exits_any = budget_calls(runner, test.x, budget, args.calls, anytime=True)
    ee, fd = b["early_exit"], b["full_depth"]
    drop = fd["accuracy"] - ee["accuracy"]
    ratio = fit["chosen_vs_oracle_cost"]
    print("demo int8, thresholds fitted on val (max drop 0.01, margin z=2), measured on test ({} samples)"
          .format(len(test)))
    print("thresholds {}  expected exits {}".format(
        ["{:.3f}".format(t) for t in fit["chosen"]["thresholds"]],
        ["{:.0%}".format(f) for f in fit["chosen"]["exit_fractions"]]))
    print("{:<12} {:>9} {:>9} {:>9} {:>9}  exits".format("mode", "accuracy", "mean ms", "p50 ms", "p99 ms"))
    for name, r in (("early exit", ee), ("full depth", fd)):
        lat = r["latency_ms"]
        print("{:<12} {:>9.2%} {:>9.4f} {:>9.4f} {:>9.4f}  {}".format(name, r["accuracy"], lat["mean"], lat["p50"],
                                                                   lat["p99"], r["exit_histogram"]))
    print("accuracy drop on test: {:.2f} points -> goal <= 1 point: {}".format(100 * drop, goal(drop <= 0.01)))
    print("speedup (full-depth mean / early-exit mean): {:.2f}x -> goal >= 2.5x: {}".format(
        b["speedup"], goal(b["speedup"] >= 2.5)))
    print("expected cost {:.4f} ms vs oracle {:.4f} ms: {:.2f}x -> goal <= 1.3x: {}".format(
        fit["chosen"]["cost_ms"], fit["oracle_cost_ms"], ratio, goal(ratio <= 1.3)))
    print("budget {:.4f} ms (60% of full depth), {} calls: {:.2%} within budget + 1 ms, exits {} -> goal >= 99%: {}"
          .format(budget, args.calls, within, exits, goal(within >= 0.99)))
    print("anytime, same budget: {:.2%} within budget + 1 ms, exits {} -> goal >= 99%: {}".format(
        within_any, exits_any, goal(within_any >= 0.99)))


if __name__ == "__main__":
    main()
