"""Where int8 time goes on this machine, and where `auto:N` exits go when placed by it (host-x86_64, 1 thread).

1. One int8 3x3 convolution (int8 in and out, so no (de)quantize, XNNPACK, batch 1) at 32x32, 16x16 and 8x8 with
   8 to 96 channels in and out: median ms and ns per output pixel, all timed together, interleaved. When the
   per-pixel cost hardly moves with the channels, removing channels (pruning) saves little at high resolution.
2. The plain digits CNN (edgekit/assets/digits_cnn.keras): each candidate cut's share of the FLOPs and of the
   measured int8 latency of the backbone's prefix up to it (convert/exit_latency.py, as `--exit-placement latency`
   measures it), and the cuts `auto:1..3` choose by each.
Goal: the latency placement of auto:2 puts its first exit where at most a third of the int8 time is spent.

    python benchmarks/bench_cut_latency.py
"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CNN = os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras")
CALIB = os.path.join(ROOT, "calibration", "digits_calib.npz")
SHAPES = [(32, c) for c in (8, 16, 32)] + [(16, c) for c in (16, 32, 56, 64, 96)] + [(8, c) for c in (32, 64, 72, 96)]


def conv_int8(hw: int, ch: int) -> bytes:
    import keras

    from edgekit.convert.tf import quiet, tensorflow

    tf = tensorflow()
    inp = keras.Input((hw, hw, ch), name="x")
    model = keras.Model(inp, keras.layers.Conv2D(ch, 3, padding="same", activation="relu")(inp))
    rs = np.random.RandomState(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({"x": rs.rand(1, hw, hw, ch).astype(np.float32)} for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type, conv.inference_output_type = tf.int8, tf.int8
    with quiet():
        return conv.convert()


def convolutions() -> None:
    from edgekit.runtime.cost_protocol import CostProtocol, measure_candidates
    from edgekit.runtime.interpreter import load_backend

    backend = load_backend()
    calls = {}
    for hw, ch in SHAPES:
        it = backend.interpreter(model_content=conv_int8(hw, ch), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.random.RandomState(1).randint(-128, 127, d["shape"]).astype(np.int8))
        calls[(hw, ch)] = it.invoke
    costs = measure_candidates(calls, CostProtocol(min_rounds=200, max_rounds=1000, max_seconds=60))
    print("1. int8 3x3 convolution alone (int8 in/out, 1 thread, medians, interleaved)")
    print("   size   channels   median ms   ns per output pixel   GMAC/s")
    for hw, ch in SHAPES:
        ms = costs[(hw, ch)].median_ms
        print("   {:>2}x{:<2}  {:>8}   {:>9.4f}   {:>19.1f}   {:>6.1f}".format(
            hw, hw, ch, ms, 1e6 * ms / (hw * hw), hw * hw * ch * ch * 9 / 1e6 / ms))


def placements():
    import keras

    from edgekit.convert.exit_latency import latency_positions
    from edgekit.convert.exits import _CutGraph, _representatives, choose_auto
    from edgekit.data import load_data
    from edgekit.targets import get_target

    model = keras.models.load_model(CNN, compile=False)
    g = _CutGraph(model)
    cands = _representatives(g, [c for c in g.all_cuts() if g.problem(c, 1) is None and c.fraction <= 0.95])
    positions = latency_positions(model, load_data(CALIB).x, "int8", get_target("host-x86_64"))
    where = positions(cands)
    print("2. plain digits CNN: candidate cuts, share of the FLOPs and of the int8 prefix latency (measured here)")
    for c, w in zip(cands, where):
        print("   {:<8} FLOPs {:5.1%}   latency {:5.1%}".format(c.layer, c.fraction, w))
    first = None
    for n in (1, 2, 3):
        by_flops = [c.layer for c in choose_auto(model, n)]
        by_time = [c.layer for c in choose_auto(model, n, positions=positions)]
        print("   auto:{}  by FLOPs {:<28} by latency {}".format(n, ", ".join(by_flops), ", ".join(by_time)))
        if n == 2:
            first = dict(zip([c.layer for c in cands], where))[by_time[0]]
    return first


def main() -> None:
    print("machine: {} cores, load average {:.2f} at the start".format(os.cpu_count(), os.getloadavg()[0]))
    convolutions()
    first = placements()
    print("goal auto:2 by latency puts its first exit within a third of the int8 time: {} ({:.1%})".format(
        "met" if first <= 1 / 3 else "NOT met", first))


if __name__ == "__main__":
    main()
