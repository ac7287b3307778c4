"""Output distortion of removing channels, measured on calibration data without rebuilding the model.

Removing a channel from a group is exactly the same as zeroing the input rows of every layer that reads
that channel (the group's consumers): nothing else sees it, since groups that reach a model output or an
unknown layer are frozen. So the probe zeroes those rows in place, runs the model, and restores them.
Distortion is the sum over the model's outputs of the mean squared change, each divided by the
output's own mean square on the same data (so exits of different scales weigh alike).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.pruning.groups import ChannelGraph, removed_indices
from edgekit.convert.pruning.layers import LAYER_RULES
from edgekit.convert.tf import tensorflow

BATCH = 64


def _as_list(out) -> List[np.ndarray]:
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in sorted(out)]
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def call(model, x):
    """model(x) in inference mode, with x wrapped the way the model's inputs were declared (no warning)."""
    struct = getattr(model, "_inputs_struct", None)
    return model([x] if isinstance(struct, (list, tuple)) else x, training=False)


def run_eager(model, x: np.ndarray) -> List[np.ndarray]:
    """The model's outputs on x, batch by batch, without tracing a function (cheap for one-off calls)."""
    parts = [_as_list(call(model, x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def distortion(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    total = 0.0
    for o, r in zip(outputs, reference):
        r64 = np.asarray(r, np.float64)
        scale = float(np.mean(r64 ** 2)) or 1.0
        total += float(np.mean((np.asarray(o, np.float64) - r64) ** 2)) / scale
    return total


class DistortionProbe:
    """probe.measure({group: removed channel indices, ...}) -> distortion against the unpruned model."""

    def __init__(self, model, graph: ChannelGraph, x: np.ndarray, compensator=None) -> None:
        tf = tensorflow()
        self.model = model
        self.graph = graph
        self.compensator = compensator          # compensate.Compensator: removed channels' means folded in
        self.variables = {(layer.name, w.name): w for layer in model.layers for w in layer.weights}
        self.batches = [tf.constant(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
        self._forward = tf.function(lambda xb: call(model, xb), reduce_retracing=True)
        self.targets: Dict[int, List[Tuple[object, int, object]]] = {}   # group -> (variable, axis, layout)
        for layer in model.layers:
            rule = LAYER_RULES.get(type(layer).__name__)
            io = graph.layer_io.get(layer.name)
            if rule is None or rule.kind != "producer" or io is None:
                continue
            for w in layer.weights:
                roles = rule.roles(w.name) or ()
                if "in" in roles:
                    axis = len(w.shape) - len(roles) + roles.index("in")
                    for g, _ in io[0].segments:
                        self.targets.setdefault(g, []).append((w, axis, io[0]))
        self.reference = self.outputs()

    def outputs(self, batches: Optional[int] = None) -> List[np.ndarray]:
        parts = [_as_list(self._forward(b)) for b in self.batches[:batches]]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]

    def measure(self, removed: Mapping[int, np.ndarray]) -> float:
        return distortion(self.masked_outputs(removed), self.reference)

    def masked_outputs(self, removed: Mapping[int, np.ndarray], batches: Optional[int] = None) -> List[np.ndarray]:
        saved: Dict[int, Tuple[object, np.ndarray]] = {}
        try:
            for g, idx in removed.items():
                if len(idx) == 0:
                    continue
                for var, axis, layout in self.targets.get(g, ()):
                    if id(var) not in saved:
                        saved[id(var)] = (var, np.asarray(var.numpy()))
                    pos = removed_indices(layout, g, idx)
                    value = np.asarray(var.numpy())
                    index = [slice(None)] * value.ndim
                    index[axis] = pos
                    value[tuple(index)] = 0.0
                    var.assign(value)
            for layer, weight, delta in (self.compensator.adjustments(removed) if self.compensator else ()):
                var = self.variables[(layer, weight)]
                if id(var) not in saved:
                    saved[id(var)] = (var, np.asarray(var.numpy()))
                var.assign(np.asarray(var.numpy()) + delta)
            return self.outputs(batches)
        finally:
            for var, value in saved.values():
                var.assign(value)
