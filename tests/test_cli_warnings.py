"""Results that would be quietly wrong are said so: thresholds fitted without labels, a never-taken exit shown as
a number, convert's measured accuracy left unsaid."""
import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from tests.conftest import CALIB, DEMO, TEST


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def warnings_of(res):
    return [ln for ln in res.stderr.splitlines() if ln.startswith("edgekit: warning: ")]


@pytest.fixture()
def bundle(demo_bundles, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(demo_bundles("int8"), dst)
    return dst


def test_calibrate_without_labels_says_agreement(bundle, tmp_path):
    from edgekit.data import load_data

    unlabelled = tmp_path / "x.npy"
    np.save(unlabelled, load_data(TEST).x)
    res = cli("calibrate", bundle, "--data", unlabelled, "--max-accuracy-drop", "0.02")
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[0].split()
    assert header[:3] == ["operating", "point", "agreement"]
    got = warnings_of(res)
    assert len(got) == 1 and "has no labels" in got[0] and "agreement with the last exit" in got[0]
    labelled = cli("calibrate", bundle, "--data", TEST, "--max-accuracy-drop", "0.02")
    assert labelled.stdout.splitlines()[0].split()[2] == "accuracy" and not warnings_of(labelled)


def test_inspect_shows_a_never_taken_exit_as_never(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["stages"][1]["exit"]["threshold"] = 1e9      # what the fit writes for an exit it never takes
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    res = cli("inspect", bundle)
    assert res.exit_code == 0, res.output
    assert re.search(r"\sexit1\s+never\s", res.stdout) and re.search(r"\sexit0\s+0\.\d{3}\s", res.stdout)
    assert "1000000000" not in res.stdout


def test_convert_prints_the_accuracy_it_measured_and_refuses_an_unused_holdout(tmp_path):
    res = cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", tmp_path / "o", "--holdout", TEST)
    assert res.exit_code == 2 and "--holdout only apply to fitted thresholds" in res.stderr
    res = cli("convert", DEMO, "-t", "raspberry-pi-5", "--calib", CALIB, "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("accuracy of each exit alone")]
    report = json.loads((tmp_path / "o" / "raspberry-pi-5" / "report.json").read_text())
    want = " ".join("{:.2%}".format(s["calib_accuracy_tflite"]) for s in report["stages"])
    assert len(line) == 1 and line[0].endswith(want)
    low, high = report["calibration"]["input_range"]
    assert 0.0 <= low < high <= 1.0
