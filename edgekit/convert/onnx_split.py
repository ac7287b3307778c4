"""Load an ONNX model, check that onnx2tf can take it, and split it at its exits at the ONNX level.

Stage k maps the tensors carried from earlier stages (its frontier) to the next frontier plus exit k;
each stage is an ONNX sub-graph (onnx.utils.Extractor). Boundary tensors get manifest-safe names
(the input and exits keep their sanitized names, carried tensors become `c_<name>`).

Layout: ONNX models are channels-first (NCHW). Every tensor at a stage interface with rank >= 3 is
channels-last (NHWC) in the bundle; `OnnxSplit.to_bundle` / `values` give data in that layout.
Needs onnx, onnxruntime and numpy only (no TensorFlow, no onnx2tf import).
"""
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import DataError, ModelError

MIN_OPSET = 7
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
    score_name: Optional[str] = None  # no learned exit scores on the ONNX path


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
        sess = _session(self.model, list(names))
        src = np.ascontiguousarray(np.transpose(x, _inverse(channels_last_perm(x.ndim))))
        out = sess.run(list(names), {self.input_name: src})
        return {n: to_channels_last(v) for n, v in zip(names, out)}

    def chained(self, x: np.ndarray) -> List[np.ndarray]:
        """Every exit, running the ONNX stage sub-graphs one after the other (the split's parity check)."""
        env = {self.input_name: np.ascontiguousarray(np.transpose(x, _inverse(channels_last_perm(x.ndim))))}
        exits = []
        for st in self.stages:
            outs = [o.name for o in st.model.graph.output]
            res = _session(st.model, outs).run(outs, {i.name: env[i.name] for i in st.model.graph.input})
            env.update(zip(outs, res))
            exits.append(to_channels_last(env[st.exit_name]))
        return exits


def channels_last_perm(rank: int) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, rank)) + (1,) if rank >= 3 else tuple(range(rank))


def _inverse(perm: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def to_channels_last(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(v, channels_last_perm(v.ndim))) if v.ndim >= 3 else v


def _session(model, outputs: List[str]):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    infos = {v.name: v for v in m.graph.value_info}
    for name in outputs:
        if name not in have:
            m.graph.output.append(infos[name] if name in infos else onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _sanitize(name: str, prefix: str = "") -> str:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "t"
    s = prefix + s
    if not re.match(r"[A-Za-z]", s):
        s = "t_" + s
    return s[:MAX_NAME]


# -- loading and checks -----------------------------------------------------------------------------
def _load(path: str):
    import onnx

    if not os.path.isfile(path):
        raise ModelError("model file not found: {}".format(path))
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError("{} is not a readable ONNX model: {}".format(path, first[:300]))
    if not len(model.graph.node) or not len(model.graph.output) or not len(model.opset_import):
        raise ModelError("{} is not a readable ONNX model: no graph nodes, outputs or opset".format(path))
    _check_ops(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError("{} is not a valid ONNX model: {}".format(path, first[:300]))
    return model


def _check_ops(model, path: str) -> None:
    import onnx.defs

    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ModelError("{}: ONNX opset {} cannot be converted; allowed: opsets {} to {}".format(
            path, opset, MIN_OPSET, newest))
    spec = importlib.util.find_spec("onnx2tf")       # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("ONNX input needs onnx2tf; install edgekit's 'onnx' extra (pip install 'edgekit[onnx]')")
    ops_dir = os.path.join(list(spec.submodule_search_locations)[0], "ops")
    bad = sorted({"{} (domain {})".format(n.op_type, n.domain) if n.domain not in ("", "ai.onnx") else n.op_type
                  for n in model.graph.node
                  if n.domain not in ("", "ai.onnx") or not os.path.isfile(os.path.join(ops_dir, n.op_type + ".py"))})
    if bad:
        raise ModelError("{}: onnx2tf cannot convert op {}; allowed: the standard ONNX ops onnx2tf implements "
                         "({} of them)".format(path, ", ".join(bad), len(os.listdir(ops_dir))))


def _dims(value_info) -> List[object]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _input_dims(inp, path: str, input_shape: Optional[Sequence[int]]) -> List[object]:
    """The input's dims with every size after the batch fixed (from the model or --input-shape)."""
    dims = _dims(inp)
    if not dims and input_shape is not None:           # no shape recorded at all: --input-shape gives the rank
        dims = [None] * (len(input_shape) + 1)
    if not dims:
        raise ModelError("{}: input {!r} has no recorded shape; pass --input-shape with its sizes after the batch "
                         "dimension, in the model's layout".format(path, inp.name))
    shown = "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in dims) + ")"
    given = ",".join(map(str, input_shape or ()))
    if input_shape is not None:
        if len(input_shape) != len(dims) - 1 or any(int(d) <= 0 for d in input_shape):
            raise ModelError("--input-shape {}: expected {} positive sizes (the input {} {} without its batch "
                             "dimension, in the model's own layout)".format(given, len(dims) - 1, inp.name, shown))
        for i, (have, want) in enumerate(zip(dims[1:], input_shape)):
            if isinstance(have, int) and have != int(want):
                raise ModelError("--input-shape {}: dimension {} of input {!r} {} is fixed at {}".format(
                    given, i + 1, inp.name, shown, have))
        return dims[:1] + [int(d) for d in input_shape]
    if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
        raise ModelError("{}: input {!r} has dynamic dimensions {}; pass --input-shape with the sizes after the "
                         "batch dimension, in the model's layout (e.g. {})".format(
                             path, inp.name, shown, ",".join("3" if i == 0 else "224" for i in range(len(dims) - 1))))
    return dims


def _fix_input(model, path: str, input_shape: Optional[Sequence[int]]):
    """The one float input gets a dynamic batch and static other dims; shapes are inferred again."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError("{}: the model has {} inputs ({}); allowed: exactly one input".format(
            path, len(inputs), ", ".join(i.name for i in inputs)))
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError("{}: input {!r} has element type {}; allowed: float32".format(
            path, inp.name, onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)))
    dims = _input_dims(inp, path, input_shape)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    shape = next(i for i in new.graph.input if i.name == inp.name).type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "N"
    for d in dims[1:]:
        shape.dim.add().dim_value = int(d)
    for out in new.graph.output:                       # re-inferred below
        out.type.tensor_type.ClearField("shape")
    del new.graph.value_info[:]
    try:
        new = onnx.shape_inference.infer_shapes(new, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError("{}: shape inference fails with input shape (N, {}): {}".format(
            path, ", ".join(map(str, dims[1:])), (str(exc).splitlines() or ["?"])[0][:300]))
    fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    _check_batch(model, new, inp.name, fixed_batch, dims, path)
    return new, inp.name, (None,) + tuple(int(d) for d in dims[1:])


def _ort_message(exc: Exception) -> str:
    """onnxruntime's first line without its source location ('... FAIL : /src/x.cc:181 f(...) What went wrong')."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    m = re.search(r"\) ([A-Z][^()]*)$", first)
    return (m.group(1) if m else first)[:300]


def _check_batch(original, new, name: str, fixed_batch: Optional[int], dims: List[object], path: str) -> None:
    """The prepared model must give, for a batch of 3, what the original gives sample by sample."""
    rng = np.random.default_rng(0)
    x = rng.random((3,) + tuple(int(d) for d in dims[1:]), dtype=np.float32)
    outs = [o.name for o in new.graph.output]
    try:
        got = _session(new, outs).run(outs, {name: x})
        if fixed_batch is None:
            return
        if fixed_batch != 1:
            raise ModelError("{}: input {!r} has a fixed batch of {}; allowed: a dynamic batch or batch 1 "
                             "(re-export with a dynamic batch axis)".format(path, name, fixed_batch))
        ref_sess = _session(original, outs)
        ref = [np.concatenate(r, axis=0) for r in zip(*[ref_sess.run(outs, {name: x[i:i + 1]}) for i in range(3)])]
        ok = all(g.shape == r.shape and np.allclose(g, r, atol=1e-4, rtol=1e-4) for g, r in zip(got, ref))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        if fixed_batch is None:
            raise ModelError("{}: onnxruntime cannot run the model: {}".format(path, _ort_message(exc)))
        ok = False
    if not ok:
        raise ModelError("{}: input {!r} has a fixed batch of 1 and the graph does not run per sample with another "
                         "batch size (e.g. a Reshape to a constant shape); allowed: models that run with a "
                         "dynamic batch (re-export with dynamic_axes={{{!r}: {{0: 'N'}}}})".format(path, name, name))


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
    shapes = {v.name: _dims(v) for v in list(model.graph.value_info) + list(model.graph.output)}
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
    import onnx.utils

    model = _load(path)
    model, input_name, source_shape = _fix_input(model, path, input_shape)
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
