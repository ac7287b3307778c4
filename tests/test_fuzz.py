"""Property-based tests (hypothesis): the manifest loader, the data loader, the exit policies and the runtime's
input validation take anything and either succeed with a well-formed result or raise their EdgekitError; the
bundle fuzz target (tests/fuzz_bundles.py) mutates real bundles in a child process, so that a crash of the
interpreter would show as a failure rather than end the test run.

Example counts are bounded for the default run; EDGEKIT_FUZZ_SCALE=10 (or the slow test) runs longer.
"""
import copy
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgekit.data import load_data
from edgekit.errors import BundleError, DataError
from edgekit.manifest import Manifest
from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.policy import EXIT_RULES

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = int(os.environ.get("EDGEKIT_FUZZ_SCALE", "1"))


def fuzz_settings(n):
    return settings(max_examples=n * SCALE, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

GOOD = {
    "schema_version": 1, "model_name": "m", "target": "raspberry-pi-5",
    "input": {"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32", "preprocessing": {"scale": 0.5}},
    "stages": [
        {"index": 0, "file": "stage_0.tflite", "sha256": "a" * 64, "precision": "int8", "flops": 10, "latency_ms": 0.1,
         "inputs": [{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}],
         "outputs": [{"name": "c_feat", "shape": [None, 4, 4, 8], "dtype": "float32"},
                     {"name": "exit0", "shape": [None, 10], "dtype": "float32"}],
         "exit": {"name": "exit0", "threshold": 0.9, "classes": 10}},
        {"index": 1, "file": "stage_1.tflite", "sha256": "b" * 64, "precision": "int8",
         "inputs": [{"name": "c_feat", "shape": [None, 4, 4, 8], "dtype": "float32"}],
         "outputs": [{"name": "exit1", "shape": [None, 10], "dtype": "float32"}],
         "exit": {"name": "exit1", "threshold": 0.0, "classes": 10, "rule": "entropy"}},
    ],
    "runtime": {"num_threads": 2, "delegates": [{"name": "gpu", "library": "libgpu.so", "options": {}}]},
}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(GOOD) if p]


def _loads_or_refuses(d):
    try:
        m = Manifest.from_dict(d)
    except BundleError:
        return None
    text = m.to_json()
    assert Manifest.from_json(text).to_json() == text          # what loads, round-trips
    return m


@fuzz_settings(200)
@given(JSON)
def test_manifest_loader_takes_any_json(value):
    _loads_or_refuses(value)


@fuzz_settings(250)
@given(st.sampled_from(PATHS), JSON, st.booleans())
def test_manifest_loader_with_one_field_replaced_or_removed(path, value, remove):
    d = copy.deepcopy(GOOD)
    parent = d
    for key in path[:-1]:
        parent = parent[key]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _loads_or_refuses(d)


@fuzz_settings(200)
@given(st.data())
def test_manifest_text_with_random_edits(data):
    text = json.dumps(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        text = text[:i] + data.draw(st.text(max_size=3)) + text[i + data.draw(st.integers(0, 3)):]
    try:
        Manifest.from_json(text)
    except BundleError:
        pass


def _npz_bytes(compressed):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, x=np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                                                      y=np.array([1, 0]))
    return buf.getvalue()


def _npy_bytes():
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 5), np.float32))
    return buf.getvalue()


SEEDS = {".npz": [_npz_bytes(False), _npz_bytes(True)], ".npy": [_npy_bytes()]}


@fuzz_settings(200)
@given(st.sampled_from([".npz", ".npy"]), st.data())
def test_data_loader_takes_any_file(tmp_path, ext, data):
    blob = bytearray(data.draw(st.sampled_from(SEEDS[ext])))
    kind = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    else:
        blob = bytearray(data.draw(st.binary(max_size=600)))
    path = str(tmp_path / ("d" + ext))
    with open(path, "wb") as f:
        f.write(bytes(blob))
    try:
        ds = load_data(path)
    except DataError:
        return
    assert len(ds) >= 1 and ds.x.dtype.kind in "biufc"
    assert ds.y is None or (ds.y.shape == (len(ds),) and ds.y.dtype.kind in "iu")


def test_data_loader_refuses_an_encrypted_zip_member(tmp_path):
    path = tmp_path / "enc.npz"
    good = _npz_bytes(False)
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        names = z.namelist()
    blob = bytearray(good)
    blob[6] |= 1                                       # the 'encrypted' flag of the first local header
    i = blob.find(b"PK\x01\x02")
    blob[i + 8] |= 1                                   # ... and of its central-directory entry
    path.write_bytes(bytes(blob))
    assert names[0] == "x.npy"
    with pytest.raises(DataError, match="cannot be read as .npz"):
        load_data(str(path))


LOGITS = hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 12)),
                    elements=st.floats(width=32, allow_nan=False, allow_infinity=False))


@fuzz_settings(200)
@given(LOGITS)
def test_exit_policies_score_any_finite_logits(logits):
    n, c = logits.shape
    scores = {name: np.asarray(fn(logits)) for name, fn in EXIT_RULES.items()}
    for name, s in scores.items():
        assert s.shape == (n,), name
        assert np.all(np.isfinite(s)), (name, logits)
    for name in ("max_softmax", "entropy", "margin"):
        assert np.all(scores[name] >= -1e-6) and np.all(scores[name] <= 1 + 1e-6), (name, scores[name])
    assert np.all(scores["max_softmax"] >= 1.0 / c - 1e-6)
    assert np.all(scores["margin"] <= scores["max_softmax"] + 1e-6)         # top1 - top2 <= top1
    np.testing.assert_array_equal(scores["learned"], logits[:, 0].astype(np.float64))


@fuzz_settings(100)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 3), st.integers(2, 4)),
                  elements=st.floats(-50, 50, width=32)))
def test_exit_policies_flatten_outputs_with_more_axes(out):
    for name in ("max_softmax", "entropy", "margin"):
        np.testing.assert_allclose(EXIT_RULES[name](out), EXIT_RULES[name](out.reshape(len(out), -1)), rtol=1e-6)


@pytest.fixture(scope="module")
def runner(demo_bundles):
    return EarlyExitRunner(demo_bundles("int8"), max_batch=8)


DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.uint8, np.int64, np.bool_, np.complex64,
                          "U3", "O"])
SHAPES = st.one_of(st.just((2, 32, 32, 1)), st.tuples(st.integers(0, 10), st.just(32), st.just(32), st.just(1)),
                   hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4))


@fuzz_settings(150)
@given(DTYPES, SHAPES, st.data())
def test_input_validation_accepts_exactly_the_valid_batches(runner, dtype, shape, data):
    if dtype in ("U3", "O"):
        x = np.full(shape, "ab", dtype=dtype)
    else:
        x = data.draw(hnp.arrays(dtype, shape))
    numeric = x.dtype.kind in "fiu"
    valid = numeric and x.ndim == 4 and x.shape[1:] == (32, 32, 1) and 1 <= x.shape[0] <= 8
    if valid and x.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            valid = bool(np.isfinite(x.astype(np.float32)).all())
    try:
        out = runner.prepare(x)
    except DataError:
        assert not valid, x
        return
    assert valid, (x.dtype, x.shape)
    assert out.dtype == np.float32 and out.shape == x.shape and np.isfinite(out).all()
    np.testing.assert_array_equal(out, x.astype(np.float32))


@fuzz_settings(60)
@given(st.integers(0, 2 * 32 * 32 - 1), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_one_bad_value_anywhere_is_found_on_the_fast_path(runner, pos, bad):
    x = np.full((2, 32, 32, 1), 0.25, np.float32)
    x.reshape(-1)[pos] = bad
    with pytest.raises(DataError, match="1 non-finite values .* the first in sample {}".format(pos // 1024)):
        runner.run(x)


def _fuzz_bundles(bundle, examples, backend, tmp_path):
    log = str(tmp_path / "fuzz.log")
    out = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_bundles.py"), bundle, "--examples", str(examples),
                          "--backend", backend, "--log", log], capture_output=True, text=True, timeout=1800)
    last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
    assert out.returncode == 0, "fuzz target failed (exit {}), last example {}:\n{}\n{}".format(
        out.returncode, last, out.stdout[-3000:], out.stderr[-3000:])
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["examples"] >= examples // 2 and summary["refused"] > 0 and summary["ran"] > 0, summary
    return summary


def _backend():
    from edgekit.runtime.interpreter import available_backends

    have = available_backends()
    return "tflite_runtime" if "tflite_runtime" in have else have[0]   # the one that crashes on bad flatbuffers


def test_fuzz_target_mutating_real_bundles(demo_bundles, tmp_path):
    _fuzz_bundles(demo_bundles("int8"), 60 * SCALE, _backend(), tmp_path)


@pytest.mark.slow
def test_fuzz_target_mutating_real_bundles_long(demo_bundles, tmp_path):
    _fuzz_bundles(demo_bundles("int8"), 1500, _backend(), tmp_path)
