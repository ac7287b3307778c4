"""A catalogue of hostile bundles and inputs: each is refused with a message that names the problem.

Bundle cases damage a copy of the real int8 demo bundle and must be refused before any interpreter exists
(the runner's backend loader is replaced by one that fails the test if it is reached). Input cases go to
EarlyExitRunner.run and must be DataErrors; a few go through the CLI and must be one line and exit code 2.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import edgekit.runtime.runner as runner_mod
from bundle_edit import copy_bundle, edit_manifest, field_pos, put_u32, read_stage, stage_path, write_stage
from edgekit.errors import BundleError, ConfigError, DataError
from edgekit.runtime import EarlyExitRunner


def _set(path, value):
    """A manifest edit: set d[path...] = value."""
    def edit(d):
        obj = d
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


def _manifest_edit(fn):
    return lambda b: edit_manifest(b, fn)


def _stage_bytes(fn, k=0):
    return lambda b: write_stage(b, k, fn(read_stage(b, k)))


def _flatbuffer_field(path, value, k=0):
    return _stage_bytes(lambda data: put_u32(data, field_pos(data, path), value), k)


def _symlink_stage(target):
    def make(b):
        os.remove(stage_path(b, 0))
        os.symlink(target, stage_path(b, 0))
    return make


def _fifo_stage(b):
    os.remove(stage_path(b, 0))
    os.mkfifo(stage_path(b, 0))             # opening it for reading would block without O_NONBLOCK


def _dir_stage(b):
    os.remove(stage_path(b, 1))
    os.mkdir(stage_path(b, 1))


def _write_manifest_bytes(blob):
    def make(b):
        with open(os.path.join(b, "manifest.json"), "wb") as f:
            f.write(blob)
    return make


def _sparse(name, size):
    def make(b):
        with open(os.path.join(b, name), "r+b") as f:
            f.truncate(size)
    return make


def _swap_stage_files(b):
    data = read_stage(b, 0)
    write_stage(b, 1, data)


def _flip(data, pos):
    b = bytearray(data)
    b[pos] ^= 0xFF
    return bytes(b)


# (id, how the bundle is damaged, what the message must say)
BUNDLE_CASES = [
    ("path-traversal-file", _manifest_edit(_set(["stages", 0, "file"], "../../etc/passwd")), r"invalid name .*no path"),
    ("absolute-path-file", _manifest_edit(_set(["stages", 1, "file"], "/etc/passwd")), r"invalid name"),
    ("traversal-tensor-name", _manifest_edit(_set(["input", "name"], "../x")), r"invalid name"),
    ("stage-symlink-outside", _symlink_stage("/etc/hostname"), r"is a link out of the bundle"),
    ("stage-link-to-a-device", _symlink_stage("/dev/zero"), r"is a link out of the bundle"),
    ("stage-is-a-fifo", _fifo_stage, r"stage_0.tflite is not a regular file \(a device, FIFO"),
    ("stage-is-a-directory", _dir_stage, r"stage_1.tflite is not a regular file"),
    ("unknown-schema-version", _manifest_edit(_set(["schema_version"], 3)), r"unknown schema_version 3"),
    ("schema-version-bool", _manifest_edit(_set(["schema_version"], True)), r"unknown schema_version True"),
    ("absurd-dimension", _manifest_edit(_set(["input", "shape"], [None, 1 << 30, 32, 1])), r"positive integer up to"),
    ("absurd-tensor-bytes", _manifest_edit(_set(["input", "shape"], [None] + [1 << 20] * 7)), r"bytes per sample"),
    ("negative-dimension", _manifest_edit(_set(["input", "shape"], [None, -32, 32, 1])), r"positive integer"),
    ("stage-file-over-1GiB", _sparse("stage_1.tflite", (1 << 30) + 1), r"has 1073741825 bytes; allowed: at most"),
    ("manifest-over-4MiB", _sparse("manifest.json", 5 << 20), r"manifest.json .* bytes; allowed: at most 4194304"),
    ("manifest-not-json", _write_manifest_bytes(b"{\"schema_version\": 1,"), r"not valid JSON"),
    ("manifest-nested-deep", _write_manifest_bytes(b"[" * 100000 + b"]" * 100000), r"nested too deeply"),
    ("manifest-not-utf8", _write_manifest_bytes(b"{\"model_name\": \"\xff\xfe\"}"), r"not UTF-8"),
    ("zero-stages", _manifest_edit(_set(["stages"], [])), r"1 to 64 stages"),
    ("stage-listed-twice", _manifest_edit(lambda d: d["stages"][1].update(file=d["stages"][0]["file"])),
     r"listed twice|is not produced"),
    ("flops-not-a-number", _manifest_edit(_set(["stages", 0, "flops"], "lots")), r"flops: expected an integer"),
    ("latency-negative", _manifest_edit(_set(["stages", 0, "latency_ms"], -1)), r"latency_ms: expected a finite"),
    ("preprocessing-scale-nan", _manifest_edit(_set(["input", "preprocessing", "scale"], float("nan"))),
     r"preprocessing.scale: expected a finite number"),
    ("bad-source-layout", _manifest_edit(_set(["input", "preprocessing", "from_source"], [0, 5, 1, 2])),
     r"source_shape .* permutation"),
    ("delegate-with-a-path", _manifest_edit(_set(["runtime", "delegates"], [{"name": "x", "library": "/tmp/evil.so"}])),
     r"bare library file name"),
    ("num-threads-text", _manifest_edit(_set(["runtime", "num_threads"], "many")), r"num_threads: expected an integer"),
    ("max-batch-zero", _manifest_edit(_set(["runtime", "max_batch"], 0)), r"max_batch"),
    ("unknown-exit-rule", _manifest_edit(_set(["stages", 0, "exit", "rule"], "vibes")), r"unknown exit rule 'vibes'"),
    ("stage-file-missing", lambda b: os.remove(stage_path(b, 2)), r"stage file missing"),
    ("stage-file-altered", lambda b: write_stage(b, 1, _flip(read_stage(b, 1), 5000), fix_sha=False),
     r"stage file altered"),
    ("flatbuffer-truncated", _stage_bytes(lambda d: d[:len(d) // 2]), r"not a valid TFLite flatbuffer"),
    ("flatbuffer-tiny", _stage_bytes(lambda d: d[:12]), r"not a TFLite model: 12 bytes"),
    ("flatbuffer-identifier", _stage_bytes(lambda d: d[:4] + b"XXXX" + d[8:]), r"file identifier b'XXXX'"),
    ("flatbuffer-root-offset", _stage_bytes(lambda d: put_u32(d, 0, 0xFFFFFFF0)), r"outside the file"),
    ("flatbuffer-schema-version", _flatbuffer_field("version", 2), r"schema version 2"),
    ("flatbuffer-vector-length", _flatbuffer_field("subgraph0.tensors.length", 0x3FFFFFFF),
     r"more than the file holds"),
    ("flatbuffer-signature-tensor", _flatbuffer_field("sig0.out0.tensor_index", 9999), r"names tensor 9999"),
    ("flatbuffer-opcode-index", _flatbuffer_field("op.opcode_index", 777), r"uses operator code 777"),
    ("flatbuffer-buffer-index", _flatbuffer_field("tensor.buffer", 1 << 20), r"uses buffer 1048576"),
    ("stage-interface-names", _manifest_edit(lambda d: (d["stages"][2]["outputs"][0].update(name="exit9"),
                                                        d["stages"][2]["exit"].update(name="exit9"))),
     r"signature inputs .* the manifest says"),
    ("stage-interface-dtype", _manifest_edit(_set(["stages", 0, "outputs", 1, "dtype"], "int8")),
     r"output 'exit0' is float32 .* the manifest says int8"),
    ("stage-interface-shape", _manifest_edit(_set(["stages", 0, "outputs", 1, "shape"], [None, 11])),
     r"output 'exit0' is float32 \['N', 10\] in the file, the manifest says float32 \['N', 11\]"),
    ("stage-files-swapped", _swap_stage_files, r"stage file .*stage_1.tflite has signature inputs"),
    ("exit-not-an-output", _manifest_edit(_set(["stages", 1, "exit", "name"], "c_block2_out_x")),
     r"exit.name: 'c_block2_out_x' is not one of the stage outputs"),
]

INPUT_CASES = [
    ("dtype-text", lambda: np.array([["a"]]), r"dtype <U1; allowed: real numbers"),
    ("dtype-complex", lambda: np.zeros((1, 32, 32, 1), np.complex64), r"dtype complex64"),
    ("dtype-object", lambda: np.array([None, 1], dtype=object), r"dtype object"),
    ("dtype-bool", lambda: np.zeros((1, 32, 32, 1), bool), r"dtype bool"),
    ("none", lambda: None, r"dtype object"),
    ("ragged-list", lambda: [[1.0, 2.0], [3.0]], r"cannot be read as an array"),
    ("wrong-shape", lambda: np.zeros((1, 28, 28, 1), np.float32), r"shape \(1, 28, 28, 1\), .*expects \(N, 32, 32, 1\)"),
    ("missing-batch-axis", lambda: np.zeros((32, 32, 1), np.float32), r"expects \(N, 32, 32, 1\)"),
    ("scalar", lambda: np.float32(1.0), r"data has shape \(\)"),
    ("nan", lambda: np.where(np.arange(2048).reshape(2, 32, 32, 1) == 1500, np.nan, 0.5).astype(np.float32),
     r"1 non-finite values .* in 1 of 2 samples, the first in sample 1"),
    ("inf", lambda: np.full((3, 32, 32, 1), np.inf, np.float32), r"3072 non-finite values"),
    ("float64-beyond-float32", lambda: np.full((1, 32, 32, 1), 1e300), r"non-finite values .*float32"),
    ("empty-batch", lambda: np.zeros((0, 32, 32, 1), np.float32), r"empty batch \(0 samples\)"),
    ("huge-batch", lambda: np.zeros((1025, 32, 32, 1), np.float32), r"batch of 1025 samples; allowed: at most "
                                                                      r"max_batch = 1024"),
]


@pytest.fixture(scope="module")
def demo_int8(demo_bundles):
    return demo_bundles("int8")


@pytest.fixture(scope="module")
def runner(demo_int8):
    return EarlyExitRunner(demo_int8)


def test_the_catalogue_is_large_enough():
    assert len(BUNDLE_CASES) + len(INPUT_CASES) >= 25
    assert len({c[0] for c in BUNDLE_CASES + INPUT_CASES}) == len(BUNDLE_CASES) + len(INPUT_CASES)


@pytest.mark.parametrize("case, damage, message", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_hostile_bundle_is_refused_before_any_interpreter(demo_int8, tmp_path, monkeypatch, case, damage, message):
    bundle = copy_bundle(demo_int8, str(tmp_path / "b"))
    damage(bundle)

    def no_interpreter_yet(*args, **kwargs):
        raise AssertionError("the runtime reached the interpreter with a hostile bundle ({})".format(case))

    monkeypatch.setattr(runner_mod, "load_backend", no_interpreter_yet)
    with pytest.raises((BundleError, ConfigError), match=message):
        EarlyExitRunner(bundle)


@pytest.mark.parametrize("case, make, message", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_hostile_input_is_a_data_error(runner, case, make, message):
    with pytest.raises(DataError, match=message):
        runner.run(make())
    assert runner.run(np.zeros((2, 32, 32, 1), np.float32)).predictions.shape == (2,)   # the runner still works


def test_garbage_thresholds_are_a_data_error(runner):
    with pytest.raises(DataError, match="expected a list of numbers"):
        runner.run(np.zeros((1, 32, 32, 1), np.float32), thresholds=["high", "low"])


def test_max_batch_comes_from_the_caller_or_the_manifest(demo_int8, tmp_path):
    x = np.zeros((5, 32, 32, 1), np.float32)
    with pytest.raises(DataError, match="max_batch = 4"):
        EarlyExitRunner(demo_int8, max_batch=4).run(x)
    bundle = copy_bundle(demo_int8, str(tmp_path / "b"))
    edit_manifest(bundle, _set(["runtime", "max_batch"], 3))
    r = EarlyExitRunner(bundle)
    assert r.max_batch == 3
    with pytest.raises(DataError, match="max_batch = 3"):
        r.run(x)
    assert EarlyExitRunner(bundle, max_batch=8).run(x).predictions.shape == (5,)
    with pytest.raises(ConfigError, match="max_batch: expected an integer"):
        EarlyExitRunner(demo_int8, max_batch=0)


def test_valid_inputs_in_other_forms_still_run(runner, test_split):
    x = test_split.x[:3]
    ref = runner.run(x).predictions
    for form in (x.astype(np.float64), (x * 255).astype(np.uint8) / np.float32(255), x.tolist(), x[::1, ::1]):
        np.testing.assert_array_equal(runner.run(form).predictions, ref)
    big = np.full((1, 32, 32, 1), 3e19, np.float32)     # finite, but its squares overflow: the slow path decides
    assert runner.run(big).predictions.shape == (1,)


def _cli(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300)


def test_cli_refuses_hostile_data_with_one_line(demo_int8, tmp_path):
    nan = str(tmp_path / "nan.npz")
    x = np.zeros((4, 32, 32, 1), np.float32)
    x[2, 0, 0, 0] = np.nan
    np.savez(nan, x=x)
    edgekit = os.path.join(os.path.dirname(sys.executable), "edgekit")
    for argv in ([edgekit, "run", demo_int8, nan], [sys.executable, "-m", "edgekit.runtime", demo_int8, nan, "--json"]):
        got = _cli(*argv)
        assert got.returncode == 2, got.stderr
        lines = got.stderr.strip().splitlines()
        assert lines[-1].startswith("edgekit: error: input 'image': 1 non-finite values"), got.stderr
        assert "Traceback" not in got.stderr
    huge = str(tmp_path / "huge.npy")
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 7, 32, 32, 1)})
    got = _cli(sys.executable, "-m", "edgekit.runtime", demo_int8, huge, "--max-batch", "16")
    assert got.returncode == 2 and "the header declares shape (10000000, 32, 32, 1)" in got.stderr, got.stderr
