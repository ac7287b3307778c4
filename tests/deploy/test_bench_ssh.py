"""`edgekit run --host` and `edgekit bench --host` against a real sshd: the board runs, the report comes back."""
import json
import os
import subprocess

import pytest

from edgekit.deploy import flash
from edgekit.manifest import read_manifest

from .conftest import EDGEKIT, one_line_error

pytestmark = pytest.mark.ssh
FAST = ["--runs", "10", "--warmup", "2", "--blocks", "1", "--idle-seconds", "0.2"]


def edgekit(*args) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT] + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_run_host_gives_the_local_answers(board, bundles, data_file, common):
    flash(str(bundles["A"]), board)
    local = json.loads(edgekit("run", bundles["A"], data_file, "--json").stdout)
    got = edgekit("run", "current", data_file, "--json", *common)
    assert got.returncode == 0, got.stderr
    remote = json.loads(got.stdout)
    assert remote["predictions"] == local["predictions"] and remote["exits"] == local["exits"]
    assert remote["host"] == board.label
    by_dir = edgekit("run", bundles["A"], data_file, "--full-depth", *common)      # a flashed local bundle dir
    assert by_dir.returncode == 0, by_dir.stderr
    assert by_dir.stdout.startswith("{}: 20 samples".format(board.label))
    assert "exit histogram [0, 20]" in by_dir.stdout
    held = edgekit("run", "current", data_file, "--target-ms", "1e9", "--json", *common)   # the load controller
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["controller"]["calls"] == 20


def test_bench_host_runs_on_the_board_and_brings_the_report_back(tmp_path, board, bundles, data_file, common):
    a = read_manifest(str(bundles["A"])).bundle_id
    flash(str(bundles["A"]), board)
    out = tmp_path / "report"
    got = edgekit("bench", "current", "--data", data_file, "--report", out, "--json", *FAST, *common)
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    assert res["host"] == board.label and res["bundle"]["bundle_id"] == a and res["bundle"]["target"] == "host-x86_64"
    assert res["early_exit"]["calls"] == 10 and res["energy"]["meter"] in ("rapl", "power-model")
    assert res["protocol"]["profile"]["name"] == "host-x86_64"
    rep = json.loads((out / "report.json").read_text())
    assert rep["host"] == board.label and len(rep["raw_ms"]["full_depth"]) == 10
    assert {"latency_histogram.png", "energy.png", "energy.csv", "latency.csv"} <= set(os.listdir(out))
    assert os.listdir(os.path.join(board.remote_dir, "tmp")) == []          # the uploaded data was removed


def test_bench_host_failures_are_one_line_and_write_nothing(tmp_path, board, bundles, data_file, common):
    flash(str(bundles["A"]), board)
    out = tmp_path / "reports" / "report"
    msg = one_line_error(edgekit("bench", "current", "--data", data_file, "--report", out, "--meter",
                                 "jetson-ina3221", *FAST, *common))
    assert "on the board: energy meter 'jetson-ina3221' is not available here" in msg
    assert not out.parent.exists()
    msg = one_line_error(edgekit("bench", "somewhere", "--data", data_file, *FAST, *common))
    assert "with --host, BUNDLE 'somewhere' must be a release on the board" in msg
    msg = one_line_error(edgekit("bench", "previous", "--data", data_file, *FAST, *common))
    assert "no release 'previous'" in msg
    msg = one_line_error(edgekit("run", "current", data_file, "--budget-ms", "1", *common))
    assert "--budget-ms/--anytime run locally only" in msg
