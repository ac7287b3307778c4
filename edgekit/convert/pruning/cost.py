"""Cost models for the pruning budget: FLOPs and parameters (latency.py measures latency; budgets.py is the registry).

A cost model is a sum of terms coef * prod(f_g for g in groups), where f_g is the fraction of channels
group g keeps. A conv's FLOPs are coef * f_in * f_out, a BatchNorm's parameters coef * f, a frozen part a
term whose groups never change. Evaluating the terms at an allocation gives its exact FLOPs or
parameter count (the same numbers flops.model_flops and keras count_params give for the rebuilt model).
"""
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

from edgekit.convert.flops import prod
from edgekit.convert.pruning.groups import ChannelGraph, Layout
from edgekit.convert.pruning.layers import LAYER_RULES

CONVS = ("Conv2D", "Conv1D", "Conv3D")                 # the classes flops.model_flops counts, and how
DEPTHWISE = ("DepthwiseConv2D",)
ELEMENTWISE = ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum")


@dataclass(frozen=True)
class Term:
    coef: float
    groups: Tuple[int, ...]


@dataclass(frozen=True)
class CostModel:
    kind: str
    unit: str
    terms: Tuple[Term, ...]
    note: str = ""

    def full(self) -> float:
        return float(sum(t.coef for t in self.terms))

    def evaluate(self, fractions: Mapping[int, float]) -> float:
        """Cost when group g keeps fraction fractions[g] of its channels (absent groups keep all)."""
        total = 0.0
        for t in self.terms:
            v = t.coef
            for g in t.groups:
                v *= fractions.get(g, 1.0)
            total += v
        return float(total)

    def alone(self, group: int, fraction: float) -> float:
        """Cost when only `group` is pruned (to `fraction`)."""
        return self.evaluate({group: fraction})


def split_terms(coef: float, layouts: Sequence[Optional[Layout]]) -> List[Term]:
    """coef spread over every combination of segments of the layouts, by their share of each axis."""
    combos: List[Tuple[float, Tuple[int, ...]]] = [(float(coef), ())]
    for lay in layouts:
        if lay is None:
            continue
        combos = [(c * n / lay.base, gs + (g,)) for c, gs in combos for g, n in lay.segments]
    return [Term(c, gs) for c, gs in combos]


def flops_cost(model, graph: ChannelGraph, precision: str = "") -> CostModel:
    terms: List[Term] = []
    for n in graph.nodes:
        if not n.in_shapes or not n.out_shape:
            continue
        layer = model.get_layer(n.layer)
        out, inn = prod(n.out_shape[1:]), n.in_shapes[0][1:]
        if n.kind in CONVS:
            cin = inn[-1] // max(getattr(layer, "groups", 1), 1)
            terms += split_terms(2 * out * prod(layer.kernel_size) * cin, [n.inputs[0], n.output])
        elif n.kind in DEPTHWISE:
            terms += split_terms(2 * out * prod(layer.kernel_size), [n.output])
        elif n.kind == "Dense":
            terms += split_terms(2 * out * inn[-1], [n.inputs[0], n.output])
        elif n.kind in ELEMENTWISE:
            terms += split_terms(out * (len(n.in_shapes) - 1), [n.output])
    return CostModel("flops", "FLOPs", tuple(terms), "2 per multiply-accumulate, as edgekit.convert.flops counts")


def params_cost(model, graph: ChannelGraph, precision: str = "") -> CostModel:
    terms: List[Term] = []
    for layer in model.layers:
        rule = LAYER_RULES.get(type(layer).__name__)
        io = graph.layer_io.get(layer.name)
        for w in layer.weights:
            roles = rule.roles(w.name) if rule is not None and io is not None else None
            lays = [io[0] if r == "in" else io[1] for r in (roles or ()) if r is not None]
            terms += split_terms(prod(w.shape), lays)
    return CostModel("params", "parameters", tuple(terms), "every weight, as keras count_params counts")
