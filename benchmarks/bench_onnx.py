"""The ONNX front end on the PyTorch-exported multi-exit fixture: conversion, parity, early exit.

Converts tests/fixtures/onnx/branchy_resnet.onnx at float32 and int8 for host-x86_64 (calibration data given in
the model's own NCHW layout), then on the digits test split (NCHW, three channels):
- max |bundle - onnxruntime| per exit, running every stage (goal: <= 1e-4 at float32);
- accuracy and exit histogram with early exit and at full depth (goal: the int8 bundle exits early);
- batch-1 latency, early exit against full depth and against onnxruntime on the original model, interleaved
  call by call in one run (ratios only; absolute times on this shared machine are noise);
- how the converter child was kept offline (goal: it was).

    python benchmarks/bench_onnx.py [--calls 300] [--json OUT]
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
from edgekit.runtime import EarlyExitRunner, evaluate  # noqa: E402
from edgekit.runtime.runner import exit_outputs  # noqa: E402

MODEL = os.path.join(ROOT, "tests", "fixtures", "onnx", "branchy_resnet.onnx")
EXITS = ("exit0", "exit1", "exit2")


def digits(split):
    with np.load(os.path.join(ROOT, "calibration", "digits_{}.npz".format(split))) as z:
        return np.repeat(np.transpose(z["x"], (0, 3, 1, 2)), 3, axis=1).astype(np.float32), z["y"]


def onnxruntime_session():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(MODEL, opts, providers=["CPUExecutionProvider"])


def interleaved_ms(fns, xs, calls):
    """Mean ms of each fn, called in turn on the same sample sequence (warm-up first)."""
    times = [[] for _ in fns]
    for i in range(20):
        for fn in fns:
            fn(xs[i % len(xs)])
    clock = time.perf_counter
    for i in range(calls):
        order = list(range(len(fns))) if i % 2 == 0 else list(reversed(range(len(fns))))
        for k in order:
            t0 = clock()
            fns[k](xs[i % len(xs)])
            times[k].append((clock() - t0) * 1000.0)
    return [float(np.mean(t)) for t in times]


def run(precision, calib_path, x, y, calls, sess, tmp):
    t0 = time.time()
    res = convert(ConvertOptions(MODEL, "host-x86_64", calib_path, os.path.join(tmp, precision), precision=precision))
    convert_s = time.time() - t0
    runner = EarlyExitRunner(res.bundle_dir, num_threads=1)
    ref = dict(zip(EXITS, sess.run(list(EXITS), {"image": x})))
    errs = [float(np.max(np.abs(o - ref[n]))) for n, (o, _) in zip(EXITS, exit_outputs(runner, x))]
    early, full = evaluate(runner, x, y), evaluate(runner, x, y, full_depth=True)
    samples = [x[i:i + 1] for i in range(len(x))]
    ee_ms, fd_ms, ort_ms = interleaved_ms([lambda v: runner.run(v), lambda v: runner.run(v, full_depth=True),
                                           lambda v: sess.run(None, {"image": v})], samples, calls)
    return {"precision": precision, "convert_s": round(convert_s, 1), "bundle_bytes": res.report["bundle_size_bytes"],
            "max_abs_err_vs_onnxruntime": errs, "acc_early": early["accuracy"], "acc_full": full["accuracy"],
            "exit_histogram": early["exit_histogram"], "early_ms": ee_ms, "full_ms": fd_ms, "onnxruntime_ms": ort_ms,
            "speedup_early_vs_full": fd_ms / ee_ms, "full_vs_onnxruntime": fd_ms / ort_ms,
            "converter_network": res.report["onnx"]["converter_network"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="timed calls per mode")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    x, y = digits("test")
    xc, yc = digits("calib")
    sess = onnxruntime_session()
    with tempfile.TemporaryDirectory() as tmp:
        calib = os.path.join(tmp, "calib_nchw.npz")
        np.savez(calib, x=xc, y=yc)
        rows = [run(p, calib, x, y, args.calls, sess, tmp) for p in ("float32", "int8")]
    head = ("precision", "convert s", "size KiB", "max|err| per exit", "acc early", "acc full", "exits",
            "early ms", "full ms", "ort ms", "full/early", "full/ort")
    print("  ".join(head))
    for r in rows:
        print("  ".join([r["precision"], "{:.1f}".format(r["convert_s"]), "{:.1f}".format(r["bundle_bytes"] / 1024),
                         ",".join("{:.2g}".format(e) for e in r["max_abs_err_vs_onnxruntime"]),
                         "{:.2%}".format(r["acc_early"]), "{:.2%}".format(r["acc_full"]), str(r["exit_histogram"]),
                         "{:.3f}".format(r["early_ms"]), "{:.3f}".format(r["full_ms"]),
                         "{:.3f}".format(r["onnxruntime_ms"]), "{:.2f}x".format(r["speedup_early_vs_full"]),
                         "{:.2f}x".format(r["full_vs_onnxruntime"])]))
    f32, i8 = rows
    print("converter child network: {}".format(f32["converter_network"]))
    goals = [("float32 full-depth outputs match onnxruntime within 1e-4 at every exit",
              max(f32["max_abs_err_vs_onnxruntime"]) <= 1e-4),
             ("int8 bundle runs with early exit (samples leave before the last exit)", sum(i8["exit_histogram"][:-1]) > 0),
             ("conversion offline (converter child without network)", "refused" in f32["converter_network"])]
    for text, ok in goals:
        print("goal {}: {}".format(text, "met" if ok else "NOT met"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
