"""`edgekit profile --host`: the board measures its own stage costs, the bundle here records them as the board's."""
import json
import shutil
import subprocess

import pytest

from edgekit.deploy import flash
from edgekit.manifest import load_bundle

from .conftest import EDGEKIT, one_line_error

pytestmark = pytest.mark.ssh


def edgekit(*args) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT] + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_profile_host_measures_on_the_board_and_writes_the_local_bundle(tmp_path, board, bundles, common):
    bundle = tmp_path / "A"
    shutil.copytree(str(bundles["A"]), str(bundle))
    (bundle / "manifest.sig").write_text("{}")               # signed: the rewrite must say it needs signing again
    flash(str(bundle), board)
    got = edgekit("profile", bundle, "--threads", "1", "--json", *common)
    assert got.returncode == 0, got.stderr
    section = json.loads(got.stdout)
    assert section["measured_on"] == "board" and section["host"] == board.label
    assert section["interpreter"]["name"] and section["machine"]["cores"] >= 1
    assert [sorted(s["by_threads"]) for s in section["stages"]] == [["1"], ["1"]]
    m = load_bundle(str(bundle))
    assert m.extra["costs"]["measured_on"] == "board" and m.extra["runtime"]["stage_threads"] == [1, 1]
    assert [s.latency_ms for s in m.stages] == [s["latency_ms"] for s in section["stages"]]
    notes = got.stderr.strip().splitlines()
    assert len(notes) == 1 and "was signed" in notes[0] and "edgekit sign" in notes[0]
    assert not (bundle / "manifest.sig").exists()


def test_profile_host_needs_the_bundle_flashed_and_run_host_takes_threads(tmp_path, board, bundles, data_file,
                                                                         common):
    flash(str(bundles["A"]), board)
    local = json.loads(edgekit("run", bundles["A"], data_file, "--json").stdout)
    got = edgekit("run", "current", data_file, "--threads", "2", "--json", *common)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["predictions"] == local["predictions"]
    refused = one_line_error(edgekit("run", "current", data_file, "--threads", "0", *common))
    assert "threads 0: allowed an integer from 1 to 256" in refused
    msg = one_line_error(edgekit("profile", bundles["B"], *common))
    assert "no release" in msg and "flash a bundle first" in msg
