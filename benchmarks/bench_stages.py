"""Each int8 stage of the demo against its float32 twin, with the per-op table that shows where time goes.

Converts the demo (edgekit/assets/demo_digits.keras, 3 exits) for this machine (host-x86_64) at int8 and at
float32, then times the stages call by call (batch 1, 1 thread, a test image fed through the stages before it),
two ways in one run:
- twin against twin: for each stage, its int8 and float32 builds alternate in a new random order each round and
  nothing else runs between them, so both see the same machine and the same caches;
- in a pipeline: every stage of both bundles once per round, all in a new random order, so a stage often runs
  right after another (often float32's large last stage) on cold caches, as stage 0 does after a deep sample.
Then the per-op tables (edgekit/bench/ops.py: each op cut out and timed alone) of both bundles.
Goal: every int8 stage no slower than its float32 twin (twin against twin); the pipeline ratios print beside it.

    python benchmarks/bench_stages.py [--rounds 3000] [--int8 DIR --float32 DIR]
"""
import argparse
import os
import random
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.bench.ops import ops_table, profile_ops  # noqa: E402
from edgekit.data import load_data  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402

CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")
DEMO = os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras")


def convert(precision, tmp):
    from edgekit.convert import ConvertOptions, convert as run

    return run(ConvertOptions(DEMO, "host-x86_64", CALIB, os.path.join(tmp, precision), precision=precision)).bundle_dir


def stage_feeds(runner, x):
    """Per stage, its input values for sample x (batch 1)."""
    values, feeds = [runner.prepare(x)], []
    for k, step in enumerate(runner._steps):
        feeds.append(values)
        res, _ = runner.invoke_stage(k, values, step.fetch)
        values = res[:step.carried]
    return feeds


def shuffled_medians(calls, rounds, warmup=300):
    """Median ms of each (call, feed, fetch), all called once each round, in a new (seeded) random order."""
    times = [[] for _ in calls]
    clock = time.perf_counter
    rng, order = random.Random(0), list(range(len(calls)))
    for i in range(warmup + rounds):
        rng.shuffle(order)
        for j in order:
            call, feed, fetch = calls[j]
            t0 = clock()
            call.invoke(feed, fetch)
            if i >= warmup:
                times[j].append(clock() - t0)
    return [float(np.median(t)) * 1000.0 for t in times]


def stage_calls(runner, x):
    return [(runner._steps[k].call, f, runner._steps[k].fetch) for k, f in enumerate(stage_feeds(runner, x))]


def pipeline_medians(i8, f32, x, rounds):
    """Per stage (int8 ms, float32 ms) with every stage of both bundles shuffled together each round."""
    n = len(i8._steps)
    med = shuffled_medians(stage_calls(i8, x) + stage_calls(f32, x), rounds)
    return list(zip(med[:n], med[n:]))


def twin_medians(i8, f32, x, rounds):
    """Per stage (int8 ms, float32 ms) with only that stage's two builds shuffled together each round."""
    return [tuple(shuffled_medians([a, b], rounds)) for a, b in zip(stage_calls(i8, x), stage_calls(f32, x))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--int8", default=None, help="an int8 demo bundle (default: convert one)")
    ap.add_argument("--float32", default=None, help="a float32 demo bundle (default: convert one)")
    args = ap.parse_args()
    x = load_data(TEST).x[:1].astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        i8 = EarlyExitRunner(args.int8 or convert("int8", tmp))
        f32 = EarlyExitRunner(args.float32 or convert("float32", tmp))
        twins = twin_medians(i8, f32, x, args.rounds)
        pipeline = pipeline_medians(i8, f32, x, args.rounds)
        tables = [ops_table(profile_ops(r, x)) for r in (i8, f32)]
    print("demo stages on this machine ({} {}), batch 1, 1 thread, {} rounds each, medians".format(
        i8.backend.name, i8.backend.version, args.rounds))
    print("{:>14} | {:^26} | {:^26}".format("", "twin against twin", "in a pipeline (all shuffled)"))
    print("{:>5} {:>8} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}".format(
        "stage", "MFLOPs", "int8 ms", "f32 ms", "ratio", "int8 ms", "f32 ms", "ratio"))
    for k, st in enumerate(i8.manifest.stages):
        (a, b), (c, d) = twins[k], pipeline[k]
        print("{:>5} {:>8.1f} | {:>9.4f} {:>9.4f} {:>6.2f} | {:>9.4f} {:>9.4f} {:>6.2f}".format(
            k, st.flops / 1e6, a, b, a / b, c, d, c / d))
    print()
    for t in tables:
        print(t)
        print()
    worst = max(a / b for a, b in twins)
    print("goal: every int8 stage no slower than its float32 twin (twin against twin): {} (worst int8/float32 "
          "{:.2f}; in a pipeline {:.2f})".format("met" if worst <= 1.0 else "NOT met", worst,
                                                 max(a / b for a, b in pipeline)))


if __name__ == "__main__":
    main()
