"""Mistakes a new user makes, each refused in one line `edgekit: error: ...` on stderr with exit code 2, the cheap
ones before TensorFlow is imported; warnings where a result would be quietly wrong."""
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

# Runs the CLI in a fresh interpreter and reports whether TensorFlow got imported on the way to the answer.
_PROBE = """
import sys
{block}
from edgekit.cli import main
try:
    main(sys.argv[1:], prog_name="edgekit")
    code = 0
except SystemExit as exc:
    code = exc.code
print("TF-IMPORTED" if "tensorflow" in sys.modules else "TF-NOT-IMPORTED", code)
"""
NO_TF = "sys.modules['tensorflow'] = None   # as if TensorFlow were not installed"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def probe(*args, block=""):
    got = subprocess.run([sys.executable, "-c", _PROBE.format(block=block)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), got.stderr
    return got.stdout.split()[-2:], lines[0]


@pytest.fixture()
def existing_bundle(tmp_path):
    out = tmp_path / "out"
    (out / "raspberry-pi-5").mkdir(parents=True)
    (out / "raspberry-pi-5" / "manifest.json").write_text("{}")
    return out


@pytest.mark.parametrize("extra, needles", [
    (("-t", "raspberry-pi-9"), ["unknown target 'raspberry-pi-9'", "raspberry-pi-5"]),
    (("-t", "raspberry-pi-5", "--precision", "int3"), ["unknown precision 'int3'", "int16x8", "adaptive"]),
    (("-t", "raspberry-pi-5", "--prune-flops", "1.5"), ["outside (0, 1]"]),
    (("-t", "raspberry-pi-5", "--threshold-data", TEST), ["--threshold-data only apply to fitted thresholds"]),
    (("-t", "raspberry-pi-5", "--precision", "int8", "--tolerance", "0.01"), ["only apply with --precision adaptive"]),
])
def test_convert_typos_are_refused_before_tensorflow_loads(tmp_path, extra, needles):
    (flag, code), line = probe("convert", DEMO, "--calib", CALIB, "-o", tmp_path / "o", *extra)
    assert (flag, code) == ("TF-NOT-IMPORTED", "2"), line
    assert all(n in line for n in needles), line
    assert not (tmp_path / "o").exists()


def test_an_existing_output_is_refused_before_tensorflow_loads(existing_bundle):
    (flag, code), line = probe("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", existing_bundle)
    assert (flag, code) == ("TF-NOT-IMPORTED", "2") and "already exists" in line and "--force" in line


@pytest.mark.parametrize("args", [
    ("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", "{tmp}/o"),
    ("prune", DEMO, "--prune-flops", "0.5", "--calib", CALIB, "-o", "{tmp}/p.keras"),
    ("demo",),
])
def test_without_tensorflow_one_line_names_the_extra(tmp_path, args):
    (flag, code), line = probe(*[a.format(tmp=tmp_path) for a in args], block=NO_TF)
    assert code == "2" and "pip install 'edgekit[convert]'" in line and "tensorflow" in line


def test_every_missing_option_is_named_at_once():
    line = one_line(cli("convert", DEMO), "--target", "--calib", "--out")
    assert "Usage" not in line
    one_line(cli("convert"), "MODEL", "--target", "--calib", "--out")
    one_line(cli("calibrate"), "BUNDLE", "--max-accuracy-drop")


def test_click_usage_errors_are_one_line(demo_bundles, tmp_path):
    bundle = demo_bundles("int8")
    one_line(cli("bench", bundle, "--data", TEST, "--runs", "abc"), "--runs", "'abc' is not a valid integer")
    one_line(cli("run", bundle, tmp_path), "DATA", "is a directory")
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line(cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", afile), "--out", "is a file")
    one_line(cli("bench", bundle, "--data", TEST, "--meter", "wattmeter"), "unknown energy meter 'wattmeter'", "rapl")
    one_line(cli("nosuchcommand"), "No such command")
    one_line(cli("run", bundle, TEST, "--threads", "0"), "threads 0")


def test_broken_inventory_yaml_is_one_line(demo_bundles, tmp_path):
    bad = tmp_path / "hosts.yaml"
    bad.write_text("boards:\n  - host: [unclosed\n    user: pi\n")
    one_line(cli("flash", demo_bundles("int8"), "--inventory", bad), str(bad))


def test_run_anytime_without_budget_and_a_zero_timeout(demo_bundles):
    bundle = demo_bundles("int8")
    line = one_line(cli("run", bundle, TEST, "--anytime"), "--anytime", "--budget-ms")
    assert "None" not in line
    line = one_line(cli("run", bundle, TEST, "--host", "pi@board", "--timeout", "0"), "--timeout", "0<x<=3600")


def test_renamed_options_keep_their_old_spellings_hidden(demo_bundles, tmp_path):
    help_text = cli("prune", "--help").stdout
    assert "--prune-flops" in help_text and "--flops" not in help_text.replace("--prune-flops", "")
    assert "--rule" not in cli("calibrate", "--help").stdout.replace("--exit-rule", "")
    # the old spelling still reaches the option: an invalid value through it is refused by the same check
    one_line(cli("prune", DEMO, "--flops", "1.5", "--calib", CALIB, "-o", tmp_path / "p.keras"), "outside (0, 1]")
    one_line(cli("calibrate", demo_bundles("int8"), "--max-accuracy-drop", "0.01", "--rule", "biggest"),
             "unknown exit rule 'biggest'", "max_softmax")
    assert os.listdir(tmp_path) == []


def test_every_help_has_an_example():
    from edgekit.cli import COMMANDS

    assert "Example" in cli("--help").stdout
    for command in COMMANDS:
        res = cli(command.name, "--help")
        assert res.exit_code == 0, command.name
        example = res.stdout.split("Example:")[-1]
        assert "Example:" in res.stdout and "$ edgekit {}".format(command.name) in example, command.name


def test_run_and_bench_take_data_the_same_way(demo_bundles):
    bundle = demo_bundles("int8")
    by_arg = json.loads(cli("run", bundle, TEST, "--json").stdout)
    by_opt = json.loads(cli("run", bundle, "--data", TEST, "--json", "--interpreter", "ai_edge_litert",
                            "--max-batch", "2048").stdout)
    assert by_arg["exits"] == by_opt["exits"]
    one_line(cli("run", bundle, TEST, "--data", CALIB), "give the data file once")
    one_line(cli("bench", bundle), "missing the data file", "--data")


def test_inputs_far_outside_the_calibration_range_warn(demo_bundles, tmp_path):
    from edgekit.data import load_data

    bundle = tmp_path / "b"
    shutil.copytree(demo_bundles("int8"), bundle)
    report = json.loads((bundle / "report.json").read_text())
    report["calibration"]["input_range"] = [0.0, 1.0]     # as convert records it (the digits are 0..1 floats)
    (bundle / "report.json").write_text(json.dumps(report))
    ds = load_data(TEST)
    pixels = tmp_path / "pixels.npz"
    np.savez(pixels, x=np.round(ds.x * 255.0).astype(np.float32), y=ds.y)
    res = cli("run", bundle, pixels)
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("edgekit: warning: ")]
    assert len(warning) == 1 and "[0, 255]" in warning[0] and "calibration data's [0, 1]" in warning[0]
    quiet = cli("run", bundle, TEST)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_the_choices_spelled_in_the_cli_are_the_registries():
    from edgekit.cli import options
    from edgekit.convert.exits import TARGETS
    from edgekit.convert.precision.objective import OBJECTIVES
    from edgekit.convert.prune import ALLOCATIONS
    from edgekit.convert.pruning.importance import IMPORTANCE
    from edgekit.convert.quantize import check_precision
    from edgekit.fit.thresholds import OBJECTIVES as FIT_OBJECTIVES

    assert options.OBJECTIVES == OBJECTIVES and options.FIT_OBJECTIVES == FIT_OBJECTIVES
    assert options.HEAD_TARGETS == TARGETS and options.ALLOCATIONS == ALLOCATIONS
    assert options.IMPORTANCES == tuple(IMPORTANCE)
    assert [check_precision(p) for p in options.precisions()[:-1]] == list(options.precisions()[:-1])
    assert options.precisions()[-1] == "adaptive"
