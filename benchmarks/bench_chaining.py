"""Stage chaining at full depth against one monolithic TFLite model of the same network.

Converts the demo model once whole and once split into stages, at float32 and int8, then times both at
batch 1 (and batch 16), interleaved call by call so that machine noise hits both alike. Prints the ratio
chained / monolithic of mean latency. Goal: at most 1.05 (running a bundle as stages must cost next to nothing over one model).

The chained side is the runtime itself (EarlyExitRunner.run at full depth: input checks, every stage, the
result). The monolithic model is called the cheapest way the runtime knows (runtime.interpreter.StageCall,
which skips the per-call resize of the interpreter's signature runner); the ratio against the signature
runner, what a plain TFLite script would call, is printed beside it.

    python benchmarks/bench_chaining.py [--calls 1000] [--json OUT]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.convert import ConvertOptions, convert  # noqa: E402
from edgekit.convert.load import load_model  # noqa: E402
from edgekit.convert.quantize import quantize_stage  # noqa: E402
from edgekit.data import load_data  # noqa: E402
from edgekit.models.demo import ASSET, CALIB_DIR  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402
from edgekit.runtime.interpreter import StageCall, load_backend  # noqa: E402


def time_pair(mono, chain, x, calls):
    """Interleaved timings (ms) of the monolithic call and the chained full-depth call. The order flips every
    call, so each side runs after itself as often as after the other (whose memory it then finds in cache)."""
    a, b = [], []
    for _ in range(max(20, calls // 20)):
        mono(x)
        chain(x)
    clock = time.perf_counter
    for i in range(calls):
        first, second = (mono, chain) if i % 2 == 0 else (chain, mono)
        for fn in (first, second):
            t0 = clock()
            fn(x)
            (a if fn is mono else b).append((clock() - t0) * 1000.0)
    return np.asarray(a), np.asarray(b)


def run(precision, calls, threads=1):
    calib = load_data(os.path.join(CALIB_DIR, "digits_calib.npz"))
    test = load_data(os.path.join(CALIB_DIR, "digits_test.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        res = convert(ConvertOptions(ASSET, "host-x86_64", calib.source, tmp, precision=precision))
        model = load_model(ASSET)
        blob = quantize_stage(model, precision, {"image": calib.x[:200]})
        interp = load_backend().interpreter(model_content=blob, num_threads=threads)
        sig = interp.get_signature_runner()
        lean = StageCall(sig)
        runner = EarlyExitRunner(res.bundle_dir, num_threads=threads)
        carried = sorted({t.dtype for st in runner.manifest.stages for t in st.carried})
        rows = []
        for batch in (1, 16):
            x = test.x[:batch]
            chain = lambda v: runner.run(v, full_depth=True)   # noqa: E731
            mono_ms, chain_ms = time_pair(lambda v: lean(image=v), chain, x, calls)
            sig_ms, chain2_ms = time_pair(lambda v: sig(image=v), chain, x, calls)
            rows.append({"precision": precision, "batch": batch, "threads": threads, "carried_dtypes": carried,
                         "monolithic_mean_ms": float(mono_ms.mean()), "chained_mean_ms": float(chain_ms.mean()),
                         "monolithic_p50_ms": float(np.median(mono_ms)), "chained_p50_ms": float(np.median(chain_ms)),
                         "monolithic_signature_runner_mean_ms": float(sig_ms.mean()),
                         "ratio_mean": float(chain_ms.mean() / mono_ms.mean()),
                         "ratio_p50": float(np.median(chain_ms) / np.median(mono_ms)),
                         "ratio_vs_signature_runner": float(chain2_ms.mean() / sig_ms.mean())})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for precision in ("float32", "int8"):
        rows.extend(run(precision, args.calls))
    print("stage chaining at full depth vs one monolithic model (demo, 3 stages, 1 thread, interleaved)")
    print("{:<9} {:>5} {:>8} {:>12} {:>12} {:>11} {:>10} {:>14}".format(
        "precision", "batch", "carried", "mono ms", "chained ms", "ratio mean", "ratio p50", "vs sig-runner"))
    for r in rows:
        print("{:<9} {:>5} {:>8} {:>12.4f} {:>12.4f} {:>11.3f} {:>10.3f} {:>14.3f}".format(
            r["precision"], r["batch"], "/".join(r["carried_dtypes"]), r["monolithic_mean_ms"], r["chained_mean_ms"],
            r["ratio_mean"], r["ratio_p50"], r["ratio_vs_signature_runner"]))
    for r in rows:
        print("goal chained/monolithic <= 1.05 ({}, batch {}): {} ({:.3f})".format(
            r["precision"], r["batch"], "met" if r["ratio_mean"] <= 1.05 else "NOT met", r["ratio_mean"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
