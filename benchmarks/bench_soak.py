"""Soak and concurrency: 100,000 inferences on the demo bundle (resident memory growth) and one runner used from
4 threads against serial use (identical results).

Converts the demo model once in a child process (int8, host-x86_64; or --bundle DIR), so that this process holds
only the runtime (no TensorFlow), as on a board. Warms up (500 calls at batch 1, 20 calls at each larger batch
size of the plan; not counted), then runs the counted inferences, cycling through the 360 digits test samples:
    default: 10,000 calls at batch 1 (10,000 inferences) + 1,125 calls at batch 80 (90,000 inferences)
    --full:  100,000 calls at batch 1
Resident memory (VmRSS from /proc/self/status, after gc.collect()) is read after the warm-up, every 5% of the
inferences and at the end; growth = end - after warm-up. Goal: < 5 MB.
Concurrency: the test samples in 47 batches of random sizes 1..16 (seeded), run by one thread, then by 4 threads
at once, each thread running every batch in its own order (early exit, full depth and given thresholds
alternate): outputs, exits and scores must be bit-identical to the serial run.

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
    every = max(1, sum(c * b for c, b in plan) // 20)        # a sample every 5% of the inferences
    samples, done, pos, next_sample = [(0, rss_mb())], 0, 0, every
    hist = np.zeros(runner.num_stages, dtype=np.int64)
    t0 = time.perf_counter()
    for count, batch in plan:
        for _ in range(count):
            idx = (np.arange(batch) + pos) % n
            pos = (pos + batch) % n
            r = runner.run(x[idx])
            hist += np.bincount(r.exits, minlength=runner.num_stages)
            done += batch
            if done >= next_sample:
                samples.append((done, rss_mb()))
                next_sample += every
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
    """Convert the demo in a child process (TensorFlow never enters this one); returns the bundle directory."""
    import subprocess

    code = ("import sys; sys.path.insert(0, {!r})\n"
            "from edgekit.convert import ConvertOptions, convert\n"
            "from edgekit.models.demo import ASSET, CALIB_DIR\n"
            "import os\n"
            "print(convert(ConvertOptions(ASSET, 'host-x86_64', os.path.join(CALIB_DIR, 'digits_calib.npz'), {!r}, "
            "precision='int8')).bundle_dir)\n").format(ROOT, tmp)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


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
        before = rss_mb()
        runner = EarlyExitRunner(bundle, num_threads=1)
        soak(runner, test, [(500, 1)] + [(20, b) for _, b in plan if b > 1])   # warm-up with the plan's batch sizes
        tf_loaded = "tensorflow" in sys.modules
        inferences, seconds, samples, hist = soak(runner, test, plan)
        conc = concurrency(runner, test)
    base, end, peak = samples[0][1], samples[-1][1], max(s[1] for s in samples)
    out = {"plan": [{"calls": c, "batch": b} for c, b in plan], "inferences": inferences, "seconds": seconds,
           "convert_s": convert_s, "tensorflow_in_process": tf_loaded, "rss_before_runner_mb": before,
           "rss_after_warmup_mb": base, "rss_end_mb": end, "rss_peak_mb": peak,
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
    print("(one process with the runtime only; TensorFlow imported: {})".format(o["tensorflow_in_process"]))
    print("{:<40} {:>12}".format("measure", "value"))
    rows = [("wall time of the counted run (s)", "{:.1f}".format(o["seconds"])),
            ("inferences per second", "{:.0f}".format(o["inferences"] / o["seconds"])),
            ("exit histogram", str(o["exit_histogram"])),
            ("RSS before the runner was built (MB)", "{:.1f}".format(o["rss_before_runner_mb"])),
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
