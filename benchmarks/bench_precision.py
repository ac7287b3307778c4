"""Adaptive precision against uniform int8: size, accuracy and speed, all ratios measured in one run.

Demo (the 3-exit digits CNN, target raspberry-pi-4): uniform int8 (and float32 for reference) beside
`--precision adaptive` with its defaults (objective latency) and with `--objective size`. Size = the bundle's
stage files on disk (4-bit convolution filters stored nibble-packed; the runtime restores the int8 model); accuracy = last exit with every stage run on the 360 test images; latency = full depth through the
runtime (EarlyExitRunner, every stage), batch 1, 1 thread, each bundle timed interleaved call by call with the
int8 bundle (median; the machine may be shared with other work, which interleaving spreads over both alike;
pairs, because a bundle with large weights in the same rounds leaves the others cold caches). Goals: default adaptive accuracy >= int8's, size <= 0.70x int8, latency <= 1.05x int8; objective size
<= 0.55x int8 size, with its latency factor printed.

MobileNetV2 (keras.applications, alpha 0.35, 96x96x3, weights=None: random weights, nothing downloaded) with a
second exit (global pooling + a 1000-way dense layer after block_6_expand_relu) beside its own output. Keras'
initial batch-norm statistics make the random network's activations vanish, so the moving statistics are set
from the calibration images (one forward pass with batch statistics). Inputs: the digits images resized to
96x96, three channels, in [-1, 1]. Adaptive with the default objective (latency) and with objective accuracy,
rungs int4w,int8,float32 (int16x8 runs on reference kernels and every op would be timed at it). SQNR of each
exit against float Keras on 64 held-out images; latency = both stages at batch 1, 1 thread, each build interleaved with int8.
Goal (default objective): adaptive exit SQNR >= int8's at <= 1.0x int8's latency. int8 is the build `convert
--precision int8` makes (quantize.uniform_stage); it and the plan's stages are calibrated on all 160 images.

    python benchmarks/bench_precision.py [--skip-mobilenet] [--warm] [--target raspberry-pi-4]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
TEST = os.path.join(ROOT, "calibration", "digits_test.npz")
DEMO = os.path.join(ROOT, "edgekit", "assets", "demo_digits.keras")
DEMO_RUNS = (("int8", "int8", None), ("float32", "float32", None), ("adaptive", "adaptive", None),
             ("adaptive size", "adaptive", "size"))


def goal(ok):
    return "met" if ok else "NOT met"


class Clock:
    """Wall and CPU seconds of this process (the machine may be shared: CPU time is the steadier figure)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __str__(self):
        return "{:.0f} s wall, {:.0f} s CPU".format(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def _protocol():
    from edgekit.runtime.cost_protocol import CostProtocol

    return CostProtocol(warmup=20, chunk=50, min_rounds=300, max_rounds=3000, rel_tol=0.01, max_seconds=60.0)


# ----------------------------------------------------------------------------------------------------- demo
def demo(target, tmp):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.runtime.cost_protocol import measure_candidates
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate

    test = load_data(TEST)
    rows, calls = {}, {}
    for name, precision, objective in DEMO_RUNS:
        clock = Clock()
        res = convert(ConvertOptions(DEMO, target, CALIB, os.path.join(tmp, "demo-" + name.replace(" ", "-")),
                                     precision=precision, objective=objective))
        runner = EarlyExitRunner(res.bundle_dir, num_threads=1)
        rows[name] = {"size": res.report["bundle_size_bytes"], "time": str(clock),
                      "acc": evaluate(runner, test.x, test.y, full_depth=True)["accuracy"],
                      "plan": res.report.get("precision_plan")}
        one = test.x[:1].astype(np.float32)
        calls[name] = (lambda r: lambda: r.run(one, full_depth=True))(runner)
    for name in calls:                       # each bundle against int8, the pair interleaved call by call
        if name == "int8":
            continue
        got = measure_candidates({"int8": calls["int8"], name: calls[name]}, _protocol())
        rows[name].update(ms=got[name].median_ms, iqr=got[name].iqr_ms, vs8=got[name].median_ms /
                          got["int8"].median_ms, ms8=got["int8"].median_ms)
    rows["int8"].update(ms=rows["adaptive"]["ms8"], iqr=0.0, vs8=1.0)
    return rows


def print_demo(rows, target):
    i8 = rows["int8"]
    print("demo digits CNN, target {}: accuracy = last exit, every stage run, 360 test images; latency = full depth "
          "through the runtime, batch 1, 1 thread, each bundle interleaved call by call with the int8 one (median, "
          "IQR; int8's ms from its pair with adaptive)".format(target))
    print("{:<14} {:>9} {:>7} {:>9} {:>9} {:>8} {:>7}  {}".format("bundle", "size KiB", "x int8", "accuracy", "ms",
                                                                  "IQR ms", "x int8", "convert time"))
    for name, _, _ in DEMO_RUNS:
        r = rows[name]
        print("{:<14} {:>9.1f} {:>6.3f}x {:>9.2%} {:>9.4f} {:>8.4f} {:>6.2f}x  {}".format(
            name, r["size"] / 1024.0, r["size"] / float(i8["size"]), r["acc"], r["ms"], r["iqr"],
            r["vs8"], r["time"]))
    for name in ("adaptive", "adaptive size"):
        plan = rows[name]["plan"]
        print("{} per-op: {}".format(name, ", ".join("{}={}/{}/{}".format(
            ly["layer"], ly["rung"], ly["kernel"], "-" if ly["ms_vs_int8"] is None else "{:+.3f}".format(
                ly["ms_vs_int8"])) for ly in plan["layers"])))
        for line in plan["summary"]:
            print("  convert said: " + line)
    ad, sz = rows["adaptive"], rows["adaptive size"]
    print_size_bound(ad, i8)
    s, t = ad["size"] / float(i8["size"]), ad["vs8"]
    print("goal demo adaptive (defaults) accuracy >= int8: {:.2%} vs {:.2%} -> {}".format(
        ad["acc"], i8["acc"], goal(ad["acc"] >= i8["acc"])))
    print("goal demo adaptive (defaults) size <= 0.70x int8: {:.3f}x -> {}".format(s, goal(s <= 0.70)))
    print("goal demo adaptive (defaults) latency <= 1.05x int8: {:.3f}x -> {}".format(t, goal(t <= 1.05)))
    s = sz["size"] / float(i8["size"])
    print("goal demo --objective size <= 0.55x int8 size: {:.3f}x (latency {:.2f}x int8, printed by convert: {}) "
          "-> {}".format(s, sz["vs8"], "yes" if any("slower" in ln for ln in sz["plan"]["summary"]) or
                         sz["vs8"] <= 1.03 else "no", goal(s <= 0.55)))


def print_size_bound(ad, i8):
    """What the size goal would cost in time, from the plan's own per-op measurements (each op moved alone in an
    all-int8 build of its stage, interleaved, batch 1, 1 thread): the ops with the most weight bytes at each rung,
    and the cheapest 4-bit moves from uniform int8 (least ms per byte saved) that would bring it to 0.70x."""
    from edgekit.convert.precision.ladder import weight_bytes

    layers = ad["plan"]["layers"]
    print("per-op ms over int8 by rung (kernel), ops with >= 5% of the weights:")
    total = float(sum(ly["params"] for ly in layers)) or 1.0
    for ly in sorted(layers, key=lambda r: -r["params"]):
        if ly["params"] / total >= 0.05:
            print("  {:<14} {:>7} params ({:>4.1%}): {}".format(ly["layer"], ly["params"], ly["params"] / total, ", ".join(
                "{} {}".format(r, "-" if ms is None else "{:+.4f} ms ({})".format(ms, ly["kernel_by_rung"].get(r, "-")))
                for r, ms in sorted(ly["ms_vs_int8_by_rung"].items()))))
    need = 0.30 * i8["size"]
    moves = []
    for ly in layers:
        ms = ly["ms_vs_int8_by_rung"].get("int4w")
        saved = weight_bytes("int8", ly["params"]) - weight_bytes("int4w", ly["params"])
        if ms is not None and saved > 0:
            moves.append((max(ms, 0.0) / saved, saved, ms, ly["layer"]))
    saved, extra, taken = 0.0, 0.0, []
    for _, b, more, name in sorted(moves):
        if saved >= need:
            break
        saved, extra, taken = saved + b, extra + more, taken + [name]
    slack = 0.05 * i8["ms"]
    print("size goal bound: 0.70x int8 needs {:.1f} KiB less than uniform int8; the cheapest 4-bit moves from it ({}) "
          "save {:.1f} KiB for {:+.4f} ms summed per op, against the 1.05x slack of {:.4f} ms -> {}".format(
              need / 1024.0, ", ".join(taken) or "none needed", saved / 1024.0, extra, slack,
              "within the slack" if saved >= need and extra <= slack else
              "not reachable at 1.05x with these kernels" if saved >= need else "not reachable with 4-bit weights"))


# ----------------------------------------------------------------------------------------------- MobileNetV2
def mobilenet(n_calib):
    """2-exit random MobileNetV2 (alpha 0.35), calibration images (n_calib) and held-out test images (64)."""
    import keras

    from edgekit.convert.tf import tensorflow
    from edgekit.data import load_data

    tf = tensorflow()
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                          classifier_activation=None)
    mid = base.get_layer("block_6_expand_relu").output
    e0 = keras.layers.Dense(1000, name="exit0")(keras.layers.GlobalAveragePooling2D(name="exit0_pool")(mid))
    model = keras.Model(base.input, [e0, base.output], name="mobilenetv2_2exit")

    def images(path, n):
        x = load_data(path).x[:n]
        return (np.repeat(tf.image.resize(x, (96, 96)).numpy(), 3, axis=-1) * 2.0 - 1.0).astype(np.float32)

    calib, test = images(CALIB, n_calib), images(TEST, 64)
    bns = [ly for ly in model.layers if isinstance(ly, keras.layers.BatchNormalization)]
    for ly in bns:
        ly.momentum = 0.0
    model(calib[:64], training=True)            # moving statistics := the calibration batch's statistics
    for ly in bns:
        ly.momentum = 0.99
    return model, calib, test


def run_mobilenet(target, samples):
    from edgekit.convert.evaluate import full_depth_outputs
    from edgekit.convert.precision import PrecisionOptions
    from edgekit.convert.precision.choose import choose_precision
    from edgekit.convert.precision.costs import full_depth
    from edgekit.convert.precision.sensitivity import sqnr_db
    from edgekit.convert.quantize import quantize_stage, uniform_stage
    from edgekit.convert.split import split_model, stage_inputs

    model, calib, test = mobilenet(160)
    stages = split_model(model)
    name = stages[0].input_names[0]
    ref = [np.asarray(o) for o in model(test)]
    feeds = stage_inputs(stages, calib, name)
    rows = {}
    for p in ("int8", "float32"):               # int8: the build `convert --precision int8` makes for the target
        c = Clock()
        rows[p] = {"blobs": [uniform_stage(st.model, p, f, target)[0] if p == "int8" else
                             quantize_stage(st.model, p, f) for st, f in zip(stages, feeds)], "time": str(c)}
    rungs = tuple(r for r in ("int4w", "int8", "float32") if r in target.precisions + ("int4w",))
    for objective in ("latency", "accuracy"):
        c = Clock()
        plan = choose_precision(stages, target, calib, None, PrecisionOptions(
            rungs=rungs, sensitivity_samples=samples, objective=objective), name)
        rows["adaptive " + objective] = {"blobs": list(plan.blobs), "time": str(c), "plan": plan}
    tfeeds = stage_inputs(stages, test[:1], name)
    from edgekit.convert.pack import stored_bytes

    for k, r in rows.items():                   # on disk: an adaptive plan stores 4-bit convolution filters packed
        r["size"] = sum(stored_bytes(b) if k.startswith("adaptive") else len(b) for b in r["blobs"])
        r["sqnr"] = [sqnr_db(a, b) for a, b in zip(ref, full_depth_outputs(r["blobs"], stages, test, name))]
        if k != "int8":                          # each build against int8, the pair interleaved call by call
            timed = full_depth({"int8": rows["int8"]["blobs"], k: r["blobs"]}, tfeeds, _protocol())
            r.update(ms=timed[k].median_ms, iqr=timed[k].iqr_ms, vs8=timed[k].median_ms / timed["int8"].median_ms)
            rows["int8"].setdefault("ms", timed["int8"].median_ms)
    rows["int8"].update(iqr=0.0, vs8=1.0)
    return rows


def print_mobilenet(rows):
    i8 = rows["int8"]
    print("MobileNetV2 alpha 0.35 96x96, random weights, 2 exits; SQNR vs float Keras on 64 test images; latency "
          "both stages, batch 1, 1 thread, each build interleaved with int8 (median, IQR)")
    print("{:<18} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8} {:>7}  {}".format(
        "build", "size KiB", "x int8", "exit0 dB", "exit1 dB", "ms", "IQR ms", "x int8", "build time"))
    for k, r in rows.items():
        print("{:<18} {:>9.1f} {:>6.3f}x {:>9.2f} {:>9.2f} {:>8.4f} {:>8.4f} {:>6.2f}x  {}".format(
            k, r["size"] / 1024.0, r["size"] / float(i8["size"]), r["sqnr"][0], r["sqnr"][1], r["ms"], r["iqr"],
            r["vs8"], r["time"]))
    for k in ("adaptive latency", "adaptive accuracy"):
        plan = rows[k]["plan"]
        counts = {}
        for ly in plan.layers:
            key = "{} on {}".format(ly["rung"], ly["kernel"])
            counts[key] = counts.get(key, 0) + 1
        print("{}: {} ops: {}".format(k, len(plan.layers), ", ".join("{} {}".format(n, c) for c, n in
                                                                       sorted(counts.items()))))
        for line in plan.report["summary"]:
            print("  plan said: " + line)
    for k in ("adaptive latency", "adaptive accuracy"):
        r = rows[k]
        ok = all(a >= b - 1e-9 for a, b in zip(r["sqnr"], i8["sqnr"])) and r["vs8"] <= 1.0
        print("{} MobileNetV2 {} exit SQNR >= int8's at <= 1.0x its latency: {} vs {} dB, {:.3f}x -> {}".format(
            "goal" if k == "adaptive latency" else "(objective accuracy, not a goal)", k,
            "/".join("{:.2f}".format(v) for v in r["sqnr"]), "/".join("{:.2f}".format(v) for v in i8["sqnr"]),
            r["vs8"], goal(ok)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-mobilenet", action="store_true")
    ap.add_argument("--warm", action="store_true", help="keep the user's sensitivity cache (default: a cold one)")
    ap.add_argument("--target", default="raspberry-pi-4")
    ap.add_argument("--samples", type=int, default=32, help="MobileNetV2 sensitivity samples")
    args = ap.parse_args()
    from edgekit.runtime.cost_protocol import machine
    from edgekit.targets import get_target

    total = Clock()
    print("machine: {} (load average {})".format(machine(), " ".join("{:.1f}".format(v) for v in os.getloadavg())))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:
            os.environ["EDGEKIT_CACHE_DIR"] = os.path.join(tmp, "precision-cache")
        clock = Clock()
        print_demo(demo(args.target, tmp), args.target)
        print("demo part: {}".format(clock))
        if not args.skip_mobilenet:
            print()
            clock = Clock()
            print_mobilenet(run_mobilenet(get_target(args.target), args.samples))
            print("MobileNetV2 part: {}".format(clock))
    print("total: {}; load average at the end {}".format(total, " ".join("{:.1f}".format(v)
                                                                        for v in os.getloadavg())))


if __name__ == "__main__":
    main()
