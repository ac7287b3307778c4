"""Convert the ONNX stages of an OnnxSplit to TensorFlow SavedModels with onnx2tf, offline.

onnx2tf runs in a child process (`python -m edgekit.convert.onnx JOB`): importing it sets
CUDA_VISIBLE_DEVICES, the recursion limit, warning filters and random seeds, and none of that may leak
into the caller. The child runs in a temporary directory that holds the sample file onnx2tf would
otherwise download (`calibration_image_sample_data_20x128x128x3_float32.npy`, made from the user's
calibration data), and it refuses every outgoing connection, so the conversion never reaches the internet.

Each SavedModel has one signature, `serving_default`, whose inputs and outputs are the manifest names, with
every tensor of rank >= 3 channels-last. onnx2tf decides per tensor whether it keeps the ONNX layout; the
child finds out by comparing with onnxruntime on calibration samples and transposes where needed.
"""
import ctypes
import importlib.metadata as md
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import tensorflow as tf

from edgekit.errors import ModelError, first_line

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLES = 8
TIMEOUT_S = 1800
LAYOUT_RTOL = 1e-3          # of max(1, max |onnxruntime value|): a wrong layout misses by far more


@dataclass(frozen=True)
class SavedStage:
    index: int
    path: str                                       # SavedModel directory
    inputs: Dict[str, Tuple[Optional[int], ...]]    # manifest name -> shape (None = batch), channels-last
    outputs: Dict[str, Tuple[Optional[int], ...]]
    onnx2tf_layouts: Dict[str, str]                 # tensor -> "channels_last" | "onnx" (what onnx2tf made)
    max_abs_error: float                            # SavedModel vs onnxruntime on calibration samples
    network: str                                    # how the converter child was kept offline


def onnx_to_saved_models(split, x: np.ndarray, workdir: str, timeout_s: int = TIMEOUT_S) -> List[SavedStage]:
    """split: OnnxSplit; x: calibration data in the bundle layout. Writes into workdir (a temporary dir)."""
    names = sorted({n for st in split.stages for n in st.input_names + st.carried_names + (st.exit_name,)})
    np.savez(os.path.join(workdir, "samples.npz"), **split.values(x[:SAMPLES], [n for n in names
                                                                                 if n != split.input_name]),
             **{split.input_name: x[:SAMPLES]})
    _write_sample_images(x, workdir)
    job = {"stages": []}
    for st in split.stages:
        onnx.save(st.model, os.path.join(workdir, "stage_{}.onnx".format(st.index)))
        job["stages"].append({
            "index": st.index, "onnx": "stage_{}.onnx".format(st.index),
            "inputs": list(st.input_names), "passthrough": list(st.passthrough),
            "saved_model": os.path.join(workdir, "saved_model_{}".format(st.index))})
    with open(os.path.join(workdir, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    _run_child(workdir, timeout_s)
    with open(os.path.join(workdir, "result.json"), "r", encoding="utf-8") as f:
        result = json.load(f)
    if "error" in result:
        raise ModelError(result["error"])
    return [SavedStage(index=r["index"], path=r["saved_model"],
                       inputs={k: tuple(v) for k, v in r["inputs"].items()},
                       outputs={k: tuple(v) for k, v in r["outputs"].items()},
                       onnx2tf_layouts=r["layouts"], max_abs_error=r["max_abs_error"], network=result["network"])
            for r in result["stages"]]



def onnx_report(split, saved: Sequence[SavedStage]) -> Dict:
    """The report.json section of an ONNX conversion: layouts at every stage interface and what onnx2tf made."""
    return {
        "onnx2tf_version": md.version("onnx2tf"), "source_layout": split.preprocessing().get("source_layout"),
        "bundle_layout": split.preprocessing().get("layout"), "onnx_names": dict(split.original_names),
        "keras_model": False, "converter_network": saved[0].network if saved else None,
        "stages": [{"index": s.index, "inputs": {k: list(v) for k, v in s.inputs.items()},
                    "outputs": {k: list(v) for k, v in s.outputs.items()}, "onnx2tf_layouts": s.onnx2tf_layouts,
                    "saved_model_max_abs_error_vs_onnxruntime": s.max_abs_error} for s in saved],
    }

def _write_sample_images(x: np.ndarray, workdir: str) -> None:
    """onnx2tf loads this file instead of downloading MS-COCO samples (4-D, 3-channel inputs)."""
    if x.ndim != 4:
        return
    imgs = x[np.arange(20) % len(x)].astype(np.float32)
    c = imgs.shape[-1]
    imgs = imgs[..., [min(i, c - 1) for i in range(3)]] if c != 3 else imgs
    np.save(os.path.join(workdir, SAMPLE_FILE), np.ascontiguousarray(imgs))


def _run_child(workdir: str, timeout_s: int) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    log_path = os.path.join(workdir, "onnx2tf.log")
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "edgekit.convert.onnx", "job.json"], cwd=workdir, env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ModelError("onnx2tf did not finish within {} s".format(timeout_s))
    if os.path.isfile(os.path.join(workdir, "result.json")):
        return
    with open(log_path, "r", encoding="utf-8", errors="replace") as f:
        lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    raise ModelError("onnx2tf stopped (exit code {}): {}".format(proc.returncode, (lines or ["no output"])[-1][:300]))


# -- the child process (imports onnx2tf and TensorFlow) -----------------------------------------------
def _isolate_network() -> str:
    """Refuse every connection from Python; where allowed (root), also enter a new network namespace, which has
    no interface but a loopback that is down. Returns what was done, for the report."""
    done = "sockets refused"
    try:
        if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0:          # CLONE_NEWNET
            done = "network namespace (interfaces: {}), sockets refused".format(
                ",".join(name for _, name in socket.if_nameindex()))
    except (OSError, AttributeError):
        pass
    _refuse_network(socket)
    return done


def _refuse_network(socket) -> None:
    def refuse(*args, **kwargs):
        raise OSError("edgekit: the ONNX converter runs offline; a network connection was refused")

    socket.socket.connect = refuse          # type: ignore[method-assign]
    socket.socket.connect_ex = refuse       # type: ignore[method-assign]
    socket.create_connection = refuse       # type: ignore[assignment]
    socket.getaddrinfo = refuse             # type: ignore[assignment]


def _perm(rank: int) -> List[int]:
    return [0] + list(range(2, rank)) + [1] if rank >= 3 else list(range(rank))


def _inv(rank: int) -> List[int]:
    return [int(i) for i in np.argsort(_perm(rank))]


def _layout_options(tf_shape: Sequence[Optional[int]], last: Sequence[int]) -> List[str]:
    """Which layouts a TF tensor of tf_shape can be in, given its channels-last value shape `last`."""
    rank = len(last)
    src = [last[i] for i in _inv(rank)]
    opts = []
    if all(a is None or a == b for a, b in zip(list(tf_shape)[1:], list(last)[1:])):
        opts.append("channels_last")
    if rank >= 3 and all(a is None or a == b for a, b in zip(list(tf_shape)[1:], src[1:])):
        opts.append("onnx")
    return opts


def _to_tf(v, layout: str, tf):
    return tf.transpose(v, _inv(len(v.shape))) if layout == "onnx" else v


def _from_tf(v, layout: str, tf):
    return tf.transpose(v, _perm(len(v.shape))) if layout == "onnx" else v


def _match(model, ins: List[str], outs: List[str], samples, tf) -> Tuple[Dict[str, str], float]:
    """Try the possible input layouts; return the layouts (inputs and outputs) that reproduce onnxruntime."""
    in_opts = [_layout_options(t.shape, samples[n].shape) for t, n in zip(model.inputs, ins)]
    best = (None, float("inf"))
    for combo in itertools.product(*in_opts):
        got = model([_to_tf(tf.constant(samples[n]), lay, tf) for n, lay in zip(ins, combo)], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        layouts, worst = dict(zip(ins, combo)), 0.0
        for name, g in zip(outs, got):
            want = samples[name]
            errs = {lay: float(np.max(np.abs(_from_tf(g, lay, tf).numpy() - want)))
                    for lay in _layout_options(g.shape, want.shape)
                    if tuple(_from_tf(g, lay, tf).shape) == want.shape}
            lay = min(errs, key=errs.get) if errs else None
            layouts[name] = lay or "?"
            worst = max(worst, errs[lay] / max(1.0, float(np.max(np.abs(want)))) if lay else float("inf"))
        if worst < best[1]:
            best = (layouts, worst)
        if worst <= LAYOUT_RTOL:
            break
    return best


def _convert_stage(spec: Dict, samples, onnx2tf, tf) -> Dict:
    graph = onnx.load(spec["onnx"]).graph
    onnx_ins = [i.name for i in graph.input]
    outs = [o.name for o in graph.output]
    try:
        model = onnx2tf.convert(input_onnx_file_path=spec["onnx"], output_folder_path="tf_{}".format(spec["index"]),
                                disable_model_save=True, non_verbose=True)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - onnx2tf raises anything, or exits
        node = getattr(exc, "onnx_op_name", None)
        ops = {n.name: n.op_type for n in graph.node}
        where = " at node {} (op {})".format(node, ops[node]) if node in ops else ""
        first = first_line(exc)
        if "runs offline" in first:
            host = re.search(r"host='([^']+)'", first)
            raise ModelError("onnx2tf tried to reach {} while converting stage {} and the network connection was "
                             "refused (edgekit converts offline)".format(host.group(1) if host else "the internet",
                                                                          spec["index"]))
        raise ModelError("onnx2tf cannot convert stage {}{}: {}".format(spec["index"], where, first[:300]))
    tf_names = [t.name.split(":")[0] for t in model.inputs]          # onnx2tf keeps our (safe) names
    ins = tf_names if sorted(tf_names) == sorted(onnx_ins) else onnx_ins
    layouts, err = _match(model, ins, outs, samples, tf)
    if err > LAYOUT_RTOL:
        raise ModelError("stage {}: onnx2tf's TensorFlow graph differs from onnxruntime by {:.3g} (relative) in "
                         "every layout tried ({}); the conversion is not trustworthy".format(
                             spec["index"], err, layouts))
    names = spec["inputs"]
    specs = [tf.TensorSpec((None,) + samples[n].shape[1:], tf.float32, name=n) for n in names]

    def serve(*args):
        feed = dict(zip(names, args))
        got = model([_to_tf(feed[n], layouts[n], tf) for n in ins], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        res = {n: tf.identity(_from_tf(g, layouts[n], tf), name=n) for n, g in zip(outs, got)}
        res.update({n: tf.identity(feed[n], name=n) for n in spec["passthrough"]})
        return res

    fn = tf.function(serve, input_signature=specs)
    module = tf.Module()
    module.model = model
    module.serve = fn
    concrete = fn.get_concrete_function()
    got = concrete(*[tf.constant(samples[n]) for n in names])
    err = max(float(np.max(np.abs(v.numpy() - samples[k]))) for k, v in got.items())
    tf.saved_model.save(module, spec["saved_model"], signatures={"serving_default": concrete})
    shape = lambda t: [None] + [int(d) for d in t.shape[1:]]  # noqa: E731
    return {"index": spec["index"], "saved_model": spec["saved_model"], "layouts": layouts, "max_abs_error": err,
            "inputs": {n: shape(s) for n, s in zip(names, specs)},
            "outputs": {k: shape(v) for k, v in concrete.structured_outputs.items()}}


def _child(job_path: str) -> int:
    network = _isolate_network()
    with open(job_path, "r", encoding="utf-8") as f:
        job = json.load(f)
    try:
        import onnx2tf  # lazy: importing it sets CUDA_VISIBLE_DEVICES, the recursion limit and seeds (child only)

        with np.load("samples.npz") as z:
            samples = {k: z[k] for k in z.files}
        result = {"stages": [_convert_stage(spec, samples, onnx2tf, tf) for spec in job["stages"]], "network": network}
    except ModelError as exc:
        result = {"error": str(exc)}
    with open("result.json.tmp", "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace("result.json.tmp", "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
