"""Attach early exits to a single-output Keras backbone and train only the exit heads.

A cut point is a tensor of the functional graph; the cut takes every operation the tensor depends on, and the
tensors that cross it (consumed on the far side) form the frontier the next stage receives. At the block
boundaries of a residual network that is the one tensor itself; inside a block the skip crosses too.
`attach_exits` picks cut points (for `auto:N` by cumulative FLOPs fraction, or by the measured latency fraction of
the backbone's prefix up to each cut (exit_latency.py); or by layer name), builds one small
head per cut (exit_heads.py), trains the heads with the backbone frozen, and returns an ordinary multi-exit
model: outputs in depth order, the model's own classifier last.
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras

from edgekit.convert.exit_heads import build_and_train
from edgekit.convert.flops import COMPUTE_LAYERS, node_flops
from edgekit.convert.keras_graph import ancestor_nodes, graph_nodes, producer_map
from edgekit.data import check_input_shape, load_data
from edgekit.errors import ConfigError, ModelError

TARGETS = ("auto", "labels", "distill")          # what the heads learn from
PLACES = ("flops", "latency")                    # auto:N at fractions of the FLOPs, or of the measured latency
# in a run of cuts with no computation between them, the exit goes after the last layer not of these kinds
NOT_PREFERRED = ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
                 "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
                 "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape")
MIN_REMAINING = 0.05        # auto: an exit must leave at least this fraction of the FLOPs to save
Progress = Callable[[int, int, str], None]


def parse_exits(spec: str) -> Tuple[int, Tuple[str, ...]]:
    """`auto:N` -> (N, ()); `layerA,layerB` -> (0, the names): the `auto` and `layers` fields of ExitOptions."""
    spec = (spec or "").strip()
    if spec.startswith("auto"):
        n = spec[5:] if spec.startswith("auto:") else ""
        if not n.isdigit() or int(n) < 1:
            raise ConfigError("--exits {!r}: allowed 'auto:N' with N >= 1 (e.g. auto:3) or layer names "
                              "separated by commas".format(spec))
        return int(n), ()
    names = tuple(s.strip() for s in spec.split(","))
    if not spec or any(not s for s in names):
        raise ConfigError("--exits {!r}: allowed 'auto:N' or layer names separated by commas, none empty"
                          .format(spec))
    if len(set(names)) != len(names):
        raise ConfigError("--exits {!r} names a layer twice".format(spec))
    return 0, names


@dataclass(frozen=True)
class ExitOptions:
    """How to attach exits. Exactly one of `auto` (> 0) and `layers` is set."""
    auto: int = 0                        # choose this many cut points at fractions 1/(N+1) ... N/(N+1)
    layers: Tuple[str, ...] = ()         # or cut after these layers
    data_path: Optional[str] = None      # training data; None: the calibration data
    epochs: int = 40                     # at most, per head (early stopping ends sooner)
    seed: int = 0
    max_crossing: int = 1                # most tensors allowed to cross a cut
    head_budget: float = 0.1             # head FLOPs <= this fraction of the stage the head ends
    head_param_budget: float = 0.25      # head weights <= this fraction of the backbone's weights
    target: str = "auto"                 # auto (labels when present), labels, distill
    temperature: float = 3.0             # distillation softening
    val_fraction: float = 0.2
    patience: int = 6
    batch_size: int = 64
    learning_rate: float = 3e-3
    place: str = "flops"                 # auto: fractions of the FLOPs, or of the latency measured here

    def check(self) -> "ExitOptions":
        if (self.auto > 0) == bool(self.layers):
            raise ConfigError("exit options need exactly one of auto (got {}) and layers (got {})".format(
                self.auto, list(self.layers)))
        limits = [("head epochs", self.epochs, 1), ("max crossing", self.max_crossing, 1),
                  ("batch size", self.batch_size, 1), ("patience", self.patience, 1)]
        for what, value, low in limits:
            if value < low:
                raise ConfigError("{} must be at least {}, got {}".format(what, low, value))
        if self.place not in PLACES:
            raise ConfigError("exit placement {!r}; allowed: {}".format(self.place, ", ".join(PLACES)))
        if self.place != "flops" and not self.auto:
            raise ConfigError("exit placement {!r} applies to auto:N; exits after named layers are placed by their "
                              "names".format(self.place))
        if self.target not in TARGETS:
            raise ConfigError("head target {!r}; allowed: {}".format(self.target, ", ".join(TARGETS)))
        for what, value in (("head budget", self.head_budget), ("head parameter budget", self.head_param_budget),
                            ("validation fraction", self.val_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError("{} must be in (0, 1), got {}".format(what, value))
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ConfigError("temperature and learning rate must be > 0, got {} and {}".format(
                self.temperature, self.learning_rate))
        return self

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExitOptions":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError("unknown exit option(s) {}; allowed: {}".format(
                sorted(unknown), ", ".join(cls.__dataclass_fields__)))
        return cls(**dict(d, layers=tuple(d.get("layers", ())))).check()


@dataclass(frozen=True)
class CutPoint:
    """A valid place for an exit: after `layer` (its output `index`), with the tensors crossing the cut."""
    layer: str
    index: int
    shape: Tuple[int, ...]
    crossing: Tuple[str, ...]
    flops_before: int
    fraction: float                      # flops_before / the backbone's total FLOPs
    tensor: Any = field(default=None, repr=False, compare=False)
    nodes: frozenset = field(default=frozenset(), repr=False, compare=False)   # ids of the nodes before the cut


class _CutGraph:
    """The backbone's graph with what cut finding needs: producers, consumers, FLOPs per node."""

    def __init__(self, model) -> None:
        self.model = model
        self.nodes = graph_nodes(model)
        self.producers = producer_map(self.nodes)
        self.flops = {id(n): node_flops(n) for n in self.nodes}
        self.compute = {id(n) for n in self.nodes if type(n.operation).__name__ in COMPUTE_LAYERS}
        self.total = max(sum(self.flops.values()), 1)
        self.consumers: Dict[int, List[int]] = {}
        for n in self.nodes:
            for t in n.input_tensors:
                self.consumers.setdefault(id(t), []).append(id(n))
        self.outputs = {id(t) for t in model.outputs}
        self.inputs = {id(t): t for t in model.inputs}

    def cut(self, node, index: int) -> CutPoint:

        t = node.outputs[index]
        before = ancestor_nodes(t, self.producers)
        ids = frozenset(id(n) for n in before)
        crossing = []
        for n in before:
            for j, o in enumerate(n.outputs):
                if id(o) in self.outputs or any(c not in ids for c in self.consumers.get(id(o), ())):
                    crossing.append(n.operation.name if len(n.outputs) == 1 else "{}:{}".format(n.operation.name, j))
        for tid, inp in self.inputs.items():
            if any(c not in ids for c in self.consumers.get(tid, ())):
                crossing.append(inp.name)
        flops = sum(self.flops[i] for i in ids)
        return CutPoint(layer=node.operation.name, index=index, shape=tuple(t.shape[1:]), crossing=tuple(crossing),
                        flops_before=int(flops), fraction=flops / self.total, tensor=t, nodes=ids)

    def problem(self, cp: CutPoint, max_crossing: int) -> Optional[str]:
        """Why this cut cannot take an exit, or None."""
        if len(cp.shape) not in (1, 2, 3) or any(d is None for d in cp.shape):
            return "its output has shape {}; exit heads take (features,), (length, channels) or (height, " \
                   "width, channels) with fixed sizes".format(list(cp.shape))
        if id(cp.tensor) in self.outputs:
            return "it is the model's own output"
        if cp.flops_before == 0:
            return "no computation comes before it"
        if cp.flops_before >= self.total:
            return "no computation comes after it"
        if len(cp.crossing) > max_crossing:
            return "{} tensors cross the cut there ({}); allowed at most {} (max crossing)".format(
                len(cp.crossing), ", ".join(cp.crossing), max_crossing)
        return None

    def all_cuts(self) -> List[CutPoint]:
        return [self.cut(n, i) for n in self.nodes for i in range(len(n.outputs))]


def _check_model(model) -> None:
    if isinstance(model, keras.Sequential) or not hasattr(model, "_nodes_by_depth"):
        raise ModelError("model {!r} is a {} model whose layers cannot be traced into a graph; exits need a "
                         "functional model (keras.Model(inputs, outputs))".format(model.name, type(model).__name__))
    if len(model.outputs) != 1:
        raise ModelError("model {!r} already has {} outputs; --exits attaches exits to a single-output model "
                         "(a multi-exit model converts without it)".format(model.name, len(model.outputs)))
    if len(model.inputs) != 1:
        raise ModelError("model {!r} has {} inputs; allowed: exactly one".format(model.name, len(model.inputs)))


def _nested_hint(model) -> str:
    """Cut points are looked for in the model's own graph: a model used as a layer is one step of it."""
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if not nested:
        return ""
    return " (layer {} is a whole model used as one layer; cuts inside it need the model built flat, e.g. " \
           "keras.Model(base.input, head(base.output)))".format(", ".join(repr(n) for n in nested))


def find_cut_points(model, max_crossing: int = 1) -> List[CutPoint]:
    """Every valid cut point in depth order (FLOPs before it, then graph order)."""
    _check_model(model)
    g = _CutGraph(model)
    cuts = [c for c in g.all_cuts() if g.problem(c, max_crossing) is None]
    return sorted(cuts, key=lambda c: (c.flops_before, len(c.nodes)))


def _representatives(g: _CutGraph, cuts: Sequence[CutPoint]) -> List[CutPoint]:
    """One cut per run of cuts with no convolution or dense layer between them: the deepest (after the
    activation rather than before it) that is not a padding, cropping, global pooling or reshaping layer."""
    groups: Dict[int, List[CutPoint]] = {}
    for c in cuts:
        groups.setdefault(len(c.nodes & g.compute), []).append(c)
    out = []
    for _, run in sorted(groups.items()):
        run.sort(key=lambda c: len(c.nodes))
        ok = [c for c in run if type(g.model.get_layer(c.layer)).__name__ not in NOT_PREFERRED]
        out.append((ok or run)[-1])
    return out


Positions = Callable[[Sequence[CutPoint]], List[float]]   # each candidate cut's place in (0, 1] along the backbone


def choose_auto(model, n: int, max_crossing: int = 1, positions: Optional[Positions] = None) -> List[CutPoint]:
    """n cut points nearest to the cumulative fractions 1/(n+1), ..., n/(n+1), strictly nested: of the FLOPs, or
    of what `positions` gives per candidate (exit_latency.latency_positions: measured prefix latency)."""
    _check_model(model)
    g = _CutGraph(model)
    cands = _representatives(g, [c for c in g.all_cuts() if g.problem(c, max_crossing) is None
                                 and c.fraction <= 1.0 - MIN_REMAINING])
    cands.sort(key=lambda c: (c.flops_before, len(c.nodes)))
    if len(cands) < n:
        raise ModelError("model {!r} has {} valid cut point(s) with at most {} crossing tensor(s) and at least "
                         "{:.0%} of the FLOPs after them ({}); asked for {} exits{}".format(
                             model.name, len(cands), max_crossing, MIN_REMAINING,
                             ", ".join(c.layer for c in cands) or "none", n, _nested_hint(model)))
    where = [c.fraction for c in cands] if positions is None else [float(p) for p in positions(cands)]
    chosen: List[CutPoint] = []
    start = 0
    for i in range(n):
        target = (i + 1) / (n + 1)
        pool = [j for j in range(start, len(cands) - (n - i - 1))
                if not chosen or chosen[-1].nodes < cands[j].nodes]
        if not pool:
            raise ModelError("model {!r}: cannot place {} nested exits among its cut points ({})".format(
                model.name, n, ", ".join(c.layer for c in cands)))
        j = min(pool, key=lambda j: (abs(where[j] - target), j))
        chosen.append(cands[j])
        start = j + 1
    return chosen


def named_cut_points(model, layers: Sequence[str], max_crossing: int = 1) -> List[CutPoint]:
    """The cuts after the named layers, in depth order; a missing layer or a bad cut is a ModelError."""
    _check_model(model)
    g = _CutGraph(model)
    by_layer: Dict[str, List[Any]] = {}
    for n in g.nodes:
        by_layer.setdefault(n.operation.name, []).append(n)
    cuts = []
    for name in layers:
        nodes = by_layer.get(name)
        if not nodes:
            valid = [c.layer for c in _representatives(g, [c for c in g.all_cuts()
                                                           if g.problem(c, max_crossing) is None])]
            raise ModelError("model {!r} has no layer named {!r}; valid cut points include: {}{}".format(
                model.name, name, ", ".join(valid[:12]) + (" ..." if len(valid) > 12 else ""),
                _nested_hint(model)))
        if len(nodes) > 1 or len(nodes[0].outputs) > 1:
            raise ModelError("layer {!r} is used {} times or has several outputs; cut after a layer with one "
                             "output used once".format(name, len(nodes)))
        cp = g.cut(nodes[0], 0)
        why = g.problem(cp, max_crossing)
        if why:
            raise ModelError("cannot attach an exit after layer {!r}: {}".format(name, why))
        cuts.append(cp)
    cuts.sort(key=lambda c: (len(c.nodes), c.flops_before))
    for a, b in zip(cuts, cuts[1:]):
        if not a.nodes < b.nodes:
            raise ModelError("exits after {!r} and {!r} are on parallel branches; exits must follow one another "
                             "in depth".format(a.layer, b.layer))
    return cuts


@dataclass(frozen=True)
class ExitsResult:
    model: Any                            # the multi-exit keras.Model
    cuts: Tuple[CutPoint, ...]
    report: Dict[str, Any]


def attach_exits(model, options: ExitOptions, data, progress: Optional[Progress] = None,
                 positions: Optional[Positions] = None) -> ExitsResult:
    """The public verb: find cut points, build and train heads (backbone frozen), return the multi-exit model.
    data: an edgekit.data.Dataset (options.data_path, when set, is loaded instead). positions: how `auto:N` with
    place "latency" measures where each cut is (convert passes exit_latency.latency_positions)."""
    options.check()
    _check_model(model)
    if options.data_path:
        data = load_data(options.data_path)
    check_input_shape(data.x, (None,) + tuple(model.inputs[0].shape[1:]), "exit training data " + data.source)
    placed: Dict[str, float] = {}
    if options.auto and options.place == "latency":
        if positions is None:
            raise ConfigError("exit placement 'latency' needs the prefix latencies measured (convert measures them)")

        def measured(cands: Sequence[CutPoint]) -> List[float]:
            got = positions(cands)
            placed.update({c.layer: round(float(p), 4) for c, p in zip(cands, got)})
            return got
        cuts = choose_auto(model, options.auto, options.max_crossing, measured)
    elif options.auto:
        cuts = choose_auto(model, options.auto, options.max_crossing)
    else:
        cuts = named_cut_points(model, options.layers, options.max_crossing)
    new, report = build_and_train(model, cuts, options, data, progress or (lambda d, t, s: None))
    report["placement"] = {"by": options.place if options.auto else "layer names",
                           "latency_fraction_of_prefix": placed or None}
    return ExitsResult(model=new, cuts=tuple(cuts), report=report)


def exits_table(report: Dict[str, Any]) -> str:
    """The per-exit report as a text table (for the CLI)."""
    rows = [("exit", "after layer", "FLOPs to exit", "of full", "head FLOPs", "head/stage", "trained by",
             "epochs", "val acc", "agree w/ final")]
    pct = lambda v: "-" if v is None else "{:.1%}".format(v)   # noqa: E731
    for e in report["exits"]:
        rows.append((e["name"], e["cut"] or "-", "{:.2f}M".format(e["flops_to_exit"] / 1e6),
                     pct(e["fraction_of_full"]), "{:.3f}M".format(e["head_flops"] / 1e6),
                     pct(e["head_fraction_of_stage"]), e["trained_by"] or "-",
                     "-" if e["epochs"] is None else str(e["epochs"]), pct(e["val_accuracy"]),
                     pct(e["val_agreement"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["ExitOptions", "CutPoint", "ExitsResult", "attach_exits", "find_cut_points", "choose_auto",
           "named_cut_points", "exits_table"]
