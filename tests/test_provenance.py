"""Thresholds fitted on data the model never saw: the held-out split, fingerprints, training records, warnings."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.fit.provenance import HELD_OUT, data_record, overlap_warning, part_of, training_part
from edgekit.data import Dataset, load_data
from edgekit.errors import DataError
from edgekit.fingerprint import (fingerprint, holdout_split, read_sidecar, sample_hashes, sidecar_path,
                                 trained_hashes, training_record, write_sidecar)
from tests.conftest import CALIB, DEMO, TEST


def _data(n=120, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4, 4, 1)).astype(np.float32), rng.integers(0, classes, n)


def test_holdout_split_is_stratified_deterministic_and_independent_of_order():
    x, y = _data()
    fit, held = holdout_split(x, y)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(x)))
    for c in range(3):
        n_c, h_c = int((y == c).sum()), int((y[held] == c).sum())
        assert h_c == (n_c + 3) // 4                                       # one in four of each class
    perm = np.random.default_rng(1).permutation(len(x))
    _, held_p = holdout_split(x[perm], y[perm])
    as_set = lambda xs: set(sample_hashes(xs))                             # noqa: E731
    assert as_set(x[perm][held_p]) == as_set(x[held])                      # the same samples, whatever the order
    _, held_u = holdout_split(x)                                           # unlabelled: one in four overall
    assert len(held_u) == (len(x) + 3) // 4
    with pytest.raises(DataError, match="cannot be split"):
        holdout_split(x[:1], y[:1])


def test_fingerprints_name_the_arrays_and_count():
    x, y = _data()
    a = fingerprint(x, y, "a.npz")
    assert a["count"] == 120 and a["labelled"] and a["path"] == "a.npz" and len(a["sha256"]) == 64
    assert fingerprint(x, y)["sha256"] == a["sha256"]
    assert fingerprint(x, (y + 1) % 3)["sha256"] != a["sha256"] and fingerprint(x)["sha256"] != a["sha256"]


def test_training_record_roundtrip_and_overlap_warning(tmp_path):
    x, y = _data()
    model = str(tmp_path / "m.keras")
    write_sidecar(model, training_record([{"role": "trained", "x": x[:60], "y": y[:60], "path": "t.npz"},
                                          {"role": "early stopping", "x": x[60:], "y": y[60:]}]))
    rec = read_sidecar(model)
    assert len(trained_hashes(rec)) == 60 and "sample_hashes" not in rec["data"][1]
    data = data_record(Dataset(x, y), "c.npz", model, [("exit heads", Dataset(x[100:], y[100:]), "c.npz")])
    assert data["model_training"][0]["count"] == 60 and data["trained_by_edgekit"][0]["role"] == "exit heads"
    warn = overlap_warning(Dataset(x[50:]), "c.npz", data)
    assert warn.startswith("30 of the 70 samples thresholds were fitted on (c.npz) are data the model was trained")
    assert overlap_warning(Dataset(x[60:100]), "c.npz", data) is None
    with open(sidecar_path(model), "w") as f:
        f.write("[]")
    with pytest.raises(DataError, match="expected a JSON object with format"):
        read_sidecar(model)
    assert data_record(Dataset(x), "c.npz", str(tmp_path / "none.keras"), [])["model_training"].startswith("unknown")


def test_the_demo_was_trained_on_the_fit_part_of_the_calibration_split_only():
    calib = load_data(CALIB)
    trained = trained_hashes(read_sidecar(DEMO))
    held = part_of(calib, HELD_OUT)
    assert len(trained) == len(training_part(calib, True).x) == len(calib) - len(held)
    assert not set(sample_hashes(held.x)) & trained                        # thresholds fit on unseen samples
    assert not set(sample_hashes(load_data(TEST).x)) & trained


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The demo converted with --max-accuracy-drop and no threshold data (the user's first command)."""
    out = tmp_path_factory.mktemp("fitted")
    got = CliRunner().invoke(main, ["convert", DEMO, "--target", "host-x86_64", "--precision", "float32", "--calib",
                                    CALIB, "-o", str(out), "--max-accuracy-drop", "0.01", "--holdout", TEST])
    return got, os.path.join(str(out), "host-x86_64")


def test_convert_fits_thresholds_on_the_held_out_part_and_says_so(fitted):
    got, bundle = fitted
    assert got.exit_code == 0, got.output
    assert ": a held-out part of the calibration data (274 of 1078 samples" in got.output
    assert "edgekit: warning" not in got.output
    with open(os.path.join(bundle, "report.json")) as f:
        report = json.load(f)
    th = report["thresholds"]
    assert th["part"] == "held-out" and th["samples"] == 274 and th["warnings"] == []
    assert th["fingerprint"]["count"] == 274
    assert report["data"]["calibration"]["count"] == 1078
    assert report["data"]["model_training"][0]["role"] == "trained"
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert manifest["thresholds"]["expected_accuracy"] == th["fit"]["chosen"]["accuracy"]   # the held-out part's
    costs = manifest["costs"]                          # stage costs by the shared protocol, labelled as measured here
    assert costs["measured_on"] == "converting-machine" and costs["machine"]["cores"] >= 1
    assert [s["latency_ms"] for s in manifest["stages"]] == [c["latency_ms"] for c in costs["stages"]]
    assert manifest["runtime"]["stage_threads"] == [c["threads"] for c in costs["stages"]]
    assert th["stage_costs_from"] == "measured on the converting-machine"


def test_threshold_data_the_model_was_trained_on_is_kept_but_warned_about(fitted, tmp_path):
    import shutil

    _, bundle = fitted
    copy = str(tmp_path / "b")
    shutil.copytree(bundle, copy)
    got = CliRunner().invoke(main, ["calibrate", copy, "--data", CALIB, "--max-accuracy-drop", "0.01"])
    assert got.exit_code == 0, got.output
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: warning: 804 of the 1078 samples thresholds were fitted")
    with open(os.path.join(copy, "report.json")) as f:
        th = json.load(f)["thresholds"]
    assert th["part"] == "all" and th["samples"] == 1078 and len(th["warnings"]) == 1


def test_calibrate_refits_on_what_the_bundle_was_fitted_on(fitted, tmp_path):
    import shutil

    _, bundle = fitted
    copy = str(tmp_path / "b")
    shutil.copytree(bundle, copy)
    got = CliRunner().invoke(main, ["calibrate", copy, "--max-accuracy-drop", "0.01", "--json"])
    assert got.exit_code == 0, got.output
    section = json.loads(got.stdout)
    assert (section["data"], section["part"], section["samples"], section["warnings"]) == (CALIB, "held-out", 274, [])
    os.remove(os.path.join(copy, "report.json"))
    got = CliRunner().invoke(main, ["calibrate", copy, "--max-accuracy-drop", "0.01"])
    assert got.exit_code == 2 and "records no data its thresholds were fitted on; give --data" in got.stderr
