"""Mean compensation: fold a removed channel's average contribution into the next layer's bias.

A removed channel c that a consumer (conv, dense) read contributed, on average, mean_c * sum of the
consumer's weights on c to each output. Removing it shifts the consumer's output by that much, which BN
networks feel strongly (a BatchNorm's shift survives the ReLU as a per-channel constant). The shift is put
back into the consumer's bias, or, for a consumer without bias followed only by a BatchNorm, into that
BatchNorm's moving mean. Means are measured on the calibration data where each consumer reads its input.
Exact for a constant channel and 'valid' padding; near borders of 'same' padding it is approximate.
"""
from typing import Dict, List, Mapping, Tuple

import keras
import numpy as np

from edgekit.convert.keras_graph import graph_nodes
from edgekit.convert.pruning.distortion import call
from edgekit.convert.pruning.groups import ChannelGraph, removed_indices
from edgekit.convert.pruning.layers import LAYER_RULES

BATCH = 64
Adjustment = Tuple[str, str, np.ndarray]          # (layer, weight name, value to add)


class Compensator:
    def __init__(self, model, graph: ChannelGraph, x: np.ndarray) -> None:
        self.graph = graph
        self.targets: Dict[str, Tuple[str, str, float]] = {}     # consumer -> (layer, weight, sign)
        self.kernels: Dict[str, np.ndarray] = {}                  # consumer -> kernel summed to (in, out)
        wanted = {c for g in graph.prunable for c in g.consumers} - set(graph.shared)
        tensors, names = [], []
        for node in graph_nodes(model):
            name = node.operation.name
            if name in wanted and name not in names and self._target(model, name) is not None:
                tensors.append(node.input_tensors[0])
                names.append(name)
        self.means: Dict[str, np.ndarray] = {}
        if not names:
            return
        probe = keras.Model(model.inputs, tensors)
        sums, count = [None] * len(names), 0
        for i in range(0, len(x), BATCH):
            outs = call(probe, x[i:i + BATCH])
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for j, o in enumerate(outs):
                a = np.asarray(o, np.float64)
                s = a.reshape(-1, a.shape[-1]).sum(0)
                sums[j] = s if sums[j] is None else sums[j] + s
            count += int(np.prod(np.asarray(outs[0]).shape[:-1]))
        for name, s in zip(names, sums):
            kernel = np.asarray([w for w in model.get_layer(name).weights if w.name == "kernel"][0].numpy(),
                                np.float64)
            self.kernels[name] = kernel.reshape((-1,) + kernel.shape[-2:]).sum(0)
            self.means[name] = s / count
            self.targets[name] = self._target(model, name)

    def _target(self, model, name: str):
        layer = model.get_layer(name)
        rule = LAYER_RULES.get(type(layer).__name__)
        if rule is None or rule.kind != "producer":
            return None
        if any(w.name == "bias" for w in layer.weights):
            return (name, "bias", 1.0)
        after = self.graph.followers.get(name, ())
        if len(after) == 1 and type(model.get_layer(after[0])).__name__ == "BatchNormalization" \
                and any(w.name == "moving_mean" for w in model.get_layer(after[0]).weights):
            return (after[0], "moving_mean", -1.0)
        return None

    def adjustments(self, removed: Mapping[int, np.ndarray]) -> List[Adjustment]:
        out: List[Adjustment] = []
        for name, (layer, weight, sign) in self.targets.items():
            layout = self.graph.layer_io[name][0]
            pos = [removed_indices(layout, g, idx) for g, idx in removed.items() if len(idx)]
            pos = np.concatenate(pos) if pos else np.zeros(0, np.int64)
            if len(pos) == 0:
                continue
            delta = self.means[name][pos] @ self.kernels[name][pos]
            out.append((layer, weight, (sign * delta).astype(np.float32)))
        return out
