"""Channel importance: one score per channel of every prunable group (higher = keep).

IMPORTANCE is the registry; each entry maps (model, graph, calibration inputs) to {group: scores}.
Scores from several layers of a group are each divided by their mean before summing, so a wide
conv does not drown a narrow one.
  l1          L1 norm of each output filter of the group's producers (convs, dense)
  l2          L2 norm of the same filters
  bn_scale    |gamma| of the group's BatchNorm layers
  activation  mean |activation| of the channel where the group's consumers read it, on calibration data
"""
from typing import Callable, Dict, List

import keras
import numpy as np

from edgekit.convert.keras_graph import graph_nodes
from edgekit.convert.pruning.distortion import call
from edgekit.convert.pruning.groups import ChannelGraph, Layout
from edgekit.errors import ConfigError

Scores = Dict[int, np.ndarray]
BATCH = 64


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    m = float(np.mean(v))
    return v / m if m > 0 else v


def _per_channel(values: np.ndarray, layout: Layout, group: int) -> np.ndarray:
    """values: one number per position of a channel axis -> one per channel of `group` (summed over repeats
    and over every segment where the group appears)."""
    rows = values.reshape(layout.repeat, layout.base).sum(axis=0)
    out, offset = None, 0
    for g, n in layout.segments:
        if g == group:
            out = rows[offset:offset + n] if out is None else out + rows[offset:offset + n]
        offset += n
    return out


def _filter_norm(model, graph: ChannelGraph, x: np.ndarray, order: int) -> Scores:
    scores: Scores = {}
    for g in graph.prunable:
        total = np.zeros(g.channels)
        for name in g.producers:
            kernel = [w for w in model.get_layer(name).weights if w.name == "kernel"][0]
            kernel = np.asarray(kernel.numpy(), np.float64)
            flat = kernel.reshape(-1, kernel.shape[-1])
            norms = np.abs(flat).sum(0) if order == 1 else np.sqrt((flat ** 2).sum(0))
            total += _normalised(norms)
        scores[g.index] = total
    return scores


def l1(model, graph: ChannelGraph, x: np.ndarray) -> Scores:
    return _filter_norm(model, graph, x, 1)


def l2(model, graph: ChannelGraph, x: np.ndarray) -> Scores:
    return _filter_norm(model, graph, x, 2)


def bn_scale(model, graph: ChannelGraph, x: np.ndarray) -> Scores:
    scores: Scores = {}
    missing: List[str] = []
    for g in graph.prunable:
        total = np.zeros(g.channels)
        found = False
        for name in g.members:
            layer = model.get_layer(name)
            gamma = [w for w in layer.weights if w.name == "gamma"]
            if type(layer).__name__ != "BatchNormalization" or not gamma:
                continue
            found = True
            total += _normalised(_per_channel(np.abs(np.asarray(gamma[0].numpy(), np.float64)),
                                              graph.layer_io[name][0], g.index))
        if not found:
            missing.append(g.name)
        scores[g.index] = total
    if missing:
        raise ConfigError("importance 'bn_scale' needs a BatchNormalization with a scale in every prunable group; "
                          "{} group(s) have none (e.g. {}); allowed there: {}".format(
                              len(missing), ", ".join(missing[:3]), ", ".join(k for k in IMPORTANCE if k != "bn_scale")))
    return scores


def activation(model, graph: ChannelGraph, x: np.ndarray) -> Scores:
    wanted = {c for g in graph.prunable for c in g.consumers}
    tensors, names = [], []
    for node in graph_nodes(model):
        name = node.operation.name
        if name in wanted and name not in names:
            tensors.append(node.input_tensors[0])
            names.append(name)
    probe = keras.Model(model.inputs, tensors)
    sums = [None] * len(tensors)
    for i in range(0, len(x), BATCH):
        outs = call(probe, x[i:i + BATCH])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, o in enumerate(outs):
            a = np.abs(np.asarray(o, np.float64))
            s = a.reshape(-1, a.shape[-1]).sum(0)
            sums[j] = s if sums[j] is None else sums[j] + s
    where = dict(zip(names, sums))
    scores: Scores = {}
    for g in graph.prunable:
        total = np.zeros(g.channels)
        for name in g.consumers:
            total += _normalised(_per_channel(where[name], graph.layer_io[name][0], g.index))
        scores[g.index] = total
    return scores


IMPORTANCE: Dict[str, Callable[[object, ChannelGraph, np.ndarray], Scores]] = {
    "l1": l1,
    "l2": l2,
    "bn_scale": bn_scale,
    "activation": activation,
}


def check_importance(name: str) -> str:
    if name not in IMPORTANCE:
        raise ConfigError("unknown importance {!r}; allowed: {}".format(name, ", ".join(IMPORTANCE)))
    return name


def channel_importance(name: str, model, graph: ChannelGraph, x: np.ndarray) -> Scores:
    return IMPORTANCE[check_importance(name)](model, graph, x)
