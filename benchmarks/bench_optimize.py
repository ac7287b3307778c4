"""`edgekit optimize` end to end on the demo and on the plain digits CNN, with the budget the goal names.

Per model, in one run on this machine:
1. uniform int8 at full depth (`edgekit convert --precision int8`; the plain model with one exit, auto:1, since
   a bundle is cut at its exits) timed by an independent `edgekit bench` on the test split: the budget is 50% of
   its full-depth mean;
2. `edgekit optimize MODEL --calib digits_calib --eval digits_val --max-accuracy-drop 0.01 --latency-ms 50%`
   with an empty cache (50% of uniform int8 at full depth as the optimizer times it together with the candidates,
   since on a shared machine the load moves between separate runs): wall time and load average;
3. the same arguments again (another -o, since OUT is never overwritten): wall time, conversions run;
4. the best point of each technique alone (exits only, pruning only, precision only) and the chosen one, as the
   optimizer timed them end to end together (interleaved), from report.json;
5. an independent `edgekit bench` of the chosen bundle on the test split, interleaved with nothing else, right
   after another `edgekit bench` of the baseline: its early-exit mean against the budget, its test accuracy
   against the model's own (float, full depth).
Goals: optimize <= 15 min; chosen meets the budget and loses <= 1 point on test; chosen at least as fast as each
technique alone; the second run under a quarter of the first's time.

    python benchmarks/bench_optimize.py [--models demo,plain] [--runs 300]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")
CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
VAL = os.path.join(ROOT, "calibration", "digits_val.npz")
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")
MODELS = {"demo": (os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras"), []),
          "plain": (os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras"), ["--exits", "auto:1"])}
TARGET = "host-x86_64"


def goal(ok):
    return "met" if ok else "NOT met"


def edgekit(*args, may_fail=False):
    t0 = time.monotonic()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    got = subprocess.run([EDGEKIT] + [str(a) for a in args], capture_output=True, text=True, env=env)
    if got.returncode != 0 and not may_fail:
        sys.exit("edgekit {} failed ({}): {}".format(args[0], got.returncode, got.stderr[-2000:]))
    return got, time.monotonic() - t0


def bench(bundle, runs):
    got, _ = edgekit("bench", bundle, "--data", TEST, "--runs", runs, "--json")
    return json.loads(got.stdout)


def float_accuracy(model_path):
    from edgekit.convert.load import load_model
    from edgekit.data import load_data

    ds = load_data(TEST)
    out = load_model(model_path).predict(ds.x.astype(np.float32), verbose=0, batch_size=128)
    last = np.asarray(out[-1] if isinstance(out, (list, tuple)) else out)
    return float(np.mean(np.argmax(last.reshape(len(last), -1), -1) == ds.y))


def optimize(model, budget, out, cache):
    load = os.getloadavg()
    got, seconds = edgekit("optimize", model, "--target", TARGET, "--calib", CALIB, "--eval", VAL,
                           "--max-accuracy-drop", "0.01", "--latency-ms", budget, "-o", out,
                           "--cache", cache, "--json", may_fail=True)
    if got.returncode != 0:
        print("optimize failed after {:.1f} s (load average {:.2f} at start): {}".format(
            seconds, load[0], got.stderr.strip().splitlines()[-1]), flush=True)
        return None, seconds, load, os.getloadavg()
    return json.loads(got.stdout), seconds, load, os.getloadavg()


def row(name, p):
    if p is None:
        return "  {:<16} none within the accuracy constraint".format(name)
    return "  {:<16} {:.4f} ms ({})  eval accuracy {:.2%}  {}".format(name, p["latency_ms"], p["latency_from"],
                                                                     p["accuracy"], p["name"])


def one(name, work, runs):
    model, base_args = MODELS[name]
    print("== {} ({})".format(name, os.path.relpath(model, ROOT)), flush=True)
    base_out = os.path.join(work, name + "-int8")
    edgekit("convert", model, "--target", TARGET, "--calib", CALIB, "--precision", "int8", "-o", base_out,
            *base_args)
    base_bundle = os.path.join(base_out, TARGET)
    base_ms = bench(base_bundle, runs)["full_depth"]["latency_ms"]["mean"]
    budget = 0.5 * base_ms
    print("uniform int8 full depth (edgekit bench, test split): {:.4f} ms; budget 50%: {:.4f} ms".format(
        base_ms, budget), flush=True)
    cache = os.path.join(work, name + "-cache")
    first, t1, load1, load1_end = optimize(model, "50%", os.path.join(work, name + "-out1"), cache)
    if first is None:
        print("goal optimize finds a bundle within the budget: NOT met")
        return
    print("optimize run 1: {:.1f} s ({:.1f} min), {} conversions; load average {:.2f} at start, {:.2f} at end "
          "(2 cores)".format(t1, t1 / 60, first["search"]["conversions_run"], load1[0], load1_end[0]), flush=True)
    second, t2, load2, _ = optimize(model, "50%", os.path.join(work, name + "-out2"), cache)
    print("optimize run 2 (same arguments, new -o): {:.1f} s, {} conversions, {} cache hits; run2/run1 = {:.3f}; "
          "load average {:.2f}".format(t2, second["search"]["conversions_run"], second["search"]["cache_hits"],
                                        t2 / t1, load2[0]), flush=True)
    chosen = first["chosen"]
    singles = first["best_single_technique"]
    print("end to end on --eval (digits_val), timed together by the optimizer:")
    print(row("chosen", chosen))
    for t in ("exits", "pruning", "precision"):
        print(row(t + " only", singles.get(t)))
    base_pt = first["baseline_full_depth"]
    print(row("int8 full depth", base_pt))
    print("chosen / uniform int8 full depth, timed together: {:.3f} (goal <= 0.5: {})".format(
        chosen["latency_ms"] / base_pt["latency_ms"], goal(chosen["latency_ms"] <= 0.5 * base_pt["latency_ms"])))
    base_again = bench(base_bundle, runs)["full_depth"]["latency_ms"]["mean"]
    got = bench(os.path.join(work, name + "-out1", TARGET), runs)
    ee = got["early_exit"]
    ref = float_accuracy(model)
    print("  that bench's own interleaved ratio, chosen early exit / its full depth: {:.3f} ({:.4f} / {:.4f} ms)".format(
        1.0 / got["speedup"], ee["latency_ms"]["mean"], got["full_depth"]["latency_ms"]["mean"]))
    print("independent edgekit bench (test split, {} runs): chosen early-exit mean {:.4f} ms (budget {:.4f}); "
          "baseline again {:.4f} ms; test accuracy {:.2%}, model's own {:.2%}".format(
              runs, ee["latency_ms"]["mean"], budget, base_again, ee["accuracy"], ref))
    fastest = all(s is None or chosen["latency_ms"] <= s["latency_ms"] + 1e-12 for s in singles.values())
    print("goal optimize <= 15 min: {}".format(goal(t1 <= 900)))
    print("goal chosen within the budget in edgekit bench: {} against 50% of the baseline's bench before the "
          "search ({:.4f} ms); {} against 50% of its bench right before the chosen's ({:.4f} ms)".format(
              goal(ee["latency_ms"]["mean"] <= budget), budget, goal(ee["latency_ms"]["mean"] <= 0.5 * base_again),
              0.5 * base_again))
    print("goal chosen loses <= 1 point on test: {} ({:+.2f} points)".format(
        goal(ee["accuracy"] >= ref - 0.01 - 1e-9), 100 * (ee["accuracy"] - ref)))
    print("goal chosen at least as fast as each technique alone: {}".format(goal(fastest)))
    print("goal second run < 1/4 of the first: {} ({:.3f})".format(goal(t2 < t1 / 4), t2 / t1), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,plain")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--work", default=None, help="keep bundles, caches and reports here (must not exist)")
    args = ap.parse_args()
    print("machine: {} cores, load average {:.2f} {:.2f} {:.2f} at the start".format(os.cpu_count(),
                                                                                   *os.getloadavg()))
    if args.work:
        os.makedirs(args.work, exist_ok=False)
        for name in args.models.split(","):
            one(name, args.work, args.runs)
        return
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as work:
        for name in args.models.split(","):
            one(name, work, args.runs)


if __name__ == "__main__":
    main()
