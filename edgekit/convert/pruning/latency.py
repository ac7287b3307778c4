"""A measured latency model: each conv, depthwise and dense layer timed alone as a TFLite model.

Every such layer is converted at the given precision and timed (batch 1, one thread, median, full and half width
interleaved under the shared cost protocol, runtime/cost_protocol.py) at full width and with the channel sets it
touches halved; its latency is fitted as a + b * f_in * f_out
(a + b * f for a depthwise conv), a per-layer lookup in the spirit of NetAdapt. Layers of the same
configuration and input shape are measured once. Other layers (adds, pooling) are not counted.
"""
from typing import Dict, List, Tuple

import keras
import numpy as np

from edgekit.convert.pruning.cost import CONVS, DEPTHWISE, CostModel, Term, split_terms
from edgekit.convert.pruning.groups import ChannelGraph
from edgekit.convert.pruning.layers import LAYER_RULES
from edgekit.convert.quantize import quantize_stage
from edgekit.rungs import INT8
from edgekit.runtime.cost_protocol import CostProtocol, stage_cost_table
from edgekit.runtime.interpreter import load_backend

HALF = 0.5
PROTOCOL = CostProtocol(max_seconds=2.0)     # the shared cost protocol, bounded per layer


def _probe(layer, in_shape: Tuple, fraction: float):
    cfg = dict(layer.get_config(), name="probe")
    rule = LAYER_RULES.get(type(layer).__name__)
    if rule is not None and rule.width_key:
        cfg[rule.width_key] = max(1, int(round(cfg[rule.width_key] * fraction)))
    shape = tuple(in_shape[1:-1]) + (max(1, int(round(in_shape[-1] * fraction))),)
    inp = keras.Input(shape, name="x")
    return keras.Model(inp, type(layer).from_config(cfg)(inp)), shape


def time_blobs(blobs: Dict[float, bytes], shapes: Dict[float, Tuple]) -> Dict[float, float]:
    """Median batch-1 latency (one thread) of a layer's probe builds, interleaved under the shared cost protocol."""
    keys = list(blobs)
    feeds = [{"x": np.random.RandomState(0).standard_normal((1,) + tuple(shapes[f])).astype(np.float32)}
             for f in keys]
    table = stage_cost_table(load_backend(), [blobs[f] for f in keys], feeds, [1], PROTOCOL)
    return {f: row[1].median_ms for f, row in zip(keys, table)}


def _measure(layer, in_shape: Tuple, fractions: Tuple[float, ...], precision: str, cache: Dict) -> Dict[float, float]:
    cfg = layer.get_config()
    cfg.pop("name", None)
    keys = {f: (type(layer).__name__, repr(sorted(cfg.items())), tuple(in_shape), f) for f in fractions}
    todo, shapes = {}, {}
    for f in fractions:
        if keys[f] not in cache:
            probe, shapes[f] = _probe(layer, in_shape, f)
            feed = np.random.RandomState(1).standard_normal((16,) + shapes[f]).astype(np.float32)
            todo[f] = quantize_stage(probe, precision, {"x": feed})
    cache.update({keys[f]: ms for f, ms in time_blobs(todo, shapes).items()} if todo else {})
    return {f: cache[keys[f]] for f in fractions}


def latency_cost(model, graph: ChannelGraph, precision: str = INT8) -> CostModel:
    prunable = {g.index for g in graph.prunable}
    cache: Dict = {}
    terms: List[Term] = []
    for n in graph.nodes:
        if n.kind not in CONVS + DEPTHWISE + ("Dense",) or not n.in_shapes:
            continue
        layer = model.get_layer(n.layer)
        lays = [n.output] if n.kind in DEPTHWISE else [n.inputs[0], n.output]
        touched = any(g in prunable for lay in lays if lay is not None for g, _ in lay.segments)
        if not touched or any(lay is None for lay in lays):
            terms.append(Term(_measure(layer, n.in_shapes[0], (1.0,), precision, cache)[1.0], ()))
            continue
        ms = _measure(layer, n.in_shapes[0], (1.0, HALF), precision, cache)
        full, half = ms[1.0], ms[HALF]
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
