"""A measured latency model: each conv, depthwise and dense layer timed alone as a TFLite model.

Every such layer is converted at the given precision and timed (batch 1, one thread, median) at full
width and with the channel sets it touches halved; its latency is fitted as a + b * f_in * f_out
(a + b * f for a depthwise conv), a per-layer lookup in the spirit of NetAdapt. Layers of the same
configuration and input shape are measured once. Other layers (adds, pooling) are not counted.
"""
import time
from typing import Dict, List, Tuple

import numpy as np

from edgekit.convert.pruning.cost import CONVS, DEPTHWISE, CostModel, Term, split_terms
from edgekit.convert.pruning.groups import ChannelGraph
from edgekit.convert.pruning.layers import LAYER_RULES

REPEATS = 40
HALF = 0.5


def _probe(layer, in_shape: Tuple, fraction: float):
    import keras

    cfg = dict(layer.get_config(), name="probe")
    rule = LAYER_RULES.get(type(layer).__name__)
    if rule is not None and rule.width_key:
        cfg[rule.width_key] = max(1, int(round(cfg[rule.width_key] * fraction)))
    shape = tuple(in_shape[1:-1]) + (max(1, int(round(in_shape[-1] * fraction))),)
    inp = keras.Input(shape, name="x")
    return keras.Model(inp, type(layer).from_config(cfg)(inp)), shape


def time_blob(blob: bytes, shape: Tuple, repeats: int = REPEATS) -> float:
    from edgekit.runtime.interpreter import load_backend

    run = load_backend().interpreter(model_content=blob, num_threads=1).get_signature_runner()
    x = np.random.RandomState(0).standard_normal((1,) + tuple(shape)).astype(np.float32)
    for _ in range(3):
        run(x=x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x=x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def _measure(layer, in_shape: Tuple, fraction: float, precision: str, cache: Dict) -> float:
    from edgekit.convert.quantize import quantize_stage

    cfg = layer.get_config()
    cfg.pop("name", None)
    key = (type(layer).__name__, repr(sorted(cfg.items())), tuple(in_shape), fraction)
    if key not in cache:
        probe, shape = _probe(layer, in_shape, fraction)
        feed = np.random.RandomState(1).standard_normal((16,) + shape).astype(np.float32)
        cache[key] = time_blob(quantize_stage(probe, precision, {"x": feed}), shape)
    return cache[key]


def measured_latency_model(model, graph: ChannelGraph, precision: str = "int8") -> CostModel:
    prunable = {g.index for g in graph.prunable}
    cache: Dict = {}
    terms: List[Term] = []
    for n in graph.nodes:
        if n.kind not in CONVS + DEPTHWISE + ("Dense",) or not n.in_shapes:
            continue
        layer = model.get_layer(n.layer)
        full = _measure(layer, n.in_shapes[0], 1.0, precision, cache)
        lays = [n.output] if n.kind in DEPTHWISE else [n.inputs[0], n.output]
        touched = any(g in prunable for lay in lays if lay is not None for g, _ in lay.segments)
        if not touched or any(lay is None for lay in lays):
            terms.append(Term(full, ()))
            continue
        half = _measure(layer, n.in_shapes[0], HALF, precision, cache)
        shrink = 1.0 - HALF ** len(lays)
        b = max(0.0, (full - half) / shrink)
        a = full - b
        if a < 0:
            a, b = 0.0, full
        terms.append(Term(a, ()))
        terms += split_terms(b, lays)
    return CostModel("latency", "ms", tuple(terms),
                     "conv/depthwise/dense layers each timed alone as TFLite {} (batch 1, 1 thread) on this "
                     "machine, fitted as a + b*f_in*f_out; other layers not counted".format(precision))
