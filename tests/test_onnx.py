"""The ONNX front end on the PyTorch-exported fixtures in tests/fixtures/onnx/ (see export.py there).

Every number is checked against onnxruntime on the original .onnx file. Conversions are session-scoped:
the multi-exit fixture at float32 and int8, the plain CNN once with the network disabled.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from tests.conftest import ROOT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FIX = os.path.join(ROOT, "tests", "fixtures", "onnx")
BRANCHY = os.path.join(FIX, "branchy_resnet.onnx")
PLAIN = os.path.join(FIX, "plain_cnn.onnx")
TOL = 1e-4


def digits(split: str) -> tuple:
    """The shipped digits over three channels, in the ONNX models' own layout (N, 3, 32, 32)."""
    with np.load(os.path.join(ROOT, "calibration", "digits_{}.npz".format(split))) as z:
        return np.repeat(np.transpose(z["x"], (0, 3, 1, 2)), 3, axis=1).astype(np.float32), z["y"]


def onnxruntime_outputs(path: str, x: np.ndarray, names=None) -> dict:
    m = onnx.load(path)
    have = [o.name for o in m.graph.output]
    for n in names or []:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    want = list(names or have)
    if sess.get_inputs()[0].shape[0] == 1:                     # fixed batch 1: sample by sample
        res = [sess.run(want, {inp: x[i:i + 1]}) for i in range(len(x))]
        return {n: np.concatenate([r[k] for r in res]) for k, n in enumerate(want)}
    return dict(zip(want, sess.run(want, {inp: x})))


def nhwc(v: np.ndarray) -> np.ndarray:
    return np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v


@pytest.fixture(scope="session")
def onnx_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx-data")
    paths = {}
    for split in ("calib", "test"):
        x, y = digits(split)
        paths[split] = str(d / "{}_nchw.npz".format(split))
        np.savez(paths[split], x=x, y=y)
    xc, yc = digits("calib")
    paths["calib_nhwc"] = str(d / "calib_nhwc.npz")
    np.savez(paths["calib_nhwc"], x=nhwc(xc), y=yc)
    return paths


def offline_prefix() -> list:
    """unshare -n: run in a new network namespace with nothing but a (down) loopback interface."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", sys.executable, "-c", "import socket; print(socket.if_nameindex())"],
                           capture_output=True, text=True)
    return ["unshare", "-n"] if probe.returncode == 0 and probe.stdout.strip() == "[(1, 'lo')]" else []


def cli_convert_json(model: str, calib: str, out: str, *extra: str) -> dict:
    """`edgekit convert --json` in a child process, without network when the machine allows it."""
    cmd = offline_prefix() + [sys.executable, "-m", "edgekit.cli", "convert", model, "--calib", calib, "-o", out,
                              "--json"] + list(extra)
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=out,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return dict(json.loads(res.stdout), offline=bool(offline_prefix()), stderr=res.stderr)


@pytest.fixture(scope="session")
def branchy_bundle(tmp_path_factory, onnx_data):
    """precision -> ConvertResult for the multi-exit fixture (float32: calibration data given in the model's
    NCHW layout; int8: given NHWC)."""
    from edgekit.convert import ConvertOptions, convert

    made = {}

    def get(precision: str):
        if precision not in made:
            out = str(tmp_path_factory.mktemp("onnx-{}".format(precision)))
            calib = onnx_data["calib"] if precision == "float32" else onnx_data["calib_nhwc"]
            made[precision] = convert(ConvertOptions(BRANCHY, "raspberry-pi-5", calib, out, precision=precision))
        return made[precision]

    return get


# -- the Done-when items ----------------------------------------------------------------------------------
def test_float32_bundle_matches_onnxruntime_at_every_exit(branchy_bundle):
    from edgekit.runtime import EarlyExitRunner
    from edgekit.runtime.runner import exit_outputs

    x, _ = digits("test")
    ref = onnxruntime_outputs(BRANCHY, x)
    runner = EarlyExitRunner(branchy_bundle("float32").bundle_dir)
    got = exit_outputs(runner, x)                  # NCHW in, the runtime transposes once
    assert [s.exit.name for s in runner.manifest.stages] == ["exit0", "exit1", "exit2"]
    for name, (out, _) in zip(["exit0", "exit1", "exit2"], got):
        err = float(np.max(np.abs(out - ref[name])))
        assert err <= TOL, (name, err)
    with open(os.path.join(branchy_bundle("float32").bundle_dir, "report.json")) as f:
        report = json.load(f)
    assert max(s["tflite_max_abs_error_vs_float"] for s in report["stages"]) <= TOL
    assert "onnx2tf" not in sys.modules            # imported only in the converter's child process


def test_int8_bundle_runs_with_early_exit(branchy_bundle, onnx_data):
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate

    runner = EarlyExitRunner(branchy_bundle("int8").bundle_dir)
    assert {s.precision for s in runner.manifest.stages} == {"int8"}
    ds = load_data(onnx_data["test"])
    early = evaluate(runner, ds.x, ds.y)
    full = evaluate(runner, ds.x, ds.y, full_depth=True)
    assert early["exit_histogram"][0] > len(ds) // 2, early["exit_histogram"]    # most leave at the first exit
    assert early["accuracy"] >= 0.95 and full["accuracy"] >= 0.95, (early["accuracy"], full["accuracy"])
    assert full["exit_histogram"] == [0, 0, len(ds)]
    chosen = branchy_bundle("int8").report.get("int8_float_ops", {})
    for k, st in chosen.items():                  # the int8 build was weighed against one with float ops
        if k.isdigit():
            assert set(st["median_ms"]) == {"int8", "int8+float ops"}


def test_conversion_runs_with_the_network_disabled(branchy_bundle):
    """onnx2tf's child process refuses every connection and, as root, runs in a network namespace of its own
    whose only interface is loopback: the float32 bundle above was converted that way."""
    report = branchy_bundle("float32").report
    assert "sockets refused" in report["onnx"]["converter_network"]
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root; only the refused-sockets guard was in force")
    assert report["onnx"]["converter_network"] == "network namespace (interfaces: lo), sockets refused"


@pytest.mark.slow
def test_plain_cnn_converts_offline(tmp_path, onnx_data):
    """The plain CNN (fixed batch 1, a 3-channel input: what makes onnx2tf fetch sample images) through the CLI,
    the whole process in a network namespace (unshare -n) when the machine allows it. Adaptive precision and
    pruning need a Keras model: asked for here, each is said not to apply, and the conversion goes on at the
    target's default precision (float32 on host-x86_64)."""
    from edgekit.runtime import EarlyExitRunner

    report = cli_convert_json(PLAIN, onnx_data["calib"], str(tmp_path), "-t", "host-x86_64", "--precision",
                              "adaptive", "--prune-flops", "0.5")
    assert len(report["stages"]) == 1 and report["precision"] == "float32"
    notes = [ln for ln in report["stderr"].splitlines() if ln.startswith("edgekit: note: ")]
    assert len(notes) == 2 and "pruning" in notes[0] and "not pruned" in notes[0], notes
    assert "adaptive precision needs a Keras model" in notes[1] and "float32" in notes[1], notes
    assert report["notes"] == [n[len("edgekit: note: "):] for n in notes]
    x, y = digits("test")
    got = EarlyExitRunner(report["bundle_dir"]).run(x, full_depth=True).outputs
    ref = onnxruntime_outputs(PLAIN, x)["logits"]
    assert float(np.max(np.abs(got - ref))) <= TOL
    assert float(np.mean(np.argmax(got, 1) == y)) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("with_sample_file", [True, False])
def test_onnx2tf_child_uses_the_sample_file_not_the_network(tmp_path, with_sample_file):
    """The trap itself: onnx2tf fetches sample images for a fixed-batch 3-channel input. The converter child, fed
    the plain CNN still at batch 1 (edgekit would make it dynamic first), converts with connections refused when
    the sample file made from calibration data is there, and fails naming the refused connection when not."""
    from edgekit.convert import onnx as onnx_front
    from edgekit.errors import ModelError

    shutil.copy(PLAIN, tmp_path / "stage_0.onnx")
    x, _ = digits("calib")
    np.savez(tmp_path / "samples.npz", input=nhwc(x[:1]), logits=onnxruntime_outputs(PLAIN, x[:1])["logits"])
    if with_sample_file:
        onnx_front._write_sample_images(nhwc(x[:40]), str(tmp_path))
        assert np.load(tmp_path / onnx_front.SAMPLE_FILE).shape == (20, 32, 32, 3)
    job = {"stages": [{"index": 0, "onnx": "stage_0.onnx", "inputs": ["input"], "passthrough": [],
                       "saved_model": str(tmp_path / "sm0")}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    onnx_front._run_child(str(tmp_path), 900)
    result = json.loads((tmp_path / "result.json").read_text())
    if with_sample_file:
        assert result["stages"][0]["max_abs_error"] <= TOL and (tmp_path / "sm0" / "saved_model.pb").exists()
    else:
        assert "tried to reach github.com" in result["error"] and "refused" in result["error"], result


# -- layout ---------------------------------------------------------------------------------------------------
def test_stage_boundaries_are_channels_last_and_match_onnxruntime(branchy_bundle):
    """Each stage alone, fed onnxruntime's frontier tensors transposed to NHWC, gives onnxruntime's next frontier
    (NHWC) and exit: the layout is the same on both sides of every cut, including a skip crossing the first."""
    from edgekit.manifest import load_bundle
    from edgekit.runtime.guard import stage_bytes
    from edgekit.runtime.interpreter import load_backend

    bundle = branchy_bundle("float32").bundle_dir
    m = load_bundle(bundle)
    with open(os.path.join(bundle, "report.json")) as f:
        onnx_names = json.load(f)["onnx"]["onnx_names"]
    assert m.input.shape == (None, 32, 32, 3)
    assert m.input.preprocessing["source_layout"] == "NCHW" and m.input.preprocessing["layout"] == "NHWC"
    assert len(m.stages[0].carried) == 2                      # the residual skip and the branch both cross
    x, _ = digits("test")
    names = sorted({t.name for s in m.stages for t in s.outputs} | {t.name for s in m.stages for t in s.inputs})
    ref = {n: nhwc(v) for n, v in onnxruntime_outputs(BRANCHY, x[:32], [onnx_names[n] for n in names
                                                                         if onnx_names[n] != "image"]).items()}
    ref = {n: ref[onnx_names[n]] for n in names if onnx_names[n] in ref}
    ref["image"] = nhwc(x[:32])
    backend = load_backend()
    for st in m.stages:
        for t in st.inputs + st.outputs:
            assert t.shape[1:] == ref[t.name].shape[1:], (t.name, t.shape, ref[t.name].shape)
        sig = backend.interpreter(model_content=stage_bytes(bundle, st)).get_signature_runner()
        res = sig(**{t.name: ref[t.name] for t in st.inputs})
        for t in st.outputs:
            assert float(np.max(np.abs(res[t.name] - ref[t.name]))) <= TOL, (st.index, t.name)


def test_runtime_takes_the_onnx_layout_and_the_bundle_layout(branchy_bundle):
    from edgekit.errors import DataError
    from edgekit.runtime import EarlyExitRunner

    runner = EarlyExitRunner(branchy_bundle("int8").bundle_dir)
    x, _ = digits("test")
    a = runner.run(x[:40])
    b = runner.run(np.ascontiguousarray(nhwc(x[:40])))
    np.testing.assert_array_equal(a.outputs, b.outputs)
    np.testing.assert_array_equal(a.exits, b.exits)
    with pytest.raises(DataError, match="expects"):
        runner.run(np.zeros((2, 32, 3, 32), np.float32))


# -- the split at the ONNX level (no onnx2tf) --------------------------------------------------------------------
def test_split_frontiers_and_chained_parity():
    from edgekit.convert.onnx_split import split_onnx

    split = split_onnx(BRANCHY)
    assert [s.exit_name for s in split.stages] == ["exit0", "exit1", "exit2"]
    skip, branch = (split.original_names[n] for n in split.stages[0].carried_names)
    assert (skip, branch) == ("/stem/stem.1/MaxPool_output_0", "/block1_a/block1_a.2/Relu_output_0")
    assert split.stages[1].input_names == split.stages[0].carried_names
    assert split.stages[2].input_names == split.stages[1].carried_names and not split.stages[2].carried_names
    x = nhwc(digits("test")[0][:16])
    ref = onnxruntime_outputs(BRANCHY, digits("test")[0][:16])
    for name, got in zip(["exit0", "exit1", "exit2"], split.chained(x)):
        assert float(np.max(np.abs(got - ref[name]))) <= 1e-5

    two = split_onnx(BRANCHY, exits=("exit0", "exit2"))        # exit1's head is dropped
    assert [s.exit_name for s in two.stages] == ["exit0", "exit2"]
    assert two.stages[1].input_names == split.stages[0].carried_names
    for name, got in zip(["exit0", "exit2"], two.chained(x)):
        assert float(np.max(np.abs(got - ref[name]))) <= 1e-5


def test_fixed_batch_one_is_made_dynamic_and_checked(tmp_path):
    from edgekit.convert.onnx_split import split_onnx

    split = split_onnx(PLAIN)
    assert split.source_shape == (None, 3, 32, 32) and len(split.stages) == 1
    x = digits("test")[0][:5]
    got = split.chained(nhwc(x))[0]
    np.testing.assert_allclose(got, onnxruntime_outputs(PLAIN, x)["logits"], atol=1e-5)


def _tiny(path, nodes, inp_shape, out_shape, opset=17, inits=(), out_name="y", domain_opsets=()):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, inp_shape)],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                          initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] +
                          [helper.make_opsetid(d, 1) for d in domain_opsets])
    m.ir_version = 10                                           # what onnxruntime 1.23 reads
    onnx.save(m, str(path))
    return str(path)


def test_a_batch_one_graph_that_cannot_take_other_batches_is_refused(tmp_path):
    from onnx import helper, numpy_helper

    from edgekit.convert.onnx_split import split_onnx
    from edgekit.errors import ModelError

    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    path = _tiny(tmp_path / "reshape.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [1, 3, 4, 4], [1, 48], inits=[shape])
    with pytest.raises(ModelError, match="fixed batch of 1"):
        split_onnx(path)


# -- bad input: one line, exit code 2, nothing written ---------------------------------------------------------
def _convert(tmp_path, model, calib, *extra):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["convert", str(model), "-t", "host-x86_64", "--calib", calib, "-o", str(out),
                                    "--precision", "float32"] + list(extra))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), res.stderr
    assert not out.exists()
    return lines[0]


def test_bad_input_not_onnx(tmp_path, onnx_data):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a protobuf" * 20)
    assert "is not a readable ONNX model" in _convert(tmp_path, bad, onnx_data["calib"])


def test_bad_input_opset_and_ops(tmp_path, onnx_data):
    from onnx import helper

    relu = [helper.make_node("Relu", ["x"], ["y"])]
    line = _convert(tmp_path, _tiny(tmp_path / "o99.onnx", relu, ["N", 3, 32, 32], ["N", 3, 32, 32], opset=99),
                    onnx_data["calib"])
    assert "opset 99" in line and "allowed: opsets 7 to" in line
    swish = [helper.make_node("Swish", ["x"], ["y"])]             # standard ONNX (opset 24), not in onnx2tf
    line = _convert(tmp_path, _tiny(tmp_path / "sw.onnx", swish, ["N", 3, 32, 32], ["N", 3, 32, 32], opset=24),
                    onnx_data["calib"])
    assert "onnx2tf cannot convert op Swish" in line
    custom = [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")]
    line = _convert(tmp_path, _tiny(tmp_path / "c.onnx", custom, ["N", 3, 32, 32], ["N", 3, 32, 32],
                                    domain_opsets=["com.example"]), onnx_data["calib"])
    assert "FancyOp (domain com.example)" in line


def test_bad_input_dynamic_spatial_dims(tmp_path, onnx_data):
    from onnx import helper

    relu = [helper.make_node("Relu", ["x"], ["y"])]
    path = _tiny(tmp_path / "dyn.onnx", relu, ["N", 3, "H", "W"], ["N", 3, "H", "W"])
    line = _convert(tmp_path, path, onnx_data["calib"])
    assert "dynamic dimensions (N, 3, H, W)" in line and "--input-shape" in line
    assert "fixed at 3" in _convert(tmp_path, path, onnx_data["calib"], "--input-shape", "4,32,32")
    assert "allowed positive integers" in _convert(tmp_path, path, onnx_data["calib"], "--input-shape", "3,x,32")


def test_bad_input_exit_names_not_in_the_graph(tmp_path, onnx_data):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.errors import ModelError

    out = tmp_path / "out"
    with pytest.raises(ModelError, match=r"exit 'exit9' not in the graph; allowed: the graph outputs \(exit0, exit1"):
        convert(ConvertOptions(BRANCHY, "host-x86_64", onnx_data["calib"], str(out), precision="float32",
                               onnx_exits=("exit0", "exit9")))
    assert not out.exists()


def test_bad_input_exit_names_on_the_command_line(tmp_path, onnx_data):
    line = _convert(tmp_path, BRANCHY, onnx_data["calib"], "--exits", "exit0,nope")
    assert "exit 'nope' not in the graph" in line and "exit0, exit1, exit2" in line
    line = _convert(tmp_path, BRANCHY, onnx_data["calib"], "--exits", "auto:2")      # heads need a Keras model
    assert "--exits auto:N attaches and trains exit heads, which needs a Keras model" in line


def test_bad_input_calibration_shape(tmp_path):
    bad = tmp_path / "calib.npz"
    np.savez(bad, x=np.zeros((4, 32, 32, 1), np.float32))
    line = _convert(tmp_path, BRANCHY, str(bad))
    assert "(4, 32, 32, 1)" in line and "(N, 3, 32, 32)" in line and "(N, 32, 32, 3)" in line
