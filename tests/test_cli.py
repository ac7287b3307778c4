"""The CLI contract: JSON shapes scripts rely on, and every bad input -> one line, exit 2, nothing written."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from tests.conftest import CALIB, DEMO, ROOT, TEST


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("edgekit: error: ")
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_targets_json():
    res = cli("targets", "--json")
    assert res.exit_code == 0
    got = json.loads(res.stdout)
    assert set(got) == {"targets"}                  # one object, as every --json
    names = [t["name"] for t in got["targets"]]
    assert names == sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "targets"))
                           if f.endswith(".yaml") and not f.startswith("_"))
    assert "raspberry-pi-5" in names and "jetson-orin-nano" in names


def test_convert_then_inspect_run_bench_json(tmp_path):
    out = tmp_path / "out"
    res = cli("convert", DEMO, "--target", "raspberry-pi-4", "--calib", CALIB, "-o", out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    bundle = out / "raspberry-pi-4"
    assert report["bundle_dir"] == str(bundle) and report["precision"] == "int8"
    assert sorted(os.listdir(out)) == ["raspberry-pi-4"]
    assert sorted(os.listdir(bundle)) == ["manifest.json", "report.json", "stage_0.tflite", "stage_1.tflite",
                                          "stage_2.tflite"]
    m = json.loads(cli("inspect", bundle, "--json").stdout)
    assert m["schema_version"] == 1 and len(m["stages"]) == 3
    for st in m["stages"]:
        assert {"file", "sha256", "precision", "inputs", "outputs", "exit"} <= set(st)
        assert {"name", "threshold"} <= set(st["exit"])
    r = json.loads(cli("run", bundle, TEST, "--json").stdout)
    assert set(r) >= {"predictions", "exits", "accuracy", "exit_histogram"}
    assert r["accuracy"] > 0.95 and sum(r["exit_histogram"]) == len(r["exits"])
    full = json.loads(cli("run", bundle, TEST, "--json", "--full-depth").stdout)
    assert full["exit_histogram"][:2] == [0, 0]
    b = json.loads(cli("bench", bundle, "--data", TEST, "--runs", "30", "--warmup", "5", "--json").stdout)
    for mode in ("early_exit", "full_depth"):
        assert set(b[mode]["latency_ms"]) >= {"p50", "p90", "p99", "mean"}
        assert b[mode]["accuracy"] is not None
    assert b["speedup"] == pytest.approx(b["full_depth"]["latency_ms"]["mean"] / b["early_exit"]["latency_ms"]["mean"])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.keras").write_bytes(b"this is not a zip archive")
    inp = keras.Input((32, 32, 1), name="image")
    single = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(inp)))
    single.save(str(d / "single.keras"))
    np.savez(d / "no_x.npz", images=np.zeros((4, 32, 32, 1), np.float32))
    np.savez(d / "wrong_shape.npz", x=np.zeros((4, 28, 28, 1), np.float32), y=np.zeros(4, np.int64))
    return d


@pytest.mark.parametrize("model, target, calib, needles", [
    ("{d}/missing.keras", "raspberry-pi-5", CALIB, ["model file not found"]),
    ("{d}/corrupt.keras", "raspberry-pi-5", CALIB, ["is not a readable Keras model"]),
    ("{d}/single.keras", "raspberry-pi-5", CALIB, ["single output and no exits"]),
    (DEMO, "raspberry-pi-9", CALIB, ["unknown target 'raspberry-pi-9'", "raspberry-pi-4", "jetson-nano"]),
    (DEMO, "raspberry-pi-5", "{d}/no_x.npz", ["has no array 'x'", "images"]),
    (DEMO, "raspberry-pi-5", "{d}/wrong_shape.npz", ["(4, 28, 28, 1)", "(N, 32, 32, 1)"]),
])
def test_convert_bad_input(bad_files, tmp_path, model, target, calib, needles):
    out = tmp_path / "out"
    res = cli("convert", model.format(d=bad_files), "--target", target, "--calib", calib.format(d=bad_files),
              "-o", out)
    assert_one_line_error(res, *needles)
    assert not out.exists() or os.listdir(out) == []


def test_precision_not_on_target(tmp_path):
    res = cli("convert", DEMO, "-t", "raspberry-pi-4", "--calib", CALIB, "-o", tmp_path, "--precision", "int4")
    assert_one_line_error(res, "unknown precision 'int4'", "int16x8")


@pytest.fixture()
def bundle_copy(demo_bundles, tmp_path):
    dst = tmp_path / "out" / "raspberry-pi-5"
    shutil.copytree(demo_bundles("int8"), dst)
    return dst


def test_existing_bundle_is_not_overwritten(bundle_copy):
    before = {f: (bundle_copy / f).read_bytes() for f in os.listdir(bundle_copy)}
    res = cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", bundle_copy.parent)
    assert_one_line_error(res, "already exists", "--force")
    assert {f: (bundle_copy / f).read_bytes() for f in os.listdir(bundle_copy)} == before


def test_failed_forced_convert_keeps_the_old_bundle(bundle_copy, bad_files):
    before = {f: (bundle_copy / f).read_bytes() for f in os.listdir(bundle_copy)}
    res = cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", bad_files / "wrong_shape.npz",
              "-o", bundle_copy.parent, "--force")
    assert_one_line_error(res, "(N, 32, 32, 1)")
    assert {f: (bundle_copy / f).read_bytes() for f in os.listdir(bundle_copy)} == before
    assert os.listdir(bundle_copy.parent) == ["raspberry-pi-5"]


def test_forced_convert_replaces_the_bundle(bundle_copy):
    (bundle_copy / "stale.txt").write_text("old")
    res = cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", bundle_copy.parent, "--force",
              "--threshold", "0.5")
    assert res.exit_code == 0, res.output
    assert not (bundle_copy / "stale.txt").exists()
    assert json.loads((bundle_copy / "manifest.json").read_text())["stages"][0]["exit"]["threshold"] == 0.5


def test_missing_stage_file(bundle_copy):
    os.remove(bundle_copy / "stage_2.tflite")
    assert_one_line_error(cli("run", bundle_copy, TEST), "stage file missing", "stage_2.tflite")


def test_altered_stage_file(bundle_copy):
    with open(bundle_copy / "stage_0.tflite", "ab") as f:
        f.write(b"\x00")
    assert_one_line_error(cli("inspect", bundle_copy), "stage file altered", "stage_0.tflite")


def test_unknown_schema_version(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["schema_version"] = 7
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(cli("run", bundle_copy, TEST), "unknown schema_version 7", "reads 1")


def test_run_data_shape_mismatch(bundle_copy, bad_files):
    assert_one_line_error(cli("run", bundle_copy, bad_files / "wrong_shape.npz"), "(4, 28, 28, 1)")


def test_bench_bad_runs(bundle_copy):
    assert_one_line_error(cli("bench", bundle_copy, "--data", TEST, "--runs", "0"), "--runs must be at least 1")


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(tmp_path / "nope.keras"), "-t",
                           "raspberry-pi-5", "--calib", CALIB, "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["edgekit: error: model file not found: {}".format(
        tmp_path / "nope.keras")]
    assert proc.stdout == ""
