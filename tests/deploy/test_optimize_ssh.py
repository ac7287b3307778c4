"""`edgekit optimize --host`: every candidate is flashed to the board, its stage costs come from the board's
runtime (`edgekit profile --host`) and the points it chooses between are timed there by `edgekit bench`."""
import json
import os
import subprocess

import pytest

from edgekit.manifest import load_bundle
from tests.conftest import CALIB, ROOT
from tests.optimize_model import tiny_model

from .conftest import EDGEKIT

pytestmark = pytest.mark.ssh
EVAL = os.path.join(ROOT, "calibration", "digits_val.npz")


def test_optimize_host_measures_every_cost_on_the_board(tmp_path, board, common):
    model = tiny_model(tmp_path / "tiny.keras", CALIB)
    out = tmp_path / "out"
    got = subprocess.run([EDGEKIT, "optimize", str(model), "--target", "host-x86_64", "--calib", CALIB, "--eval",
                          EVAL, "--max-accuracy-drop", "0.02", "--latency-ms", "1000", "--precisions", "float32",
                          "--exit-counts", "none", "--prune-fractions", "none", "--cache", str(tmp_path / "cache"),
                          "-o", str(out), "--json"] + common, capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["board"] == board.label
    assert {p["costs_measured_on"] for p in report["points"]} == {"board"}
    timed = [p for p in report["points"] if p["latency_from"] == "end to end"]
    assert report["chosen"] in timed and len(timed) >= 2       # the baseline at full depth and the choice
    assert all(p["energy_kind"] in ("measured", "estimated") for p in timed)
    m = load_bundle(str(out / "host-x86_64"))
    assert m.extra["costs"]["measured_on"] == "board" and m.extra["costs"]["host"] == board.label
    releases = os.listdir(os.path.join(board.remote_dir, "releases"))
    assert m.bundle_id in releases                              # the chosen bundle ran there, thresholds and all
