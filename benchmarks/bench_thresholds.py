"""Early exit under the options a user types first: thresholds, speed-up, budget mode and threads, in one run.

1. The int8 demo converted for host-x86_64 with `--max-accuracy-drop 0.01` and no threshold data (thresholds
   fitted on the held-out part of the calibration split): accuracy on the test split against full depth, and
   early exit against full depth at batch 1 with the latency protocol (interleaved), next to the oracle's bound
   (every test sample leaving at its first right exit, at the per-stage means of the same run).
2. The fitted point's expected cost against the oracle's; a budget of 60% of full depth (budget and anytime).
3. A budget at the full-depth p50: accuracy against the unbudgeted run, and how many samples it stopped.
4. A raspberry-pi-5 bundle (profile: 4 threads) run here with default options against each thread count from 1
   to this machine's cores, all interleaved call by call under the shared cost protocol.
Goals: (1) test accuracy within 1 point, speed-up >= 3.0x; (2) <= 1.3x the oracle's cost, >= 99% of budget calls
and of anytime calls within budget + 1 ms (anytime gives up on a stage in flight at the deadline); (3) within 1
point; (4) default within 1.1x of the best thread count.

    python benchmarks/bench_thresholds.py [--runs 400] [--calls 2000] [--model edgekit/assets/demo_digits.keras]
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
from edgekit.runtime import EarlyExitRunner, evaluate  # noqa: E402
from edgekit.runtime.cost_protocol import CostProtocol, measure_candidates, thread_candidates  # noqa: E402


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


def oracle_speedup(runner, test, stage_ms):
    """Full-depth cost over the cost of leaving every sample at its first right exit (per-stage means)."""
    from edgekit.runtime.runner import exit_outputs

    right = np.stack([np.argmax(o, -1) == test.y for o, _ in exit_outputs(runner, test.x)])
    first = np.where(right.any(axis=0), right.argmax(axis=0), right.shape[0] - 1)
    cum = np.cumsum(stage_ms)
    return cum[-1] / float(cum[first].mean())


def thresholds_part(args, data, tmp):
    res = convert(ConvertOptions(args.model, "host-x86_64", data["calib"], tmp, precision="int8", max_drop=0.01,
                                 holdout=data["test"]))
    th = res.report["thresholds"]
    fit = th["fit"]
    runner = EarlyExitRunner(res.bundle_dir)
    test = load_data(data["test"])
    b = bench(runner, test.x, test.y, Protocol(runs=args.runs, warmup=50))
    ee, fd = b["early_exit"], b["full_depth"]
    drop = fd["accuracy"] - ee["accuracy"]
    print("1. demo int8 (host-x86_64), --max-accuracy-drop 0.01, no threshold data: thresholds fitted on {}"
          .format(th["fingerprint"]["described"]))
    print("   thresholds {}  expected accuracy there {:.2%}  warnings {}".format(
        ["{:.3f}".format(t) for t in fit["chosen"]["thresholds"]], fit["chosen"]["accuracy"], th["warnings"] or "none"))
    print("   {:<12} {:>9} {:>9} {:>9} {:>9}  exits".format("mode", "accuracy", "mean ms", "p50 ms", "p99 ms"))
    for name, r in (("early exit", ee), ("full depth", fd)):
        lat = r["latency_ms"]
        print("   {:<12} {:>9.2%} {:>9.4f} {:>9.4f} {:>9.4f}  {}".format(name, r["accuracy"], lat["mean"], lat["p50"],
                                                                      lat["p99"], r["exit_histogram"]))
    bound = oracle_speedup(runner, test, fd["stage_mean_ms"])
    print("goal test accuracy within 1 point of full depth, no threshold data: drop {:.2f} points -> {}".format(
        100 * drop, goal(drop <= 0.01)))
    stage_means = ["{:.4f}".format(m) for m in fd["stage_mean_ms"]]
    medians = fd["latency_ms"]["p50"] / ee["latency_ms"]["p50"]
    print("goal early exit >= 3.0x faster than full depth (means, batch 1): {:.2f}x (oracle bound {:.2f}x at per-stage "
          "means {}; medians {:.2f}x) -> {}".format(b["speedup"], bound, stage_means, medians,
                                                    goal(b["speedup"] >= 3.0)))
    ratio = fit["chosen_vs_oracle_cost"]
    print("goal expected cost <= 1.3x the oracle's: {:.4f} ms vs {:.4f} ms, {:.2f}x -> {}".format(
        fit["chosen"]["cost_ms"], fit["oracle_cost_ms"], ratio, goal(ratio <= 1.3)))
    budget = 0.6 * fd["latency_ms"]["mean"]
    within, exits = budget_calls(runner, test.x, budget, args.calls, anytime=False)
    within_any, exits_any = budget_calls(runner, test.x, budget, args.calls, anytime=True)
    print("goal >= 99% of calls within budget + 1 ms, budget {:.4f} ms (60% of the full-depth mean), {} calls: {:.2%}, "
          "exits {} -> {}".format(budget, args.calls, within, exits, goal(within >= 0.99)))
    print("goal >= 99% of anytime calls within budget + 1 ms, same budget: {:.2%}, exits {} -> {}".format(
        within_any, exits_any, goal(within_any >= 0.99)))
    p50 = fd["latency_ms"]["p50"]
    plain = evaluate(runner, test.x, test.y)
    at = evaluate(runner, test.x, test.y, budget_ms=p50)
    lost = plain["accuracy"] - at["accuracy"]
    print("   the bundle's stage costs (measured at conversion): {}".format(
        ["{:.4f}".format(s.latency_ms) for s in runner.manifest.stages]))
    print("goal budget at the full-depth p50 ({:.4f} ms) within 1 point of unbudgeted: {:.2%} vs {:.2%}, exits {} vs "
          "{}, the budget stopped {} of {} samples -> {}".format(
              p50, at["accuracy"], plain["accuracy"], at["exit_histogram"], plain["exit_histogram"],
              at["budget_stopped"], len(test), goal(lost <= 0.01)))


def threads_part(args, data, tmp):
    res = convert(ConvertOptions(args.model, "raspberry-pi-5", data["calib"], tmp, precision="int8"))
    x = load_data(data["test"]).x
    rt = res.manifest.extra["runtime"]
    runners = {"default": EarlyExitRunner(res.bundle_dir)}
    for t in thread_candidates(rt["num_threads"], os.cpu_count()):
        runners["{} thread(s)".format(t)] = EarlyExitRunner(res.bundle_dir, num_threads=t)
    sample = x[:1]
    calls = {name: (lambda r=r: r.run(sample, full_depth=True)) for name, r in runners.items()}
    costs = measure_candidates(calls, CostProtocol(warmup=20, min_rounds=100, max_rounds=1000, max_seconds=30.0))
    best = min(c.median_ms for k, c in costs.items() if k != "default")
    ratio = costs["default"].median_ms / best
    print("4. raspberry-pi-5 int8 bundle here (profile num_threads {}, stage_threads from conversion {}, default "
          "runner uses {}), full depth, batch 1, median ms [p10-p90]:".format(
              rt["num_threads"], rt["stage_threads"], runners["default"].stage_threads))
    for name, c in costs.items():
        print("   {:<12} {:.4f} [{:.4f}-{:.4f}] ({} calls)".format(name, c.median_ms, c.p10_ms, c.p90_ms, c.calls))
    print("goal raspberry-pi-5 bundle with default options within 1.1x of its best thread count: {:.2f}x -> {}".format(
        ratio, goal(ratio <= 1.1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--model", default=ASSET, help="a three-exit model like the demo (default: the shipped demo)")
    args = ap.parse_args()
    data = {s: os.path.join(CALIB_DIR, "digits_{}.npz".format(s)) for s in ("calib", "test")}
    print("machine: {} cores, load average {} (ratios measured within this run)".format(
        os.cpu_count(), " ".join("{:.1f}".format(v) for v in os.getloadavg())))
    with tempfile.TemporaryDirectory() as tmp:
        thresholds_part(args, data, os.path.join(tmp, "a"))
        threads_part(args, data, os.path.join(tmp, "b"))


if __name__ == "__main__":
    main()
