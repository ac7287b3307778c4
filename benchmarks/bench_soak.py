"""Soak and concurrency: 100,000 inferences on the demo bundle (resident memory growth) and one runner used from
4 threads against serial use (identical results).

Converts the demo model once (int8, host-x86_64; or --bundle DIR), warms up (500 calls at batch 1 and 20 at
batch 64, not counted), then runs the counted inferences, cycling through the 360 digits test samples:
    default: 10,000 calls at batch 1 (10,000 inferences) + 1,125 calls at batch 80 (90,000 inferences)
    --full:  100,000 calls at batch 1
Resident memory (VmRSS from /proc/self/status, after gc.collect()) is read after the warm-up, every ~5% of the
run, and at the end; growth = end - after warm-up. Goal (issue 11): < 5 MB.
Concurrency: the test samples in 47 batches of random sizes 1..16 (seeded), run by one thread, then by 4 threads at once, each
thread running every batch in its own order (early exit, full depth and given thresholds alternate): outputs,
exits and scores must be bit-identical to the serial run.

    python benchmarks/bench_soak.py [--full] [--bundle DIR] [--json OUT]
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.data import load_data  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402

GOAL_MB = 5.0
THREADS = 4


def rss_mb():
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def soak(runner, x, plan):
    """Run the plan [(calls, batch)], sampling RSS; returns (inferences, seconds, samples [(done, MB)], exits)."""
    n = len(x)
    total_calls = sum(c for c, _ in plan)
    every = max(1, total_calls // 20)
    samples, done, calls, pos = [(0, rss_mb())], 0, 0, 0
    hist = np.zeros(runner.num_stages, dtype=np.int64)
    t0 = time.perf_counter()
    for count, batch in plan:
        for _ in range(count):
            idx = (np.arange(batch) + pos) % n
            pos = (pos + batch) % n
            r = runner.run(x[idx])
            hist += np.bincount(r.exits, minlength=runner.num_stages)
            done += batch
            calls += 1
            if calls % every == 0:
                samples.append((done, rss_mb()))
    seconds = time.perf_counter() - t0
    samples.append((done, rss_mb()))
    return done, seconds, samples, hist


def batches_of(n, seed=0):
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n:
        size = int(rng.integers(1, 17))
        out.append((start, min(n, start + size)))
        start += size
    return out


def call(runner, x, k):
    mode = k % 3
    if mode == 0:
        r = runner.run(x)
    elif mode == 1:
        r = runner.run(x, full_depth=True)
    else:
        r = runner.run(x, thresholds=[0.5, 0.7])
    return r.outputs.copy(), r.exits.copy(), r.scores.copy()


def concurrency(runner, x):
    spans = batches_of(len(x))
    t0 = time.perf_counter()
    serial = [call(runner, x[a:b], k) for k, (a, b) in enumerate(spans)]
    serial_s = time.perf_counter() - t0
    results = [dict() for _ in range(THREADS)]
    errors = []
    barrier = threading.Barrier(THREADS)

    def work(t):
        order = np.random.default_rng(100 + t).permutation(len(spans))
        barrier.wait()
        try:
            for k in order:
                a, b = spans[k]
                results[t][int(k)] = call(runner, x[a:b], int(k))
        except Exception as exc:  # noqa: BLE001 - reported below, the benchmark goes on
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    threaded_s = time.perf_counter() - t0
    mismatches = 0
    for t in range(THREADS):
        for k, ref in enumerate(serial):
            got = results[t].get(k)
            if got is None or not all(np.array_equal(g, r) for g, r in zip(got, ref)):
                mismatches += 1
    return {"batches": len(spans), "samples": len(x), "threads": THREADS, "errors": errors,
            "mismatched_batches": mismatches, "identical": mismatches == 0 and not errors,
            "serial_s": serial_s, "threaded_s": threaded_s,
            "threaded_work_vs_serial": THREADS * serial_s / threaded_s if threaded_s > 0 else float("nan")}


def make_bundle(tmp):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.models.demo import ASSET, CALIB_DIR

    calib = os.path.join(CALIB_DIR, "digits_calib.npz")
    return convert(ConvertOptions(ASSET, "host-x86_64", calib, tmp, precision="int8")).bundle_dir


def slope_mb_per_10k(samples):
    done = np.array([s[0] for s in samples[1:]], dtype=np.float64)
    mb = np.array([s[1] for s in samples[1:]], dtype=np.float64)
    if len(done) < 3 or np.ptp(done) == 0:
        return float("nan")
    return float(np.polyfit(done, mb, 1)[0] * 10000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="100,000 calls at batch 1 instead of the batched mix")
    ap.add_argument("--bundle", default=None, help="use this bundle instead of converting the demo")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    plan = [(100000, 1)] if args.full else [(10000, 1), (1125, 80)]
    test = load_data(os.path.join(ROOT, "calibration", "digits_test.npz")).x.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bundle = args.bundle or make_bundle(tmp)
        convert_s = time.perf_counter() - t0
        runner = EarlyExitRunner(bundle, num_threads=1)
        soak(runner, test, [(500, 1), (20, 64)])                     # warm-up, not counted
        inferences, seconds, samples, hist = soak(runner, test, plan)
        conc = concurrency(runner, test)
    base, end, peak = samples[0][1], samples[-1][1], max(s[1] for s in samples)
    out = {"plan": [{"calls": c, "batch": b} for c, b in plan], "inferences": inferences, "seconds": seconds,
           "convert_s": convert_s, "rss_after_warmup_mb": base, "rss_end_mb": end, "rss_peak_mb": peak,
           "growth_mb": end - base, "peak_growth_mb": peak - base, "slope_mb_per_10k": slope_mb_per_10k(samples),
           "exit_histogram": hist.tolist(), "rss_samples": samples, "concurrency": conc}
    report(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def report(o):
    plan = " + ".join("{:,} calls at batch {}".format(p["calls"], p["batch"]) for p in o["plan"])
    c = o["concurrency"]
    print("soak: {:,} inferences on the demo bundle (int8, 3 stages, early exit): {}".format(o["inferences"], plan))
    print("{:<40} {:>12}".format("measure", "value"))
    rows = [("wall time of the counted run (s)", "{:.1f}".format(o["seconds"])),
            ("inferences per second", "{:.0f}".format(o["inferences"] / o["seconds"])),
            ("exit histogram", str(o["exit_histogram"])),
            ("RSS after warm-up (MB)", "{:.1f}".format(o["rss_after_warmup_mb"])),
            ("RSS at the end (MB)", "{:.1f}".format(o["rss_end_mb"])),
            ("RSS growth, end - warm-up (MB)", "{:+.2f}".format(o["growth_mb"])),
            ("RSS peak growth (MB)", "{:+.2f}".format(o["peak_growth_mb"])),
            ("RSS trend (MB per 10k inferences)", "{:+.3f}".format(o["slope_mb_per_10k"])),
            ("4 threads vs serial: batches compared", "{} x {}".format(c["batches"], c["threads"])),
            ("4 threads vs serial: mismatched batches", str(c["mismatched_batches"])),
            ("4 threads: total work / serial time", "{:.2f}x".format(c["threaded_work_vs_serial"]))]
    for name, value in rows:
        print("{:<40} {:>12}".format(name, value))
    if c["errors"]:
        print("thread errors: " + "; ".join(c["errors"][:3]))
    print("goal resident memory growth < {:.0f} MB over {:,} inferences: {} ({:+.2f} MB)".format(
        GOAL_MB, o["inferences"], "met" if o["growth_mb"] < GOAL_MB else "NOT met", o["growth_mb"]))
    print("goal {} threads give the same results as serial use: {}".format(
        c["threads"], "met" if c["identical"] else "NOT met"))


if __name__ == "__main__":
    sys.exit(main())
