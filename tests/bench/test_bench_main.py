"""`python -m edgekit.bench` as it runs on a board: numpy + interpreter only, Python 3.8 syntax, JSON out."""
import ast
import json
import os
import subprocess
import sys

import pytest

from edgekit.deploy.board_runs import profiles_table
from edgekit.deploy.package import RUNTIME_FILES, runtime_files
from tests.bundle_edit import copy_bundle, edit_manifest
from tests.conftest import ROOT, TEST

BOARD_FILES = ("__init__.py", "__main__.py", "latency.py", "energy.py", "curve.py", "run.py")
# what a board does not have: importing any of these fails in the subprocess
BLOCK = ("tensorflow", "keras", "yaml", "click", "matplotlib", "paramiko", "edgekit.targets", "edgekit.bench.report")
FAST = ["--runs", "10", "--warmup", "2", "--blocks", "1", "--idle-seconds", "0.2"]


def test_board_files_are_python38_and_shipped():
    for name in BOARD_FILES:
        path = os.path.join(ROOT, "edgekit", "bench", name)
        with open(path) as f:
            src = f.read()
        ast.parse(src, filename=path, feature_version=(3, 8))
        assert len(src.splitlines()) < 400, path
    shipped = {f.rel for f in runtime_files()}
    for name in BOARD_FILES:
        assert "runtime/edgekit/bench/" + name in shipped
    assert "runtime/edgekit/bench/meters/base.py" in shipped
    assert not any(p.endswith(("report.py", "plots.py", "command.py")) for p in RUNTIME_FILES)


def board(*args: str) -> subprocess.CompletedProcess:
    code = ("import runpy, sys\n"
            "for mod in {!r}:\n"
            "    sys.modules[mod] = None\n"
            "sys.argv = ['python -m edgekit.bench'] + {!r}\n"
            "try:\n"
            "    runpy.run_module('edgekit.bench', run_name='__main__')\n"
            "finally:\n"
            "    assert 'tensorflow' not in [m for m, v in sys.modules.items() if v is not None]\n").format(
                BLOCK, [str(a) for a in args])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_on_board_json_without_tensorflow_yaml_or_click(demo_bundles):
    bundle = demo_bundles("float32", "host-x86_64")
    got = board(bundle, TEST, "--json", "--profiles", json.dumps(profiles_table()), "--meter", "power-model", *FAST)
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    assert res["schema"] == "edgekit.bench/1" and res["bundle"]["target"] == "host-x86_64"
    assert len(res["raw_ms"]["early_exit"]) == 10 and res["early_exit"]["accuracy"] > 0.9
    e = res["energy"]
    assert (e["meter"], e["kind"]) == ("power-model", "estimated") and e["reason"].startswith("asked for by name")
    assert res["protocol"]["profile"]["power_model"] == {"idle_w": 10.0, "active_w": 35.0,
                                                         "source": profiles_table()["host-x86_64"]["power_model"]
                                                         ["source"]}
    assert len(res["curve"]["points"]) > 5


def test_on_board_without_flags_uses_the_power_model_the_bundle_carries(demo_bundles):
    """A board with no power sensor and no targets/ (yaml and edgekit.targets are blocked): the manifest's
    energy section, written at conversion from the target's profile, gives the power model."""
    bundle = demo_bundles("float32", "host-x86_64")
    with open(os.path.join(bundle, "manifest.json")) as f:
        carried = json.load(f)["energy"]
    want = dict(profiles_table()["host-x86_64"])
    assert carried == want
    got = board(bundle, TEST, "--json", *FAST)
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    assert res["protocol"]["profile"]["power_model"] == want["power_model"]
    e = res["energy"]
    if e["meter"] == "power-model":           # a machine whose RAPL is readable measures instead
        assert e["kind"] == "estimated" and e["reason"].startswith("no real sensor is readable")
    assert e["early_exit"]["joules_total"] > 0


def _without_energy(bundle: str, dest: str, value=None) -> str:
    copy_bundle(bundle, dest)
    edit_manifest(dest, lambda d: d.pop("energy") if value is None else d.update(energy=value))
    return dest


def test_on_board_bundle_without_energy_section_says_why(demo_bundles, tmp_path):
    old = _without_energy(demo_bundles("float32", "host-x86_64"), str(tmp_path / "old"))
    got = board(old, TEST, "--meter", "power-model", *FAST)
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert lines[-1].startswith("edgekit: error: ") and "carries no power model" in lines[-1], got.stderr
    ok = board(old, TEST, "--json", "--profiles", json.dumps(profiles_table()), "--meter", "power-model", *FAST)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("value, needle", [
    ("cheap", "manifest.energy: expected an object"),
    ({"energy_meter": "power-model", "power_model": {"idle_w": 5, "active_w": 2, "source": "x"}},
     "manifest.energy.power_model: active_w 2 is below idle_w 5"),
    ({"energy_meter": "volts", "power_model": {"idle_w": 1, "active_w": 2, "source": "x"}},
     "manifest.energy.energy_meter: got 'volts'"),
])
def test_on_board_bad_energy_section_is_one_line(demo_bundles, tmp_path, value, needle):
    bad = _without_energy(demo_bundles("float32", "host-x86_64"), str(tmp_path / "bad"), value)
    got = board(bad, TEST, *FAST)
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert lines[-1].startswith("edgekit: error: ") and needle in lines[-1], got.stderr


@pytest.mark.parametrize("args, needle", [
    (["--profiles", "{}"], "no board profile for the bundle's target 'host-x86_64'; profiles given: none"),
    (["--profiles", "not json"], "--profiles: not JSON"),
    (["--data", TEST], "give the data file once, as DATA or --data DATA; got both"),
])
def test_on_board_errors_are_one_line(demo_bundles, args, needle):
    got = board(demo_bundles("float32", "host-x86_64"), TEST, *(args + FAST))
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert lines[-1].startswith("edgekit: error: ") and needle in lines[-1], got.stderr
