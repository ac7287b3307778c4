"""Time per operator of each stage of a bundle: which op a stage's time goes to.

The Python interpreters expose no op profiler, so this is the equivalent done by hand: every operator of a
stage is cut out into a one-op model (the op, its tensors and buffers, the op's non-constant inputs as the model
inputs), fed the values that op sees when the stage runs on a real sample, and invoked alone. The one-op models
of a stage and the whole stage are timed call by call in turn (so a busy machine slows them alike); each median
is printed with the op's share of the sum of the op medians. An op timed alone misses what the kernels share in
the whole stage (XNNPACK fuses a run of ops into one partition; caches stay warm between ops) and includes the
fixed cost of one invoke, so the sum and the whole stage differ, and both are printed.

kernel: "xnnpack" when the default delegate took the one-op model, else "builtin" (TFLite's own kernels).
builtin_ms: the same op with the default delegate off (ai_edge_litert and tensorflow.lite only).

Reads and writes the flatbuffer with the schema module that ships with ai_edge_litert (else tensorflow's);
tflite_runtime alone has none.
"""
import copy
import warnings
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import BundleError, EdgekitError, first_line
from edgekit.runtime.cost_protocol import CostProtocol, measure_candidates
from edgekit.runtime.guard import stage_bytes
from edgekit.runtime.interpreter import Backend


class OpTime(NamedTuple):
    index: int                   # position in the stage's execution order
    op: str                      # TFLite builtin name
    dtype: str                   # input dtype(s) -> output dtype, e.g. "float32->int8"
    kernel: str                  # "xnnpack" or "builtin"
    ms: float                    # median of the op alone, default kernels
    builtin_ms: Optional[float]  # median with the default delegate off (None: not available)
    share: float                 # ms / sum of the stage's op ms


class StageOps(NamedTuple):
    stage: int
    file: str
    precision: str
    stage_ms: float              # the whole stage, same protocol
    ops: Tuple[OpTime, ...]

    @property
    def ops_ms(self) -> float:
        return float(sum(o.ms for o in self.ops))


_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
          10: "float64"}


def _schema() -> Tuple[Any, Any]:
    """(flatbuffer_utils, schema module)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils as fbu
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
            from tensorflow.lite.tools import flatbuffer_utils as fbu
        except ImportError:
            raise EdgekitError("a per-op profile needs the TFLite flatbuffer schema of ai-edge-litert or tensorflow; "
                               "neither is installed here (tflite-runtime has none)")
    return fbu, schema


def one_op_models(blob: bytes) -> List[Tuple[str, str, bytes, Tuple[int, ...]]]:
    """Per op of subgraph 0, in execution order: (op name, dtypes, one-op model bytes, its input tensor indices
    in the stage)."""
    fbu, schema = _schema()
    model = fbu.read_model_from_bytearray(bytearray(blob))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]

    def const(t: int) -> bool:
        data = model.buffers[sg.tensors[t].buffer].data
        return data is not None and len(data) > 0

    out = []
    for op in sg.operators:
        ins = tuple(int(t) for t in op.inputs if t >= 0 and not const(int(t)))
        outs = [int(t) for t in op.outputs if t >= 0]
        one = copy.copy(model)
        one.subgraphs = [copy.copy(sg)]
        one.subgraphs[0].operators, one.subgraphs[0].inputs, one.subgraphs[0].outputs = [op], list(ins), outs
        one.signatureDefs = []
        code = fbu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        dt = "{}->{}".format(",".join(sorted(set(_TYPES.get(sg.tensors[t].type, "?") for t in ins))) or "-",
                             ",".join(sorted(set(_TYPES.get(sg.tensors[t].type, "?") for t in outs))))
        out.append((names.get(code, "CUSTOM"), dt, bytes(fbu.convert_object_to_bytearray(one)), ins))
    return out


def delegated_alone(backend: Backend, blob: bytes) -> List[bool]:
    """Per op of subgraph 0: whether the default delegate (XNNPACK) takes it when it runs alone."""
    return [_delegated(_interpreter(backend, one, builtin=False)) for _, _, one, _ in one_op_models(blob)]


def _delegated(interp: Any) -> bool:
    """A one-op model the delegate took has a second node: the delegate's."""
    return len(interp._get_ops_details()) > 1


def _interpreter(backend: Backend, blob: bytes, builtin: bool) -> Any:
    kwargs = {"model_content": blob, "num_threads": 1}
    if builtin:
        kinds = getattr(__import__(backend.interpreter.__module__, fromlist=["OpResolverType"]), "OpResolverType",
                        None)
        if kinds is None:
            return None
        kwargs["experimental_op_resolver_type"] = kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = backend.interpreter(**kwargs)
    interp.allocate_tensors()
    return interp


def _all_tensors(backend: Backend, blob: bytes, feed: Sequence[np.ndarray]) -> Any:
    """The stage run once on feed (its inputs in subgraph order) with every intermediate tensor kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # preserve_all_tensors warns that it is for debugging
        interp = backend.interpreter(model_content=blob, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    for d, v in zip(interp.get_input_details(), feed):
        interp.set_tensor(d["index"], np.asarray(v, dtype=d["dtype"]).reshape(d["shape"]))
    interp.invoke()
    return interp


def _median_ms(interps: Sequence[Any], rounds: int, warmup: int) -> List[float]:
    """Each interpreter's median invoke time (ms) under the one cost protocol, for a fixed number of rounds."""
    proto = CostProtocol(warmup=warmup, chunk=rounds, min_rounds=rounds, max_rounds=rounds, max_seconds=float("inf"))
    costs = measure_candidates({k: it.invoke for k, it in enumerate(interps)}, proto)
    return [costs[k].median_ms for k in range(len(interps))]


def profile_stage(backend: Backend, blob: bytes, feed: Sequence[np.ndarray], rounds: int = 300,
                  warmup: int = 30) -> Tuple[float, List[OpTime]]:
    """(whole-stage median ms, per-op times) for one stage; feed: its inputs (batch 1) in subgraph input order."""
    full = _all_tensors(backend, blob, feed)
    whole = _interpreter(backend, blob, builtin=False)
    for d, v in zip(whole.get_input_details(), feed):
        whole.set_tensor(d["index"], np.asarray(v, dtype=d["dtype"]).reshape(d["shape"]))
    ops = one_op_models(blob)
    default, builtin, kernels = [], [], []
    for k, (name, _, one, ins) in enumerate(ops):
        for kind, store in ((False, default), (True, builtin)):
            try:
                it = _interpreter(backend, one, kind)
            except (ValueError, RuntimeError) as exc:     # e.g. control flow that needs its other subgraphs
                raise EdgekitError("op {} ({}) cannot run on its own in {}: {}; allowed: stages of single-subgraph "
                                   "ops".format(k, name, backend.name, first_line(exc)))
            if it is not None:
                for d, t in zip(it.get_input_details(), ins):
                    it.set_tensor(d["index"], full.get_tensor(t))
            store.append(it)
        kernels.append("xnnpack" if _delegated(default[-1]) else "builtin")
    timed = [whole] + default + [b for b in builtin if b is not None]
    ms = _median_ms(timed, rounds, warmup)
    op_ms = ms[1:1 + len(ops)]
    b_ms = ms[1 + len(ops):] if len(timed) == 1 + 2 * len(ops) else [None] * len(ops)
    total = sum(op_ms) or 1.0
    return ms[0], [OpTime(i, name, dt, kern, m, b, m / total)
                   for i, ((name, dt, _, _), kern, m, b) in enumerate(zip(ops, kernels, op_ms, b_ms))]


def profile_ops(runner: Any, x: np.ndarray, rounds: int = 300) -> List[StageOps]:
    """Per stage of an EarlyExitRunner's bundle: per-op times on sample x[:1] (each stage fed what the stage
    before it hands on for that sample)."""
    result = []
    for k, step, values, _ in runner.chain(x[:1]):
        st = runner.manifest.stages[k]
        try:                     # the bytes profiled are the bytes the manifest names, packed 4-bit weights restored
            blob = stage_bytes(runner.bundle_dir, st)
        except BundleError as exc:
            raise BundleError("stage file {} changed since the bundle was loaded; load it again ({})".format(
                st.file, exc))
        order = _subgraph_inputs(runner.backend, blob, step.call.input_names)
        stage_ms, ops = profile_stage(runner.backend, blob, [values[i] for i in order], rounds)
        result.append(StageOps(k, st.file, st.precision, stage_ms, tuple(ops)))
    return result


def _subgraph_inputs(backend: Backend, blob: bytes, names: Sequence[str]) -> List[int]:
    """For each subgraph input (in order), its position among the signature inputs `names`."""
    interp = backend.interpreter(model_content=blob)
    sig = interp.get_signature_list()
    if not sig:
        return list(range(len(names)))
    runner = interp.get_signature_runner()
    by_tensor = {int(d["index"]): n for n, d in runner.get_input_details().items()}
    return [list(names).index(by_tensor[int(d["index"])]) for d in interp.get_input_details()]


def ops_table(stages: Sequence[StageOps]) -> str:
    """One table per stage: index, op, dtype, kernel, ms, builtin ms, share."""
    lines = []
    for s in stages:
        lines.append("stage {} ({}, {}): whole stage {:.4f} ms, ops timed alone sum to {:.4f} ms".format(
            s.stage, s.file, s.precision, s.stage_ms, s.ops_ms))
        lines.append("  {:>3}  {:<18} {:<22} {:<8} {:>9} {:>11} {:>6}".format(
            "#", "op", "dtype", "kernel", "ms", "builtin ms", "share"))
        for o in s.ops:
            lines.append("  {:>3}  {:<18} {:<22} {:<8} {:>9.4f} {:>11} {:>5.1%}".format(
                o.index, o.op, o.dtype, o.kernel, o.ms, "-" if o.builtin_ms is None else "{:.4f}".format(
                    o.builtin_ms), o.share))
    return "\n".join(lines)
