"""Split an ONNX model at its exits at the ONNX level (loading and the onnx2tf checks: convert/onnx_load.py).

Stage k maps the tensors carried from earlier stages (its frontier) to the next frontier plus exit k;
each stage is an ONNX sub-graph (onnx.utils.Extractor). Boundary tensors get manifest-safe names
(the input and exits keep their sanitized names, carried tensors become `c_<name>`).

Layout: ONNX models are channels-first (NCHW). Every tensor at a stage interface with rank >= 3 is
channels-last (NHWC) in the bundle; `OnnxSplit.to_bundle` / `values` give data in that layout.
Needs onnx, onnxruntime and numpy only (no TensorFlow, no onnx2tf import).
"""
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx.utils

from edgekit.convert.onnx_load import load_onnx, ort_session, value_dims
from edgekit.errors import DataError, ModelError

MAX_NAME = 100
CONST_OPS = ("Constant", "ConstantOfShape")


@dataclass(frozen=True)
class OnnxStage:
    index: int
    model: object                   # onnx.ModelProto of this stage (inputs/outputs use manifest names)
    input_names: Tuple[str, ...]    # every tensor the stage takes (manifest order)
    carried_names: Tuple[str, ...]  # tensors handed to the next stage
    exit_name: str
    passthrough: Tuple[str, ...]    # inputs handed on unchanged (not in the ONNX sub-graph)
    flops: int


@dataclass(frozen=True)
class OnnxSplit:
    name: str
    model: object                   # the prepared full model (dynamic batch, renamed boundaries)
    input_name: str
    source_shape: Tuple[Optional[int], ...]   # the ONNX input shape (None = batch)
    stages: Tuple[OnnxStage, ...]
    exit_names: Tuple[str, ...]
    original_names: Dict[str, str]            # manifest name -> ONNX tensor name

    @property
    def bundle_shape(self) -> Tuple[Optional[int], ...]:
        return tuple(self.source_shape[i] for i in channels_last_perm(len(self.source_shape)))

    def preprocessing(self) -> Dict[str, object]:
        """What the manifest says about the input layout (the runtime transposes source-layout inputs once)."""
        rank = len(self.source_shape)
        if rank < 3:
            return {"layout": "none"}
        names = {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}[rank]
        return {"layout": names[1], "source_layout": names[0], "source_shape": list(self.source_shape),
                "from_source": list(channels_last_perm(rank))}

    def to_bundle(self, x: np.ndarray, what: str) -> np.ndarray:
        """Data given in the ONNX layout or in the bundle layout -> float32 in the bundle layout."""
        x = np.asarray(x)
        sample_src, sample_dst = self.source_shape[1:], self.bundle_shape[1:]
        if x.ndim == len(self.source_shape) and tuple(x.shape[1:]) == tuple(sample_dst):
            return x.astype(np.float32)
        if x.ndim == len(self.source_shape) and tuple(x.shape[1:]) == tuple(sample_src):
            return np.ascontiguousarray(np.transpose(x, channels_last_perm(x.ndim))).astype(np.float32)
        raise DataError("{}: data has shape {}, the ONNX model input {!r} expects (N, {}) or, channels-last, "
                        "(N, {})".format(what, tuple(x.shape), self.input_name, ", ".join(map(str, sample_src)),
                                         ", ".join(map(str, sample_dst))))

    def values(self, x: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run the full model in onnxruntime on bundle-layout x; the named tensors, in the bundle layout."""
        sess = ort_session(self.model, list(names))
        src = np.ascontiguousarray(np.transpose(x, _inverse(channels_last_perm(x.ndim))))
        out = sess.run(list(names), {self.input_name: src})
        return {n: to_channels_last(v) for n, v in zip(names, out)}

    def chained(self, x: np.ndarray) -> List[np.ndarray]:
        """Every exit, running the ONNX stage sub-graphs one after the other (the split's parity check)."""
        env = {self.input_name: np.ascontiguousarray(np.transpose(x, _inverse(channels_last_perm(x.ndim))))}
        exits = []
        for st in self.stages:
            outs = [o.name for o in st.model.graph.output]
            res = ort_session(st.model, outs).run(outs, {i.name: env[i.name] for i in st.model.graph.input})
            env.update(zip(outs, res))
            exits.append(to_channels_last(env[st.exit_name]))
        return exits


def channels_last_perm(rank: int) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, rank)) + (1,) if rank >= 3 else tuple(range(rank))


def _inverse(perm: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def to_channels_last(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(v, channels_last_perm(v.ndim))) if v.ndim >= 3 else v


def _sanitize(name: str, prefix: str = "") -> str:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "t"
    s = prefix + s
    if not re.match(r"[A-Za-z]", s):
        s = "t_" + s
    return s[:MAX_NAME]


# -- splitting --------------------------------------------------------------------------------------
def _pick_exits(model, exits: Sequence[str], path: str) -> List[str]:
    outputs = [o.name for o in model.graph.output]
    if not exits:
        return outputs
    produced = {o for n in model.graph.node for o in n.output}
    missing = [e for e in exits if e not in produced]
    if missing:
        raise ModelError("{}: exit {} not in the graph; allowed: the graph outputs ({}) or any tensor a node "
                         "produces".format(path, ", ".join(repr(m) for m in missing), ", ".join(outputs)))
    if len(set(exits)) != len(exits):
        raise ModelError("--exits {}: an exit is named twice".format(",".join(exits)))
    return list(exits)


def _stage_of_nodes(model, input_name: str, exits: List[str], path: str) -> Tuple[Dict[int, int], Dict[str, int]]:
    """Node index -> stage (ancestors of exit k not owned by an earlier exit); tensor -> producing node."""
    nodes = model.graph.node
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    owner: Dict[int, int] = {}
    for k, e in enumerate(exits):
        stack, seen = [e], set()
        while stack:
            i = producer.get(stack.pop())
            if i is None or i in seen:
                continue
            seen.add(i)
            owner.setdefault(i, k)
            stack.extend(nodes[i].input)
    dynamic = {input_name}
    for n in nodes:                                   # nodes are topologically sorted (checked by the checker)
        if any(t in dynamic for t in n.input):
            dynamic.update(o for o in n.output if o)
    empty = [exits[k] for k in range(1, len(exits))
             if not any(s == k and any(o in dynamic for o in nodes[i].output) for i, s in owner.items())]
    if empty:
        raise ModelError("{}: exits must be in depth order with work between them; {} adds nothing after the "
                         "exit before it (name the exits in depth order with --exits)".format(path, ", ".join(empty)))
    return {i: s for i, s in owner.items() if any(o in dynamic for o in nodes[i].output)}, producer


def _frontiers(model, input_name: str, exits: List[str], path: str) -> List[Tuple[List[str], List[str]]]:
    """For each stage: (input tensors, carried tensors), both in graph order."""
    owner, producer = _stage_of_nodes(model, input_name, exits, path)
    nodes = model.graph.node
    made_in = {input_name: -1}
    made_in.update({o: owner[i] for i, n in enumerate(nodes) if i in owner for o in n.output if o})
    last_use: Dict[str, int] = {}
    for i, k in owner.items():
        for t in nodes[i].input:
            if t in made_in:
                last_use[t] = max(last_use.get(t, -1), k)
    for k, e in enumerate(exits):                     # an exit read by a later stage is carried too
        last_use.setdefault(e, k)
    order = {input_name: -1}
    order.update({o: i for i, n in enumerate(nodes) for o in n.output})
    result = []
    for k in range(len(exits)):
        ins = sorted((t for t, p in made_in.items() if p < k and last_use.get(t, -1) >= k), key=order.get)
        carried = sorted((t for t, p in made_in.items() if p <= k and last_use.get(t, -1) > k), key=order.get)
        bad = [t for t in carried if t in exits]
        if bad:
            raise ModelError("{}: exit {} is read by a later stage; allowed: exits that only leave the "
                             "network".format(path, ", ".join(bad)))
        result.append((ins, carried))
    return result


def _rename(model, mapping: Dict[str, str]) -> None:
    g = model.graph
    for n in g.node:
        for i, t in enumerate(n.input):
            if t in mapping:
                n.input[i] = mapping[t]
        for i, t in enumerate(n.output):
            if t in mapping:
                n.output[i] = mapping[t]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name in mapping:
            vi.name = mapping[vi.name]


def _names(model, input_name: str, exits: List[str], carried: List[str]) -> Dict[str, str]:
    taken = {t for n in model.graph.node for t in list(n.input) + list(n.output)} | {input_name}
    mapping: Dict[str, str] = {}
    used = set()
    for t in [input_name] + exits + carried:
        base = _sanitize(t, "" if t == input_name or t in exits else "c_")
        name, i = base, 1
        while name in used or (name in taken and name != t):
            name, i = "{}_{}".format(base, i), i + 1
        used.add(name)
        mapping[t] = name
    return mapping


def _flops(model) -> int:
    """2 per multiply-accumulate of Conv, Gemm and MatMul; 1 per output element of Add/Mul/Sub."""
    shapes = {v.name: value_dims(v) for v in list(model.graph.value_info) + list(model.graph.output)}
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        out = shapes.get(n.output[0])
        if not out:
            continue
        elems = int(np.prod([d for d in out[1:] if isinstance(d, int)], dtype=np.int64))
        if n.op_type == "Conv" and n.input[1] in weights:
            total += 2 * elems * int(np.prod(weights[n.input[1]][1:], dtype=np.int64))
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in weights:
            w = weights[n.input[1]]
            transposed = any(a.name == "transB" and a.i == 1 for a in n.attribute)
            total += 2 * elems * int(w[-1] if transposed else w[0])
        elif n.op_type in ("Add", "Mul", "Sub"):
            total += elems
    return int(total)


def split_onnx(path: str, exits: Sequence[str] = (), input_shape: Optional[Sequence[int]] = None) -> OnnxSplit:
    """Load and check an ONNX model, then cut it into one ONNX sub-graph per exit."""
    model, input_name, source_shape = load_onnx(path, input_shape)
    exit_list = _pick_exits(model, exits, path)
    fronts = _frontiers(model, input_name, exit_list, path)
    carried_all = sorted({t for _, c in fronts for t in c if t != input_name}, key=lambda t: t)
    mapping = _names(model, input_name, exit_list, carried_all)
    _rename(model, mapping)
    extractor = onnx.utils.Extractor(model)
    stages = []
    for k, (ins, carried) in enumerate(fronts):
        ins_m = [mapping[t] for t in ins]
        carried_m = [mapping[t] for t in carried]
        passthrough = [t for t in carried_m if t in ins_m]
        sub = extractor.extract_model([t for t in ins_m], [t for t in carried_m if t not in passthrough]
                                      + [mapping[exit_list[k]]])
        used = {t for n in sub.graph.node for t in n.input}
        del_inputs = [i for i in sub.graph.input if i.name not in used and i.name in passthrough]
        for i in del_inputs:
            sub.graph.input.remove(i)
        stages.append(OnnxStage(index=k, model=sub, input_names=tuple(ins_m), carried_names=tuple(carried_m),
                                exit_name=mapping[exit_list[k]], passthrough=tuple(passthrough), flops=_flops(sub)))
    name = _sanitize(os.path.splitext(os.path.basename(path))[0])
    return OnnxSplit(name=name, model=model, input_name=mapping[input_name], source_shape=source_shape,
                     stages=tuple(stages), exit_names=tuple(mapping[e] for e in exit_list),
                     original_names={v: k for k, v in mapping.items()})
