"""Structured channel pruning: accuracy, int8 latency, the sparsity baseline, DP vs uniform.

In one run, for each digits CNN (the shipped demo, a trained 3-exit residual CNN, and the plain
single-exit digits CNN that the exit tests attach exits to, when its asset is present):
  - pruned to 50% of its FLOPs with layer-adaptive (DP) ratios and recovered by distillation: test accuracy
    against the unpruned model;
  - int8 TFLite latency of the pruned model and of 50% unstructured magnitude sparsity against the unpruned
    model, all three timed interleaved call by call (batch 1, 1 thread): ratios of medians;
and DP against uniform ratios at the same FLOPs on the demo, Keras's MobileNetV2 (alpha 1.0, 96x96) and
ResNet50 (random weights): output distortion on held-out inputs.

    python benchmarks/bench_prune.py [--full] [--calls N] [--json OUT]

By default MobileNetV2 and ResNet50 use 16 calibration samples, a coarse ratio grid and ResNet50 at 48x48 to
keep the run short; --full uses more samples, the default grid and ResNet50 at 96x96.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.convert.prune import DEFAULT_RATIOS, PruneOptions, prune  # noqa: E402
from edgekit.convert.quantize import quantize_stage  # noqa: E402
from edgekit.convert.tf import tensorflow  # noqa: E402
from edgekit.data import Dataset, load_data  # noqa: E402
from edgekit.models.demo import ASSET, CALIB_DIR  # noqa: E402

DIGITS_CNN = os.path.join(os.path.dirname(ASSET), "digits_cnn.keras")     # the plain single-exit digits CNN
from edgekit.runtime.interpreter import load_backend  # noqa: E402
from edgekit.targets import get_target  # noqa: E402

TARGET = "host-x86_64"
FLOPS = 0.5
MAX_DROP = 0.01
MIN_SPEEDUP = 1.6
SPARSE_MAX = 1.15         # "no comparable speed-up": sparse speed-up at most this


def sparsify(model, fraction):
    """A copy of `model` with the smallest-magnitude `fraction` of every conv/dense kernel set to zero."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    zeroed = total = 0
    for layer in copy.layers:
        if type(layer).__name__ in ("Conv2D", "Dense", "DepthwiseConv2D"):
            w = layer.get_weights()
            k = w[0]
            cut = np.quantile(np.abs(k), fraction)
            k = np.where(np.abs(k) <= cut, 0.0, k).astype(k.dtype)
            zeroed += int(np.sum(k == 0))
            total += k.size
            layer.set_weights([k] + w[1:])
    return copy, zeroed / max(total, 1)


def time_interleaved(runners, x, calls):
    """Median and mean ms of each runner, called in rotating order so noise hits all alike."""
    names = list(runners)
    times = {n: [] for n in names}
    for _ in range(50):
        for n in names:
            runners[n](image=x)
    clock = time.perf_counter
    for i in range(calls):
        for j in range(len(names)):
            n = names[(i + j) % len(names)]
            t0 = clock()
            runners[n](image=x)
            times[n].append((clock() - t0) * 1000.0)
    return {n: {"median_ms": float(np.median(t)), "mean_ms": float(np.mean(t))} for n, t in times.items()}


def int8_accuracy(run, data, exit_name):
    preds = [np.argmax(run(image=data.x[i:i + 1])[exit_name]) for i in range(len(data))]
    return float(np.mean(np.asarray(preds) == data.y))


def digits(args, path, label):
    import keras

    calib = load_data(os.path.join(CALIB_DIR, "digits_calib.npz"))
    test = load_data(os.path.join(CALIB_DIR, "digits_test.npz"))
    model = keras.models.load_model(path, compile=False)
    opts = PruneOptions(fraction=FLOPS, samples=256 if args.full else 128, recover_epochs=30 if args.full else 12,
                        channel_multiple=get_target(TARGET).channel_multiple)
    t0 = time.time()
    res = prune(model, opts, calib, eval_data=test)
    prune_s = time.time() - t0
    sparse, zero_frac = sparsify(model, 0.5)
    backend = load_backend()
    runners, sizes = {}, {}
    for name, m in (("unpruned", model), ("pruned", res.model), ("sparse50", sparse)):
        named = keras.Model(m.inputs, dict(zip(m.output_names, m.outputs)))     # signature outputs by exit name
        blob = quantize_stage(named, "int8", {"image": calib.x[:200]})
        runners[name] = backend.interpreter(model_content=blob, num_threads=1).get_signature_runner()
        sizes[name] = len(blob)
    last = model.output_names[-1]
    lat = time_interleaved(runners, test.x[:1], args.calls)
    acc = res.report["accuracy"]
    return {
        "label": label, "prune_seconds": prune_s, "report": res.report, "zeroed_fraction": zero_frac, "latency": lat,
        "tflite_bytes": sizes,
        "int8_accuracy": {n: int8_accuracy(r, test, last) for n, r in runners.items()},
        "accuracy_final_exit": {"unpruned": acc["unpruned"][-1], "pruned": acc["pruned"][-1],
                                "recovered": acc["recovered"][-1]},
        "speedup_pruned": lat["unpruned"]["median_ms"] / lat["pruned"]["median_ms"],
        "speedup_sparse": lat["unpruned"]["median_ms"] / lat["sparse50"]["median_ms"],
    }


def _images(size, n):
    """Digits resized to size x size, three channels, in [-1, 1]: real-looking inputs for random-weight nets."""
    tf = tensorflow()
    x = load_data(os.path.join(CALIB_DIR, "digits_val.npz")).x[:n]
    return (np.repeat(tf.image.resize(x, (size, size)).numpy(), 3, axis=-1) * 2.0 - 1.0).astype(np.float32)


def architecture(name, args):
    import keras

    tensorflow()
    if name == "MobileNetV2":
        size = 96
        model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, weights=None, classes=10,
                                               classifier_activation=None)
    else:
        size = 96 if args.full else 48
        model = keras.applications.ResNet50(input_shape=(size, size, 3), weights=None, classes=10,
                                            classifier_activation=None)
    n_cal, n_eval = (64, 64) if args.full else (16, 32)
    ratios = DEFAULT_RATIOS if args.full else (0.25, 0.5, 0.75)
    x = _images(size, n_cal + n_eval)
    t0 = time.time()
    res = prune(model, PruneOptions(fraction=FLOPS, samples=n_cal, ratios=ratios,
                                    channel_multiple=get_target(TARGET).channel_multiple),
                Dataset(x[:n_cal]), eval_data=Dataset(x[n_cal:]))
    return {"model": "{} {}x{}".format(name, size, size), "seconds": time.time() - t0, "report": res.report,
            "samples": [n_cal, n_eval], "ratios": list(ratios)}


def dp_row(label, report):
    a = report["allocation"]
    eq = a.get("dp_at_uniform_cost") or a["dp"]
    return {"model": label, "dp_flops": a["dp"]["cost_fraction"], "dp_dist": a["dp"]["distortion_eval"],
            "eq_flops": eq["cost_fraction"], "eq_dist": eq["distortion_eval"],
            "uni_flops": a["uniform"]["cost_fraction"], "uni_dist": a["uniform"]["distortion_eval"],
            "groups": len(report["groups"]), "dp_wins": eq["distortion_eval"] < a["uniform"]["distortion_eval"]}


def print_digits(d, calls, n):
    acc = d["accuracy_final_exit"]
    drop = acc["unpruned"] - acc["recovered"]
    lat = d["latency"]
    f = d["report"]["flops"]
    print("\n{}. {}: FLOPs {:.2f}M -> {:.2f}M ({:.1%}), params {} -> {}; prune+recovery {:.0f} s, recovery {} "
          "epochs".format(n, d["label"], f["before"] / 1e6, f["after"] / 1e6, f["fraction"],
                          d["report"]["params"]["before"], d["report"]["params"]["after"], d["prune_seconds"],
                          d["report"]["recovery"]["epochs_run"]))
    print("   test accuracy, last exit (float): unpruned {:.2%}, pruned {:.2%}, pruned+recovered {:.2%} "
          "(drop {:+.2f} points)".format(acc["unpruned"], acc["pruned"], acc["recovered"], 100 * drop))
    print("   test accuracy, last exit (int8 TFLite): " + ", ".join(
        "{} {:.2%}".format(k, v) for k, v in d["int8_accuracy"].items()))
    print("   int8 TFLite latency, {} interleaved rounds".format(calls))
    print("   {:<10} {:>10} {:>9} {:>10} {:>12}".format("model", "median ms", "mean ms", "size KiB", "speed-up"))
    for n in ("unpruned", "pruned", "sparse50"):
        print("   {:<10} {:>10.4f} {:>9.4f} {:>10.1f} {:>11.2f}x".format(
            n, lat[n]["median_ms"], lat[n]["mean_ms"], d["tflite_bytes"][n] / 1024.0,
            lat["unpruned"]["median_ms"] / lat[n]["median_ms"]))
    print("   (sparse50: {:.1%} of conv/dense weights zeroed by magnitude, shapes unchanged)".format(d["zeroed_fraction"]))
    return drop


def print_rows(rows, n):
    print("\n{}. output distortion on held-out inputs (sum over outputs of MSE / mean square), DP vs uniform ratios".format(n))
    print("   {:<24} {:>6} {:>15} {:>22} {:>17} {:>8}".format(
        "model", "groups", "DP@50%", "DP@<=uniform FLOPs", "uniform", "DP wins"))
    for r in rows:
        print("   {:<24} {:>6} {:>7.1%} {:>7.4f} {:>11.1%} {:>10.4f} {:>7.1%} {:>9.4f} {:>8}".format(
            r["model"], r["groups"], r["dp_flops"], r["dp_dist"], r["eq_flops"], r["eq_dist"], r["uni_flops"],
            r["uni_dist"], "yes" if r["dp_wins"] else "no"))


def digits_goals(d, drop):
    name = d["label"].split(" (")[0]
    return [
        ("{}: test accuracy drop after 50% FLOPs + recovery <= 1 point ({:+.2f})".format(name, 100 * drop),
         drop <= MAX_DROP),
        ("{}: int8 pruned >= {}x faster than int8 unpruned ({:.2f}x)".format(name, MIN_SPEEDUP, d["speedup_pruned"]),
         d["speedup_pruned"] >= MIN_SPEEDUP),
        ("{}: 50% unstructured sparsity no comparable speed-up (<= {}x: {:.2f}x)".format(
            name, SPARSE_MAX, d["speedup_sparse"]), d["speedup_sparse"] <= SPARSE_MAX),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="more samples and ratios, ResNet50 at 96x96")
    ap.add_argument("--calls", type=int, default=1000, help="interleaved timing rounds")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args()
    t0 = time.time()
    subjects = [digits(args, ASSET, "demo (3-exit residual digits CNN)")]
    if os.path.isfile(DIGITS_CNN):
        subjects.append(digits(args, DIGITS_CNN, "plain digits CNN (edgekit/assets/digits_cnn.keras)"))
    archs = [architecture(n, args) for n in ("MobileNetV2", "ResNet50")]
    rows = [dp_row("demo digits CNN 32x32", subjects[0]["report"])]
    rows += [dp_row(a["model"], a["report"]) for a in archs]
    rows += [dp_row("plain digits CNN 32x32", d["report"]) for d in subjects[1:]]
    print("structured pruning to {:.0%} FLOPs (host-x86_64, channel multiple {}, 1 thread, batch 1)".format(
        FLOPS, subjects[0]["report"]["channel_multiple"]))
    goals = []
    for i, d in enumerate(subjects):
        goals += digits_goals(d, print_digits(d, args.calls, i + 1))
    print_rows(rows, len(subjects) + 1)
    wins = sum(r["dp_wins"] for r in rows[:3])
    goals.append(("DP beats uniform at equal FLOPs on >= 2 of 3 models (demo, MobileNetV2, ResNet50: {} of 3)".format(
        wins), wins >= 2))
    print("")
    for text, ok in goals:
        print("goal {}: {}".format(text, "met" if ok else "NOT met"))
    print("total {:.0f} s wall, {:.0f} s CPU (MobileNetV2 {:.0f} s, ResNet50 {:.0f} s)".format(
        time.time() - t0, sum(os.times()[:2]), archs[0]["seconds"], archs[1]["seconds"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"digits": subjects, "architectures": archs, "rows": rows,
                       "goals": [{"goal": t, "met": bool(ok)} for t, ok in goals]}, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
