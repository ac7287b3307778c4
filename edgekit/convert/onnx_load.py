"""Load an ONNX model for splitting: the file, its opset and ops (what onnx2tf takes), and its input with dynamic
sizes fixed (checked against the original with onnxruntime). Needs onnx and onnxruntime, not TensorFlow."""
import importlib.util
import os
import re
from typing import List, Optional, Sequence

import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort

from edgekit.errors import ModelError, first_line

MIN_OPSET = 7


def load_onnx(path: str, input_shape: Optional[Sequence[int]] = None):
    """(model with its input sizes fixed, input name, bundle input shape (None, ...) in the model's layout)."""
    return _fix_input(_load(path), path, input_shape)


def ort_session(model, outputs: List[str]):
    """An onnxruntime CPU session that also returns the named intermediate tensors."""
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


def _load(path: str):
    if not os.path.isfile(path):
        raise ModelError("model file not found: {}".format(path))
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ModelError("{} is not a readable ONNX model: {}".format(path, first_line(exc, 300)))
    if not len(model.graph.node) or not len(model.graph.output) or not len(model.opset_import):
        raise ModelError("{} is not a readable ONNX model: no graph nodes, outputs or opset".format(path))
    _check_ops(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises many types
        raise ModelError("{} is not a valid ONNX model: {}".format(path, first_line(exc, 300)))
    return model


def _check_ops(model, path: str) -> None:
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


def value_dims(value_info) -> List[object]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _input_dims(inp, path: str, input_shape: Optional[Sequence[int]]) -> List[object]:
    """The input's dims with every size after the batch fixed (from the model or --input-shape)."""
    dims = value_dims(inp)
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
            path, ", ".join(map(str, dims[1:])), first_line(exc, 300, "?")))
    fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    _check_batch(model, new, inp.name, fixed_batch, dims, path)
    return new, inp.name, (None,) + tuple(int(d) for d in dims[1:])


def _ort_message(exc: Exception) -> str:
    """onnxruntime's first line without its source location ('... FAIL : /src/x.cc:181 f(...) What went wrong')."""
    first = first_line(exc)
    m = re.search(r"\) ([A-Z][^()]*)$", first)
    return (m.group(1) if m else first)[:300]


def _check_batch(original, new, name: str, fixed_batch: Optional[int], dims: List[object], path: str) -> None:
    """The prepared model must give, for a batch of 3, what the original gives sample by sample."""
    rng = np.random.default_rng(0)
    x = rng.random((3,) + tuple(int(d) for d in dims[1:]), dtype=np.float32)
    outs = [o.name for o in new.graph.output]
    try:
        got = ort_session(new, outs).run(outs, {name: x})
        if fixed_batch is None:
            return
        if fixed_batch != 1:
            raise ModelError("{}: input {!r} has a fixed batch of {}; allowed: a dynamic batch or batch 1 "
                             "(re-export with a dynamic batch axis)".format(path, name, fixed_batch))
        ref_sess = ort_session(original, outs)
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
