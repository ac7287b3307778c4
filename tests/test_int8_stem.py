"""int8 stages with some ops kept float (convert/quantize.int8_stage: a thin stem convolution, ops the delegate
takes only at float32) and the per-op profile (bench/ops.py)."""
import os

import numpy as np
import pytest

from edgekit.bench.ops import profile_stage
from edgekit.convert.precision.graph import read_ops
from edgekit.bench.ops import delegated_alone
from edgekit.convert.quantize import int8_stage, off_delegate_scopes, quantize_stage, stem_scopes
from edgekit.runtime.interpreter import StageCall, load_backend


@pytest.fixture(scope="module")
def stem_model():
    """A 1-channel image through a stem convolution, a second convolution, average pooling and a dense exit."""
    import keras

    inp = keras.Input((16, 16, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="body")(h)
    h = keras.layers.AveragePooling2D(2, name="pool")(h)
    out = keras.layers.Dense(4, name="exit0")(keras.layers.Flatten()(h))
    model = keras.Model(inp, {"exit0": out})
    x = np.random.default_rng(3).random((64, 16, 16, 1), dtype=np.float32)
    return model, x


def _outputs(blob, x):
    call = StageCall(load_backend().interpreter(model_content=blob).get_signature_runner())
    return np.concatenate([call(image=x[i:i + 1])["exit0"] for i in range(len(x))])


def test_stem_scopes_name_only_the_thin_input_convolution(stem_model):
    model, x = stem_model
    fblob = quantize_stage(model, "float32", {"image": x})
    scopes = stem_scopes(fblob)
    ops = {o.scope: o.op for o in read_ops(fblob)}
    assert len(scopes) == 1 and ops[scopes[0]] == "CONV_2D" and "stem" in scopes[0]


def test_off_delegate_scopes_name_the_ops_xnnpack_takes_only_in_float(stem_model):
    model, x = stem_model
    fblob, iblob = (quantize_stage(model, p, {"image": x}) for p in ("float32", "int8"))
    found = off_delegate_scopes(iblob, fblob)
    fops = {o.scope: (o.op, d) for o, d in zip(read_ops(fblob), delegated_alone(load_backend(), fblob))}
    assert found and all(fops[s][1] for s in found)           # each is delegated at float32
    assert [fops[s][0] for s in found] == ["AVERAGE_POOL_2D"]  # ai-edge-litert 2.1.0: no int8 average pooling
    idel = dict(zip([o.op for o in read_ops(iblob)], delegated_alone(load_backend(), iblob)))
    assert idel["AVERAGE_POOL_2D"] is False and idel["CONV_2D"] is True


def test_no_off_delegate_ops_where_the_delegate_takes_no_int8_convolution(stem_model):
    """tflite-runtime 2.14's XNNPACK takes no int8 op: floating them would only make the stage float32."""
    model, x = stem_model
    fblob, iblob = (quantize_stage(model, p, {"image": x}) for p in ("float32", "int8"))
    from edgekit.runtime.interpreter import available_backends

    if "tflite_runtime" not in available_backends():
        pytest.skip("tflite-runtime is not installed here")
    assert not any(delegated_alone(load_backend("tflite_runtime"), iblob))
    assert off_delegate_scopes(iblob, fblob, "tflite_runtime") == []


def test_int8_stage_keeps_the_float_ops_when_that_measures_faster(stem_model):
    model, x = stem_model
    seen = []

    def kept_faster(blobs):
        seen.append(len(blobs))
        return [2.0, 1.0]

    built = int8_stage(model, {"image": x}, kept_faster)
    assert seen == [2] and len(built.float_ops) == 2 and "stem" in built.float_ops[0]
    assert built.measured_ms == {"int8": 2.0, "int8+float ops": 1.0}
    ops = [o.op for o in read_ops(built.blob)]
    assert ops[0] == "CONV_2D" and "QUANTIZE" in ops[1:3]          # float stem, then into int8
    ref = np.asarray(model(x)["exit0"])
    plain = _outputs(quantize_stage(model, "int8", {"image": x}), x)
    got = _outputs(built.blob, x)
    err, plain_err = np.abs(got - ref).max(), np.abs(plain - ref).max()
    assert err < 0.1 * max(1.0, np.abs(ref).max())
    assert err <= plain_err * 1.5          # float ops add no error of their own


def test_int8_stage_keeps_the_plain_build_when_it_is_faster(stem_model):
    model, x = stem_model
    built = int8_stage(model, {"image": x}, lambda blobs: [1.0, 2.0])
    assert built.float_ops == ()
    assert read_ops(built.blob)[0].op == "QUANTIZE"


def test_per_op_profile_lists_every_op_once(stem_model):
    model, x = stem_model
    blob = quantize_stage(model, "int8", {"image": x})
    stage_ms, ops = profile_stage(load_backend(), blob, [x[:1]], rounds=20, warmup=2)
    names = [o.op for o in read_ops(blob)]
    assert [o.op for o in ops] == names and [o.index for o in ops] == list(range(len(names)))
    assert abs(sum(o.share for o in ops) - 1.0) < 1e-9
    assert stage_ms > 0 and all(o.ms > 0 and o.kernel in ("xnnpack", "builtin") for o in ops)
    assert ops[0].dtype == "float32->int8" and ops[-1].dtype == "int8->float32"


def test_inspect_ops_prints_a_table_per_stage(demo_bundles):
    from click.testing import CliRunner

    from edgekit.cli import main
    from edgekit.manifest import load_bundle

    bundle = demo_bundles("int8")
    res = CliRunner().invoke(main, ["inspect", bundle, "--ops"])
    assert res.exit_code == 0, res.output
    stages = load_bundle(bundle).stages
    heads = [line for line in res.stdout.splitlines() if line.startswith("stage ") and "whole stage" in line]
    assert len(heads) == len(stages)
    assert "CONV_2D" in res.stdout and "share" in res.stdout


def test_profile_ops_prints_the_tables_and_writes_nothing(demo_bundles):
    from click.testing import CliRunner

    from edgekit.cli import main

    bundle = demo_bundles("int8")
    before = {f: open(os.path.join(bundle, f), "rb").read() for f in sorted(os.listdir(bundle))}
    res = CliRunner().invoke(main, ["profile", bundle, "--ops"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("whole stage") == 3 and "FULLY_CONNECTED" in res.stdout
    assert {f: open(os.path.join(bundle, f), "rb").read() for f in sorted(os.listdir(bundle))} == before
    bad = CliRunner().invoke(main, ["profile", bundle, "--ops", "--json"])
    assert bad.exit_code == 2 and "--ops" in bad.stderr
