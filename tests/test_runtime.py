"""The early-exit runtime: every available interpreter, batch early exit, checks, no TensorFlow import."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgekit.errors import BundleError, DataError
from edgekit.runtime import EarlyExitRunner, evaluate
from edgekit.runtime.interpreter import BACKENDS, available_backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_each_interpreter_gives_the_same_answers(demo_bundles, test_split, backend, precision):
    if backend not in available_backends():
        pytest.skip("{} is not installed here".format(backend))
    bundle = demo_bundles(precision, "host-x86_64")
    x = test_split.x[:40]
    ref = EarlyExitRunner(bundle, backend="ai_edge_litert").run(x)
    runner = EarlyExitRunner(bundle, backend=backend)
    assert runner.backend.name == backend
    got = runner.run(x)
    np.testing.assert_array_equal(ref.predictions, got.predictions)
    np.testing.assert_array_equal(ref.exits, got.exits)
    # int8 kernels of different interpreter releases may round a logit by one output step (about 0.4 here)
    np.testing.assert_allclose(ref.outputs, got.outputs, atol=1e-4 if precision == "float32" else 0.5)


def test_all_three_interpreters_are_installed_in_the_dev_environment():
    assert available_backends() == list(BACKENDS)


def test_batch_early_exit_equals_one_sample_at_a_time(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    x = test_split.x[:96]
    ths = [0.999, 0.999, 0.0]              # strict enough that some samples go past the confident first exit
    batch = runner.run(x, thresholds=ths)
    single = [runner.run(x[i:i + 1], thresholds=ths) for i in range(len(x))]
    np.testing.assert_array_equal(batch.exits, [s.exits[0] for s in single])
    np.testing.assert_array_equal(batch.predictions, [s.predictions[0] for s in single])
    np.testing.assert_allclose(batch.outputs, np.concatenate([s.outputs for s in single]), atol=1e-6)
    assert len(set(batch.exits.tolist())) > 1, "the test split should exit at more than one exit"


def test_thresholds_decide_the_exit(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    x = test_split.x[:20]
    assert runner.run(x, thresholds=[0.0, 0.0, 0.0]).exits.tolist() == [0] * 20
    everyone = runner.run(x, thresholds=[1.01, 1.01, 0.0])
    assert everyone.exits.tolist() == [2] * 20
    assert len(everyone.stage_ms) == 3
    np.testing.assert_array_equal(everyone.outputs, runner.run(x, full_depth=True).outputs)
    early = runner.run(x, thresholds=[0.0, 0.0, 0.0])
    assert len(early.stage_ms) == 1


def test_exit_scores_reach_their_thresholds(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    r = runner.run(test_split.x[:64])
    th = runner.thresholds()
    for e, s in zip(r.exits, r.scores):
        if e < runner.num_stages - 1:
            assert s >= th[e]


def test_evaluate_reports_accuracy_and_histogram(demo_bundles, test_split):
    res = evaluate(EarlyExitRunner(demo_bundles("int8")), test_split.x, test_split.y)
    assert sum(res["exit_histogram"]) == len(test_split.x)
    assert res["accuracy"] >= 0.95
    assert evaluate(EarlyExitRunner(demo_bundles("int8")), test_split.x[:5])["accuracy"] is None


def test_missing_delegate_library_falls_back_to_cpu(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8", "jetson-nano"))
    assert any("libtensorflowlite_gpu_delegate.so not available" in s and "CPU" in s
               for s in runner.delegate_status)
    assert runner.run(test_split.x[:2]).predictions.shape == (2,)


def test_wrong_input_shape_is_a_data_error(demo_bundles):
    runner = EarlyExitRunner(demo_bundles("int8"))
    with pytest.raises(DataError, match=r"expects \(N, 32, 32, 1\)"):
        runner.run(np.zeros((1, 28, 28, 1), np.float32))


def test_altered_and_missing_stage_files(demo_bundles, tmp_path):
    bundle = str(tmp_path / "b")
    shutil.copytree(demo_bundles("int8"), bundle)
    with open(os.path.join(bundle, "stage_1.tflite"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="stage file altered"):
        EarlyExitRunner(bundle)
    os.remove(os.path.join(bundle, "stage_1.tflite"))
    with pytest.raises(BundleError, match="stage file missing"):
        EarlyExitRunner(bundle)


def test_signature_mismatch_is_refused(demo_bundles, tmp_path):
    bundle = str(tmp_path / "b")
    shutil.copytree(demo_bundles("int8"), bundle)
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        d = json.load(f)
    d["stages"][2]["outputs"][0]["name"] = "exit9"
    d["stages"][2]["exit"]["name"] = "exit9"
    with open(path, "w") as f:
        json.dump(d, f)
    with pytest.raises(BundleError, match="signature inputs"):
        EarlyExitRunner(bundle)


def test_runtime_import_leaves_tensorflow_out():
    code = "import sys, edgekit.runtime, edgekit.bench.latency; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_on_board_entry_point(demo_bundles, tmp_path):
    data = tmp_path / "d.npz"
    from tests.conftest import TEST
    with np.load(TEST) as z:
        np.savez(data, x=z["x"][:10], y=z["y"][:10])
    out = subprocess.run([sys.executable, "-m", "edgekit.runtime", demo_bundles("int8"), str(data), "--json"],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    assert len(res["exits"]) == 10 and res["accuracy"] is not None
    assert res["interpreter"]["name"] == "ai_edge_litert"
