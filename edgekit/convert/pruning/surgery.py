"""Surgery: rebuild a functional model with fewer channels and copy the kept weights in.

Every layer is re-created from its config (producers with their new width), the graph is replayed in
execution order, and each weight is sliced along the axes its registry roles name. Layer names, the
input name and the output structure are kept, so exits keep their names. The new model shares no
variables with the original (the original stays the teacher during recovery).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import tree

from edgekit.convert.keras_graph import graph_nodes
from edgekit.convert.pruning.compensate import Adjustment
from edgekit.convert.pruning.groups import ChannelGraph, kept_indices
from edgekit.convert.pruning.layers import LAYER_RULES, Roles
from edgekit.errors import ModelError, first_line


def slice_weight(value: np.ndarray, roles: Optional[Roles], idx_in: np.ndarray, idx_out: np.ndarray) -> np.ndarray:
    """Keep positions idx_in / idx_out on the trailing axes marked "in" / "out"."""
    if not roles:
        return value
    first = value.ndim - len(roles)
    for i, role in enumerate(roles):
        if role is not None:
            value = np.take(value, idx_in if role == "in" else idx_out, axis=first + i)
    return value


def layer_indices(graph: ChannelGraph, name: str, keep: Mapping[int, np.ndarray]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    io = graph.layer_io.get(name)
    if io is None:
        return None
    return kept_indices(io[0], keep), kept_indices(io[1], keep)


def _clone_layer(layer, graph: ChannelGraph, keep: Mapping[int, np.ndarray]):
    cfg = layer.get_config()
    rule = LAYER_RULES.get(type(layer).__name__)
    idx = layer_indices(graph, layer.name, keep)
    if rule is not None and rule.width_key and idx is not None:
        cfg[rule.width_key] = int(len(idx[1]))
    try:
        return type(layer).from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - custom layers raise anything from from_config
        raise ModelError("layer {} ({}) cannot be re-created from its config for surgery: {}".format(
            layer.name, type(layer).__name__, first_line(exc, 200)))


def rebuild(model, graph: ChannelGraph, keep: Mapping[int, np.ndarray], adjust: Sequence[Adjustment] = ()):
    """A new keras.Model where group g keeps the channels keep[g] (groups not in keep keep all); `adjust`
    adds (layer, weight, delta) to weights before slicing (mean compensation)."""

    values: Dict[int, object] = {}
    inputs = []
    for t in model.inputs:
        inp = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name)   # the input keeps its tensor name (the manifest's)
        values[id(t)] = inp
        inputs.append(inp)
    made: Dict[int, Tuple[object, object]] = {}
    for node in graph_nodes(model):
        layer = node.operation
        if id(layer) not in made:
            made[id(layer)] = (layer, _clone_layer(layer, graph, keep))
        args, kwargs = node.arguments.fill_in(values)
        result = made[id(layer)][1](*args, **kwargs)
        for old, new in zip(node.outputs, tree.flatten(result)):
            values[id(old)] = new
    outputs = [values[id(t)] for t in model.outputs]
    struct = getattr(model, "_outputs_struct", None)
    packed = tree.pack_sequence_as(struct, outputs) if struct is not None else outputs
    new_model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, packed, name=model.name)
    deltas: Dict[Tuple[str, str], np.ndarray] = {}
    for layer, weight, delta in adjust:
        deltas[(layer, weight)] = deltas.get((layer, weight), 0.0) + delta
    for old, new in made.values():
        _copy_weights(old, new, graph, keep, deltas)
    return new_model


def _copy_weights(old, new, graph: ChannelGraph, keep: Mapping[int, np.ndarray],
                  deltas: Mapping[Tuple[str, str], np.ndarray]) -> None:
    if not old.weights:
        return
    rule = LAYER_RULES.get(type(old).__name__)
    idx = layer_indices(graph, old.name, keep)
    if len(old.weights) != len(new.weights):
        raise ModelError("layer {}: {} weights after surgery, {} before".format(
            old.name, len(new.weights), len(old.weights)))
    for ow, nw in zip(old.weights, new.weights):
        value = np.asarray(ow.numpy())
        if (old.name, ow.name) in deltas:
            value = (value + deltas[(old.name, ow.name)]).astype(value.dtype)
        if idx is not None and rule is not None:
            value = slice_weight(value, rule.roles(ow.name), idx[0], idx[1])
        if tuple(value.shape) != tuple(nw.shape):
            raise ModelError("layer {} weight {}: sliced shape {} does not fit the rebuilt {}".format(
                old.name, ow.name, tuple(value.shape), tuple(nw.shape)))
        nw.assign(value)
