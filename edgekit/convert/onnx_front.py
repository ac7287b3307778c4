"""The ONNX front end: split at the ONNX level (onnx_split.py), onnx2tf per stage (onnx.py, offline, in a child
process) -> the stages, each a SavedModel the converter builds from. Interfaces are channels-last (NHWC).
Needs onnx, onnxruntime and onnx2tf (the optional [onnx] extra)."""
import contextlib
import tempfile
from typing import Callable, Iterator, List, Tuple

from edgekit.convert.onnx import onnx_report, onnx_to_saved_models
from edgekit.convert.onnx_split import split_onnx
from edgekit.convert.stages import PARITY_SAMPLES, Front, Stage, check_parity
from edgekit.data import Dataset
from edgekit.errors import ModelError
from edgekit.manifest import InputSpec, TensorSpec
from edgekit.rungs import RANGE_SAMPLES

ADAPTIVE = "adaptive"


def exits_and_notes(opts, target, precision: str) -> Tuple[Tuple[str, ...], str, List[str]]:
    """ONNX models do not load as Keras models (onnx2tf builds TensorFlow graphs): what needs one is said, not done.
    Returns the exit tensor names, the precision the stages are built at, and the notes for the report."""
    exits = opts.exits                                 # ExitOptions: layer names = exit tensor names here
    if exits is not None and exits.auto:
        raise ModelError("--exits auto:N attaches and trains exit heads, which needs a Keras model; {} is ONNX and "
                         "does not load as one: name the exit tensors (--exits a,b,c)".format(opts.model_path))
    names = tuple(opts.onnx_exits) or tuple((exits.layers if exits is not None else ()) or ())
    prune = sorted(k for k, v in vars(opts).items() if k.startswith("prune") and v)
    notes = ["pruning ({}) needs a Keras model; {} is ONNX and does not load as one: not pruned".format(
        ", ".join(prune), opts.model_path)] if prune else []
    if precision == ADAPTIVE:
        precision = target.default_precision
        notes.append("adaptive precision needs a Keras model; {} is ONNX and does not load as one: every stage is "
                     "{} (the target's default)".format(opts.model_path, precision))
    return names, precision, notes


@contextlib.contextmanager
def onnx_front(opts, target, precision: str, calib: Dataset, step: Callable[[int, int, str], None]) -> Iterator[Front]:
    """The stages live in a temporary directory (their SavedModels) until the block ends."""
    exit_names, precision, notes = exits_and_notes(opts, target, precision)
    split = split_onnx(opts.model_path, exit_names, opts.input_shape)
    x = split.to_bundle(calib.x, "calibration data " + opts.calib_path)
    float_out = list(split.values(x, split.exit_names).values())          # onnxruntime on the whole model
    split_err = check_parity(split.chained(x[:PARITY_SAMPLES]), [o[:PARITY_SAMPLES] for o in float_out],
                             "chained ONNX stages")
    step(1, 1, "split: {} ONNX stages".format(len(split.stages)))
    feeds = split.values(x[:RANGE_SAMPLES], sorted({n for s in split.stages for n in s.input_names}
                                                   - {split.input_name}))
    feeds[split.input_name] = x[:RANGE_SAMPLES]
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as work:
        saved = onnx_to_saved_models(split, x, work)
        step(1, 1, "onnx2tf: {} SavedModels".format(len(saved)))
        stages = tuple(Stage(
            index=st.index, model=sm.path, input_names=st.input_names, carried_names=st.carried_names,
            exit_name=st.exit_name, inputs=tuple(TensorSpec(n, sm.inputs[n]) for n in st.input_names),
            outputs=tuple(TensorSpec(n, sm.outputs[n]) for n in st.carried_names + (st.exit_name,)), flops=st.flops)
            for st, sm in zip(split.stages, saved))
        yield Front(
            name=split.name, input=InputSpec(name=split.input_name, shape=split.bundle_shape, dtype="float32",
                                             preprocessing=split.preprocessing()),
            x=x, stages=stages, float_outputs=float_out, split_error=split_err,
            feeds=[{n: feeds[n] for n in st.input_names} for st in stages], precision=precision,
            report={"onnx": onnx_report(split, saved), "notes": notes})
