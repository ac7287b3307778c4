"""A plain install works: the wheel built from this checkout carries the board profiles and no demo models, and
an edgekit installed from it (outside the checkout) lists the targets, benches a bundle on a "board" without
a power sensor, and says that the demo needs a source checkout.

The wheel is built from a copy of the checkout (so that nothing is written here) and installed with
`pip install --target` (no index, no dependencies: this virtualenv provides numpy, the interpreter, yaml and
click), then run with only that directory ahead of everything on the path.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST

SOURCES = ("setup.py", "MANIFEST.in", "edgekit", "targets")
FAST = ["--runs", "10", "--warmup", "2", "--blocks", "1", "--idle-seconds", "0.2"]


def _profiles() -> list:
    return sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "targets")) if f.endswith(".yaml") and
                  not f.startswith("_"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "_targets"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    got = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    (whl,) = out.glob("edgekit-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    got = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable] + list(args), cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=600)


def test_wheel_carries_the_profiles_and_not_the_demo_models(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    packaged = sorted(n[len("edgekit/_targets/"):-5] for n in names
                      if n.startswith("edgekit/_targets/") and not os.path.basename(n).startswith("_"))
    assert packaged == _profiles()
    assert "edgekit/_targets/_schema.yaml" in names
    assert not [n for n in names if n.startswith("edgekit/assets/") or n.endswith(".keras")]
    assert not [n for n in names if n.startswith(("calibration/", "tests/"))]
    assert wheel.stat().st_size < 1 << 20


def test_wheel_carries_the_ansible_playbooks_and_action(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {os.path.relpath(p, ROOT).replace(os.sep, "/") for pattern in
               ("*.yml", "*.md", "action_plugins/*.py", "library/*.py")
               for p in glob.glob(os.path.join(ROOT, "edgekit", "deploy", "ansible", pattern))}
    assert "edgekit/deploy/ansible/flash.yml" in shipped and shipped <= names


def test_installed_edgekit_lists_every_target(installed, tmp_path):
    where = run_installed(installed, tmp_path, "-c", "import edgekit.targets as t; print(t.__file__, t.targets_dir())")
    module, profiles = where.stdout.split()
    assert module.startswith(str(installed)) and profiles == os.path.join(str(installed), "edgekit", "_targets")
    got = run_installed(installed, tmp_path, "-m", "edgekit.cli", "targets", "--json")
    assert got.returncode == 0, got.stderr
    assert [t["name"] for t in json.loads(got.stdout)["targets"]] == _profiles()


def test_installed_board_bench_estimates_energy_without_flags(installed, tmp_path, demo_bundles):
    bundle = demo_bundles("int8", "raspberry-pi-4")       # a board without a power sensor
    got = run_installed(installed, tmp_path, "-m", "edgekit.bench", bundle, TEST, "--json", *FAST)
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    assert res["bundle"]["target"] == "raspberry-pi-4"
    if res["energy"]["meter"] == "power-model":           # a machine whose RAPL is readable measures instead
        assert res["energy"]["kind"] == "estimated"
    assert res["protocol"]["profile"]["power_model"]["idle_w"] == 2.7


def test_installed_demo_says_it_needs_a_checkout(installed, tmp_path):
    got = run_installed(installed, tmp_path, "-m", "edgekit.cli", "demo")
    assert got.returncode == 2
    assert got.stderr.strip().splitlines()[-1].startswith("edgekit: error: the demo needs a source checkout"), \
        got.stderr
