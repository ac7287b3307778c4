"""Integer stage boundaries (convert/boundaries.py) and the lean stage call (runtime/interpreter.StageCall)."""
import json
import os

import numpy as np
import pytest

from edgekit.convert.boundaries import Quant, integer_boundaries
from edgekit.convert.quantize import quantize_stage
from edgekit.convert.split import split_model, stage_inputs
from edgekit.errors import BundleError
from edgekit.manifest import Manifest, read_manifest
from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.guard import stage_bytes
from edgekit.runtime.interpreter import StageCall, load_backend
from tests.bundle_edit import copy_bundle, edit_manifest, write_stage
from tests.test_split import _skip_across_cut


def _calls(blobs):
    backend = load_backend()
    return [StageCall(backend.interpreter(model_content=b).get_signature_runner()) for b in blobs]


def _chain(calls, stages, x, input_name):
    """Every exit's output, chaining the stages by name."""
    env, exits = {input_name: x}, []
    for st, call in zip(stages, calls):
        res = call(**{n: env[n] for n in st.input_names})
        env.update(res)
        exits.append(res[st.exit_name])
    return exits, env


def _ops(blob):
    from edgekit.convert.precision.graph import read_ops

    return [op.op for op in read_ops(blob)]


@pytest.fixture(scope="module")
def skip_int8():
    """The split test model with a skip connection and the model input crossing cuts, quantized to int8."""
    model = _skip_across_cut()
    stages = split_model(model)
    x = np.random.default_rng(1).random((64, 16, 16, 1), dtype=np.float32)
    blobs = [quantize_stage(st.model, "int8", feed) for st, feed in zip(stages, stage_inputs(stages, x, "image"))]
    return stages, x, blobs


def test_integer_boundaries_change_no_result_and_drop_the_conversions(skip_int8):
    stages, x, blobs = skip_int8
    lean, quant = integer_boundaries(blobs, [s.input_names for s in stages], [s.carried_names for s in stages])
    ref, _ = _chain(_calls(blobs), stages, x, "image")
    got, env = _chain(_calls(lean), stages, x, "image")
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)        # dequantize + quantize with one scale is the identity
    made = set(quant[0])
    assert made, "no boundary became integer"
    for name in made:                               # carried as int8 on both sides, with one scale
        assert env[name].dtype == np.int8
        later = [k for k, s in enumerate(stages) if name in s.input_names]
        assert all(quant[k][name].matches(quant[0][name]) for k in later)
    removed = sum(_ops(b).count("QUANTIZE") + _ops(b).count("DEQUANTIZE") for b in blobs) - \
        sum(_ops(b).count("QUANTIZE") + _ops(b).count("DEQUANTIZE") for b in lean)
    assert removed >= 2 * len(made)
    for st, res in zip(stages, got):                # the exits stay float
        assert res.dtype == np.float32


def test_float_stages_keep_float_boundaries(skip_int8):
    stages, x, _ = skip_int8
    blobs = [quantize_stage(st.model, "float32", feed) for st, feed in zip(stages, stage_inputs(stages, x[:8],
                                                                                               "image"))]
    lean, quant = integer_boundaries(blobs, [s.input_names for s in stages], [s.carried_names for s in stages])
    assert lean == blobs and quant == [{}, {}, {}]


def test_a_scale_mismatch_keeps_the_boundary_float(skip_int8):
    """Calibrating the consumer on other data gives other scales: the pair stays, results stay right."""
    stages, x, blobs = skip_int8
    other = quantize_stage(stages[1].model, "int8", stage_inputs(stages, x[:64] * 3.0, "image")[1])
    mixed = [blobs[0], other, blobs[2]]
    lean, quant = integer_boundaries(mixed, [s.input_names for s in stages], [s.carried_names for s in stages])
    crossing = set(stages[0].carried_names)
    assert not crossing & set(quant[0]) and not crossing & set(quant[1])
    ref, _ = _chain(_calls(mixed), stages, x[:8], "image")
    got, _ = _chain(_calls(lean), stages, x[:8], "image")
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


def test_quant_match_tolerance():
    a = Quant("int8", 0.1105510965, -128)
    assert a.matches(Quant("int8", 0.1105510741, -128))            # float32 rounding of one range
    assert not a.matches(Quant("int8", 0.1106, -128))
    assert not a.matches(Quant("int8", 0.1105510965, -127))
    assert not a.matches(Quant("int16", 0.1105510965, -128))


def test_int8_bundle_carries_int8_and_records_it(demo_bundles, test_split):
    bundle = demo_bundles("int8")
    m = read_manifest(bundle)
    assert m.input.dtype == "float32"
    for st in m.stages:
        assert all(t.dtype == "float32" and t.quantization is None for t in st.outputs if t not in st.carried)
    carried = [t for st in m.stages for t in st.carried]
    assert carried and all(t.dtype == "int8" and t.quantization is not None for t in carried)
    for prev, st in zip(m.stages, m.stages[1:]):
        for t in st.inputs:
            assert t.same_values(next(c for c in prev.carried if c.name == t.name))
    r = EarlyExitRunner(bundle)
    assert r.run(test_split.x[:4], full_depth=True).outputs.dtype == np.float32


def test_float_bundle_records_no_quantization(demo_bundles):
    m = read_manifest(demo_bundles("float32"))
    assert all(t.dtype == "float32" and t.quantization is None for st in m.stages for t in st.inputs + st.outputs)


def test_manifest_refuses_a_carried_tensor_with_two_types(demo_bundles):
    with open(os.path.join(demo_bundles("int8"), "manifest.json")) as f:
        d = json.load(f)
    d["stages"][1]["inputs"][0]["quantization"]["scale"] *= 1.01
    with pytest.raises(BundleError, match="one dtype and quantization"):
        Manifest.from_dict(json.loads(json.dumps(d)))
    d["stages"][1]["inputs"][0]["dtype"] = "float32"
    with pytest.raises(BundleError, match="quantization"):
        Manifest.from_dict(d)
    del d["stages"][1]["inputs"][0]["quantization"]
    with pytest.raises(BundleError, match="one dtype and quantization"):
        Manifest.from_dict(d)


@pytest.mark.parametrize("bad", [{"scale": 0, "zero_point": 0}, {"scale": 0.1, "zero_point": 300},
                                 {"scale": "x", "zero_point": 0}, {"scale": 0.1}, [0.1, 0]])
def test_manifest_refuses_bad_quantization(demo_bundles, bad):
    with open(os.path.join(demo_bundles("int8"), "manifest.json")) as f:
        d = json.load(f)
    for t in (d["stages"][0]["outputs"][0], d["stages"][1]["inputs"][0]):
        t["quantization"] = bad
    with pytest.raises(BundleError, match="quantization"):
        Manifest.from_dict(d)


def test_runtime_refuses_a_stage_file_whose_tensor_type_differs_from_the_manifest(demo_bundles, tmp_path):
    """A float bundle's stage 1 behind the int8 manifest; then int8 stages behind a manifest whose carried
    scale (on both sides, so the manifest itself is consistent) is not the files'."""
    bundle = copy_bundle(demo_bundles("int8"), str(tmp_path / "b"))
    with open(os.path.join(demo_bundles("float32"), read_manifest(bundle).stages[1].file), "rb") as f:
        write_stage(bundle, 1, f.read())
    with pytest.raises(BundleError, match="in the file, the manifest says"):
        EarlyExitRunner(bundle)

    bundle = copy_bundle(demo_bundles("int8"), str(tmp_path / "c"))

    def rescale(d):
        name = d["stages"][1]["inputs"][0]["name"]
        for t in d["stages"][0]["outputs"] + d["stages"][1]["inputs"]:
            if t["name"] == name:
                t["quantization"]["scale"] *= 2

    edit_manifest(bundle, rescale)
    with pytest.raises(BundleError, match="has quantization scale .* in the file, the manifest says scale"):
        EarlyExitRunner(bundle)


def test_runtime_refuses_a_stage_that_does_not_take_what_the_last_one_carries(demo_bundles, tmp_path):
    bundle = copy_bundle(demo_bundles("float32"), str(tmp_path / "b"))

    def drop_carried(d):
        st = d["stages"][0]
        st["outputs"] = [t for t in st["outputs"] if t["name"] == st["exit"]["name"]]

    edit_manifest(bundle, drop_carried)
    with pytest.raises(BundleError, match="a stage takes exactly what the stage before it carries|not produced"):
        EarlyExitRunner(bundle)


def test_stage_call_matches_the_signature_runner_across_batch_sizes(demo_bundles, test_split):
    m = read_manifest(demo_bundles("int8"))
    blob = stage_bytes(demo_bundles("int8"), m.stages[0])
    interp = load_backend().interpreter(model_content=blob)
    ref_interp = load_backend().interpreter(model_content=blob)
    call, ref = StageCall(interp.get_signature_runner()), ref_interp.get_signature_runner()
    for n in (1, 7, 7, 1, 32):
        x = test_split.x[:n]
        got, want = call(image=x), ref(image=x)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    only = call.invoke([test_split.x[:3]], call.indices([m.stages[0].exit.name]))
    assert len(only) == 1 and only[0].shape == (3, 10)
    with pytest.raises(ValueError, match="no input"):
        call(other=test_split.x[:1])
    with pytest.raises(ValueError):
        call(image=test_split.x[:1].astype(np.float64))   # the interpreter refuses a wrong dtype
    np.testing.assert_array_equal(call(image=test_split.x[:2])[m.stages[0].exit.name],
                                  ref(image=test_split.x[:2])[m.stages[0].exit.name])


class _RunnerOnly:
    """A real signature runner seen through its public methods only (a backend without the shared wrapper)."""

    def __init__(self, runner):
        self._r = runner

    def get_input_details(self):
        return self._r.get_input_details()

    def get_output_details(self):
        return self._r.get_output_details()

    def __call__(self, **feed):
        return self._r(**feed)


def test_stage_call_goes_through_the_signature_runner_without_the_wrapper(demo_bundles, test_split):
    m = read_manifest(demo_bundles("int8"))
    blob = stage_bytes(demo_bundles("int8"), m.stages[0])
    fallback = StageCall(_RunnerOnly(load_backend().interpreter(model_content=blob).get_signature_runner()))
    lean = StageCall(load_backend().interpreter(model_content=blob).get_signature_runner())
    assert fallback._wrapper is None and lean._wrapper is not None
    for n in (3, 1):
        x = test_split.x[:n]
        fetch = lean.indices([m.stages[0].exit.name])
        np.testing.assert_array_equal(fallback.invoke([x], fetch)[0], lean.invoke([x], fetch)[0])


def test_runtime_refuses_a_stage_file_whose_tensor_shape_differs_from_the_manifest(demo_bundles, tmp_path):
    bundle = copy_bundle(demo_bundles("float32"), str(tmp_path / "b"))

    def widen(d):
        for t in d["stages"][0]["outputs"] + d["stages"][1]["inputs"]:
            if t["name"] == d["stages"][1]["inputs"][0]["name"]:
                t["shape"][-1] += 1

    edit_manifest(bundle, widen)
    with pytest.raises(BundleError, match="in the file, the manifest says"):
        EarlyExitRunner(bundle)


def _pooled_exit_model():
    """Two exits; the first averages the tensor carried to the second stage (XNNPACK: float pooling only)."""
    import keras

    L = keras.layers
    inp = keras.Input((16, 16, 1), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="body")(h)
    e0 = L.Dense(4, name="exit0")(L.Flatten(name="exit0_flat")(L.AveragePooling2D(4, name="exit0_pool")(h)))
    g = L.Conv2D(16, 3, padding="same", activation="relu", name="late")(h)
    e1 = L.Dense(4, name="exit1")(L.GlobalAveragePooling2D(name="exit1_pool")(g))
    return keras.Model(inp, [e0, e1])


def test_a_float_op_reading_the_carried_tensor_keeps_its_dequantize():
    """Stage 0 with its exit's pooling kept float (int8_stage): the carried tensor still crosses as int8."""
    from edgekit.convert.quantize import int8_stage

    stages = split_model(_pooled_exit_model())
    x = np.random.default_rng(5).random((64, 16, 16, 1), dtype=np.float32)
    feeds = stage_inputs(stages, x, "image")
    first = int8_stage(stages[0].model, feeds[0], lambda blobs: [2.0, 1.0])   # keep the float ops
    assert any("pool" in s for s in first.float_ops)
    blobs = [first.blob, quantize_stage(stages[1].model, "int8", feeds[1])]
    lean, quant = integer_boundaries(blobs, [s.input_names for s in stages], [s.carried_names for s in stages])
    assert set(quant[0]) == set(stages[0].carried_names) == set(quant[1])
    assert all(quant[0][n].matches(quant[1][n]) for n in quant[0])
    assert "DEQUANTIZE" in _ops(lean[0])[:-1]          # still there for the float pooling
    ref, _ = _chain(_calls(blobs), stages, x[:16], "image")
    got, env = _chain(_calls(lean), stages, x[:16], "image")
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)
    assert all(env[n].dtype == np.int8 for n in stages[0].carried_names)
