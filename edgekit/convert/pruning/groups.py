"""Dependency groups: the sets of channels that must be removed together.

Each tensor's channel (last) axis is described by a Layout: a sequence of segments (channel set, length)
repeated `repeat` times (a flatten after a conv repeats the channel set once per spatial position,
channels fastest). Walking the functional graph in execution order, a producer (conv, dense) opens a new
channel set, channel-wise layers pass theirs through, element-wise layers (residual adds, multiplies) tie
their inputs' sets together, and concatenations join sets at offsets. Sets touching the model input, a
model output, or a layer the registry does not know are frozen, with the reason kept for the report.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.keras_graph import graph_nodes
from edgekit.convert.pruning.layers import LayerRule, rule_for

Segments = Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class Layout:
    segments: Segments                 # (channel set, length), in order along the axis
    repeat: int = 1

    @property
    def base(self) -> int:
        return sum(n for _, n in self.segments)

    @property
    def width(self) -> int:
        return self.base * self.repeat


@dataclass(frozen=True)
class Group:
    index: int
    name: str                          # the first layer that produces these channels (or the reason's layer)
    channels: int
    producers: Tuple[str, ...]
    members: Tuple[str, ...]           # channel-wise layers with per-channel weights
    consumers: Tuple[str, ...]         # layers that read these channels as their input channels
    kinds: Tuple[str, ...]             # what the group touches: conv2d, batchnormalization, add, concat, ...
    prunable: bool
    reason: str = ""                   # why it is left alone

    def to_dict(self) -> Dict:
        return {"index": self.index, "name": self.name, "channels": self.channels, "prunable": self.prunable,
                "reason": self.reason, "kinds": list(self.kinds), "producers": list(self.producers),
                "members": list(self.members), "consumers": list(self.consumers)}


@dataclass(frozen=True)
class NodeInfo:
    layer: str
    kind: str                          # layer class name
    inputs: Tuple[Optional[Layout], ...]
    output: Optional[Layout]
    in_shapes: Tuple[Tuple, ...]
    out_shape: Tuple


@dataclass
class ChannelGraph:
    groups: Tuple[Group, ...]
    layer_io: Dict[str, Tuple[Layout, Layout]]    # supported layers -> (input layout, output layout)
    nodes: Tuple[NodeInfo, ...]
    unsupported: Tuple[Tuple[str, str], ...]       # (layer, reason)
    followers: Dict[str, Tuple[str, ...]] = field(default_factory=dict)   # layer -> layers reading its output
    shared: Tuple[str, ...] = ()                   # layers called at more than one node

    @property
    def prunable(self) -> List[Group]:
        return [g for g in self.groups if g.prunable]


class _Sets:
    """Union-find over channel sets, with what touches each set."""

    def __init__(self) -> None:
        self.parent: List[int] = []
        self.length: List[int] = []
        self.notes: List[Tuple[int, str, str]] = []      # (set, field, value)

    def new(self, length: int, frozen: str = "") -> int:
        self.parent.append(len(self.parent))
        self.length.append(int(length))
        if frozen:
            self.note(len(self.parent) - 1, "frozen", frozen)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def note(self, s: int, field: str, value: str) -> None:
        self.notes.append((s, field, value))

    def note_layout(self, lay: Optional[Layout], field: str, value: str) -> None:
        for s, _ in (lay.segments if lay else ()):
            self.note(s, field, value)


def _shape(t) -> Tuple:
    return tuple(t.shape)


def _last(t) -> int:
    shape = _shape(t)
    return int(shape[-1]) if shape and shape[-1] is not None else 1


def _tie(sets: _Sets, lays: Sequence[Layout]) -> Optional[Layout]:
    """Union equal-structured layouts (ignoring broadcast operands of width 1); None when they differ."""
    full = [lay for lay in lays if lay.width > 1] or list(lays)
    first = full[0]
    shape = ([n for _, n in first.segments], first.repeat)
    if any(([n for _, n in lay.segments], lay.repeat) != shape for lay in full[1:]):
        return None
    for lay in full[1:]:
        for (a, _), (b, _) in zip(first.segments, lay.segments):
            sets.union(a, b)
    return first


class _Walker:
    def __init__(self) -> None:
        self.sets = _Sets()
        self.layout: Dict[int, Layout] = {}
        self.layer_io: Dict[str, Tuple[Layout, Layout]] = {}
        self.layer_set: Dict[str, int] = {}
        self.unsupported: List[Tuple[str, str]] = []
        self.producer_of: Dict[int, str] = {}
        self.followers: Dict[str, List[str]] = {}
        self.calls: Dict[str, int] = {}
        self.infos: List[Tuple[object, str, Tuple, Optional[Layout]]] = []

    def fresh(self, t, frozen: str = "") -> Layout:
        return Layout(((self.sets.new(_last(t), frozen), _last(t)),))

    def visit(self, node) -> None:
        layer = node.operation
        ins = tuple(self.layout.get(id(t)) for t in node.input_tensors)
        rule, reason = rule_for(layer, node)
        out = None
        if rule is not None and (not ins or any(lay is None for lay in ins)):
            reason = "an input the pruner could not trace"
        elif rule is not None:
            out, reason = self.apply(rule, layer, node, ins)
            if out is not None and out.width != _last(node.outputs[0]):
                out, reason = None, "channel bookkeeping gives {} channels, the layer has {}".format(
                    out.width, _last(node.outputs[0]))
        if out is None:
            why = "unsupported layer {} ({}): {}".format(layer.name, type(layer).__name__, reason)
            self.unsupported.append((layer.name, reason))
            for lay in ins:
                self.sets.note_layout(lay, "frozen", why)
            for t in node.outputs:
                self.layout[id(t)] = self.fresh(t, why)
            self.layer_io.pop(layer.name, None)
        else:
            self.layout[id(node.outputs[0])] = out
            if layer.weights or rule.kind == "producer":
                self.layer_io[layer.name] = (ins[0], out)
        self.infos.append((node, type(layer).__name__, ins, self.layout.get(id(node.outputs[0]))))
        self.calls[layer.name] = self.calls.get(layer.name, 0) + 1
        for t in node.input_tensors:
            if id(t) in self.producer_of:
                self.followers.setdefault(self.producer_of[id(t)], []).append(layer.name)
        for t in node.outputs:
            self.producer_of[id(t)] = layer.name

    def apply(self, rule: LayerRule, layer, node, ins: Tuple[Layout, ...]) -> Tuple[Optional[Layout], str]:
        kind, cls = rule.kind, type(layer).__name__.lower()
        if kind in ("producer", "channelwise", "flatten") and len(ins) != 1:
            return None, "{} inputs".format(len(ins))
        if kind in ("producer", "channelwise") and layer.name in self.layer_io:     # shared layer: tie calls
            if _tie(self.sets, [self.layer_io[layer.name][0], ins[0]]) is None:
                return None, "shared between inputs with different channel structure"
        if kind == "producer":
            if layer.name not in self.layer_set:
                self.layer_set[layer.name] = self.sets.new(_last(node.outputs[0]))
            s = self.layer_set[layer.name]
            self.sets.note(s, "producer", layer.name)
            self.sets.note(s, "kind", cls)
            self.sets.note_layout(ins[0], "consumer", layer.name)
            if ins[0].repeat > 1:
                self.sets.note_layout(ins[0], "kind", "{}_after_flatten".format(cls))
            return Layout(((s, _last(node.outputs[0])),)), ""
        if kind == "channelwise":
            if layer.weights:
                self.sets.note_layout(ins[0], "member", layer.name)
            if layer.weights or cls.startswith("global"):
                self.sets.note_layout(ins[0], "kind", cls)
            return ins[0], ""
        if kind == "flatten":
            spatial = int(np.prod([int(d) for d in _shape(node.input_tensors[0])[1:-1]], dtype=np.int64))
            self.sets.note_layout(ins[0], "kind", "flatten")
            return Layout(ins[0].segments, ins[0].repeat * spatial), ""
        rank = len(_shape(node.outputs[0]))
        if kind == "concat" and getattr(layer, "axis", -1) % rank == rank - 1:
            if any(lay.repeat != 1 for lay in ins):
                return None, "concatenates flattened tensors"
            for lay in ins:
                self.sets.note_layout(lay, "kind", "concat")
            return Layout(tuple(seg for lay in ins for seg in lay.segments)), ""
        tied = _tie(self.sets, ins)                  # element-wise ops; concat along a non-channel axis
        if tied is None:
            return None, "inputs with different channel structure ({})".format(
                ", ".join("+".join(str(n) for _, n in lay.segments) for lay in ins))
        self.sets.note_layout(tied, "kind", "concat" if kind == "concat" else cls)
        return tied, ""


def find_groups(model) -> ChannelGraph:
    """Walk a functional keras model and return its channel groups (prunable or not, with reasons)."""

    w = _Walker()
    for t in model.inputs:
        w.layout[id(t)] = w.fresh(t, "model input {}".format(t.name))
    for node in graph_nodes(model):
        w.visit(node)
    for name, t in zip(model.output_names, model.outputs):
        w.sets.note_layout(w.layout.get(id(t)), "frozen", "model output {}".format(name))
    outs = {id(t) for t in model.outputs}
    exits = {node.operation.name for node, _, _, _ in w.infos if any(id(o) in outs for o in node.outputs)}
    return _collect(w, exits)


def _collect(w: _Walker, exit_layers) -> ChannelGraph:
    sets = w.sets
    roots: List[int] = []
    info: Dict[int, Dict[str, List[str]]] = {}
    for s in range(len(sets.parent)):
        r = sets.find(s)
        if r not in info:
            roots.append(r)
            info[r] = {"frozen": [], "producer": [], "member": [], "consumer": [], "kind": []}
    for s, field, value in sets.notes:
        bucket = info[sets.find(s)][field]
        if value not in bucket:
            bucket.append(value)
    for r in roots:
        if any(c in exit_layers for c in info[r]["consumer"]):
            info[r]["kind"].append("exit_head")
    index = {r: i for i, r in enumerate(roots)}
    groups = []
    for r in roots:
        d = info[r]
        reason = "; ".join(d["frozen"]) or ("" if d["producer"] else "no layer produces these channels")
        name = d["producer"][0] if d["producer"] else "input of " + ",".join(d["consumer"][:2] or ["nothing"])
        groups.append(Group(index=index[r], name=name, channels=sets.length[r], producers=tuple(d["producer"]),
                            members=tuple(d["member"]), consumers=tuple(d["consumer"]), kinds=tuple(d["kind"]),
                            prunable=not reason, reason=reason))

    def tr(lay: Optional[Layout]) -> Optional[Layout]:
        if lay is None:
            return None
        return Layout(tuple((index[sets.find(s)], n) for s, n in lay.segments), lay.repeat)

    nodes = tuple(NodeInfo(layer=node.operation.name, kind=kind, inputs=tuple(tr(lay) for lay in ins),
                           output=tr(out), in_shapes=tuple(_shape(t) for t in node.input_tensors),
                           out_shape=_shape(node.outputs[0]) if node.outputs else ())
                  for node, kind, ins, out in w.infos)
    io = {name: (tr(a), tr(b)) for name, (a, b) in w.layer_io.items()}
    return ChannelGraph(groups=tuple(groups), layer_io=io, nodes=nodes, unsupported=tuple(w.unsupported),
                        followers={k: tuple(v) for k, v in w.followers.items()},
                        shared=tuple(n for n, c in w.calls.items() if c > 1))


def kept_indices(layout: Layout, keep: Mapping[int, np.ndarray]) -> np.ndarray:
    """Positions along a tensor's channel axis that survive when group g keeps channels keep[g]."""
    parts, offset = [], 0
    for g, n in layout.segments:
        k = keep.get(g)
        parts.append(offset + (np.arange(n) if k is None else np.sort(np.asarray(k, dtype=np.int64))))
        offset += n
    base = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.concatenate([r * offset + base for r in range(layout.repeat)]).astype(np.int64)


def removed_indices(layout: Layout, group: int, removed: np.ndarray) -> np.ndarray:
    """Positions along a tensor's channel axis that belong to `removed` channels of one group."""
    out, offset = [], 0
    for g, n in layout.segments:
        if g == group:
            out.append(offset + np.asarray(removed, dtype=np.int64))
        offset += n
    if not out:
        return np.zeros(0, np.int64)
    base = np.concatenate(out)
    return np.concatenate([r * offset + base for r in range(layout.repeat)])
