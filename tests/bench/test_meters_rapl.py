"""Intel RAPL on recorded powercap trees: package sum, wrap-around, the root-only case, this machine."""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import pytest

from edgekit.bench.meters import MeterError, RaplMeter, pick_meter
from tests.simulated import wait_for_samples

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRAP = 262143328850     # max_energy_range_uj in the fixtures, as on real Intel packages


def _copy(name: str, dest: str) -> str:
    root = os.path.join(dest, name)
    shutil.copytree(os.path.join(FIXTURES, name), root)
    return os.path.join(root, "sys", "class", "powercap")


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


def test_server_tree_sums_packages_not_dram_subzones():
    m = RaplMeter(os.path.join(FIXTURES, "rapl-server", "sys", "class", "powercap"))
    assert [d.name for d in m.domains()] == ["package-0", "package-1"]
    assert [d.wrap_uj for d in m.domains()] == [WRAP, WRAP]
    assert m.read() == (73820964519, 41187395214)     # the two package energy_uj files, verbatim
    ok, why = m.available()
    assert ok and "package-0 + package-1" in why


def test_laptop_tree_skips_psys_and_the_mmio_duplicate():
    m = RaplMeter(os.path.join(FIXTURES, "rapl-laptop", "sys", "class", "powercap"))
    assert [(d.name, os.path.basename(os.path.dirname(d.energy_path))) for d in m.domains()] == \
        [("package-0", "intel-rapl:0")]


def test_session_energy_is_the_counter_difference(tmp_path):
    root = _copy("rapl-server", str(tmp_path))
    m = RaplMeter(root)
    with m.session(0.02) as s:
        wait_for_samples(s, 2)
        # package-0 +1.5 J, package-1 +0.5 J
        _write_atomic(os.path.join(root, "intel-rapl:0", "energy_uj"), str(73820964519 + 1500000))
        _write_atomic(os.path.join(root, "intel-rapl:1", "energy_uj"), str(41187395214 + 500000))
        wait_for_samples(s, len(s.samples) + 2)
    r = s.result()
    assert r.joules == pytest.approx(1.5 + 0.5)
    assert r.measured and r.meter == "rapl" and r.samples == len(s.samples) >= 5
    assert r.mean_watts == pytest.approx(2.0 / r.seconds)


def test_wrap_around_at_max_energy_range(tmp_path):
    root = _copy("rapl-server", str(tmp_path))
    e0 = os.path.join(root, "intel-rapl:0", "energy_uj")
    _write_atomic(e0, str(WRAP - 500000))          # 0.5 J below the top
    m = RaplMeter(root)
    with m.session(0.02) as s:
        wait_for_samples(s, 2)
        _write_atomic(e0, "1500000")                # wrapped: 0.5 J to the top + 1.5 J from zero
        wait_for_samples(s, len(s.samples) + 2)
    # (WRAP - (WRAP - 500000)) + 1500000 = 2000000 uJ = 2.0 J; package-1 did not move
    assert s.result().joules == pytest.approx(2.0)
    # the same series through integrate(): one reading per sample, as the session holds them
    assert m.integrate([0, 1, 2], [(WRAP - 500000, 7), (WRAP - 100, 7), (1500000, 9)]) == \
        pytest.approx((500000 + 1500000 + 2) / 1e6)


def test_garbage_and_a_vanishing_counter(tmp_path):
    root = _copy("rapl-server", str(tmp_path))
    e1 = os.path.join(root, "intel-rapl:1", "energy_uj")
    _write_atomic(e1, "not-a-number")
    ok, why = RaplMeter(root).available()
    assert not ok and "intel-rapl:1/energy_uj holds 'not-a-number'; expected an integer" in why
    _write_atomic(e1, str(WRAP + 1))
    ok, why = RaplMeter(root).available()
    assert not ok and "allowed: 0 to max_energy_range_uj {}".format(WRAP) in why
    _write_atomic(e1, "5")
    m = RaplMeter(root)
    s = m.session(0.02).start()
    os.remove(e1)
    time.sleep(0.1)
    with pytest.raises(MeterError, match=r"meter rapl failed during the session .*energy_uj does not exist"):
        s.stop()


def test_absent_powercap_and_no_package_zone(tmp_path):
    ok, why = RaplMeter(str(tmp_path / "nope")).available()
    assert not ok and "does not exist: this machine has no powercap interface" in why
    (tmp_path / "pc" / "intel-rapl:0").mkdir(parents=True)
    (tmp_path / "pc" / "intel-rapl:0" / "name").write_text("psys\n")
    ok, why = RaplMeter(str(tmp_path / "pc")).available()
    assert not ok and "no RAPL package zone" in why and "intel-rapl:0=psys" in why


# -- root-only energy_uj (Linux >= 5.10): mode 0400 owned by root, read by an ordinary user ---------------
_PROBE = """
import json, sys
from types import SimpleNamespace
from edgekit.bench.meters import MeterError, RaplMeter, pick_meter
from tests.simulated import wait_for_samples
root, pm = sys.argv[1], json.loads(sys.argv[2])
target = SimpleNamespace(name="host-x86_64", energy_meter="rapl", power_model=SimpleNamespace(**pm))
rapl = RaplMeter(root)
ok, why = rapl.available()
choice = pick_meter("auto", target, meters={"rapl": rapl})
try:
    pick_meter("rapl", target, meters={"rapl": rapl})
    named = None
except MeterError as exc:
    named = str(exc)
print(json.dumps({"ok": ok, "why": why, "chosen": choice.meter.name, "measured": choice.meter.measured,
                  "skipped": dict(choice.skipped), "named": named}))
"""


def _python_for(uid: int) -> str:
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        try:
            if cand and subprocess.run([cand, "-c", "pass"], user=uid, cwd="/", stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL).returncode == 0:
                return cand
        except OSError:      # e.g. the venv's interpreter lives under a directory only root may enter
            continue
    pytest.skip("no Python interpreter this test can run as uid {} to read as a non-root user".format(uid))


def _probe_unreadable(root: str) -> dict:
    pm = {"idle_w": 10.0, "active_w": 35.0, "source": "test"}
    if os.geteuid() != 0:   # an ordinary user: the file mode alone locks us out
        return json.loads(_run_probe([sys.executable], root, pm, None))
    nobody = 65534
    return json.loads(_run_probe([_python_for(nobody)], root, pm, nobody))


def _run_probe(python: list, root: str, pm: dict, uid) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(python + ["-c", _PROBE, root, json.dumps(pm)], user=uid, cwd="/", env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_root_only_energy_uj_gives_a_clear_message_and_auto_falls_back():
    tmp = tempfile.mkdtemp(prefix="edgekit-rapl-")
    try:
        os.chmod(tmp, 0o755)              # an ordinary user must reach the tree, as /sys is reachable
        root = _copy("rapl-laptop", tmp)
        for dirpath, dirs, files in os.walk(os.path.join(tmp, "rapl-laptop")):
            os.chmod(dirpath, 0o755)
            for f in files:   # the kernel's modes: energy_uj -r-------- root, the rest -r--r--r--
                os.chmod(os.path.join(dirpath, f), 0o400 if f == "energy_uj" else 0o444)
        out = _probe_unreadable(root)
    finally:
        for dirpath, dirs, files in os.walk(tmp):
            for f in files:
                os.chmod(os.path.join(dirpath, f), stat.S_IWUSR | stat.S_IRUSR)
        shutil.rmtree(tmp)
    assert out["ok"] is False
    assert "intel-rapl:0/energy_uj is not readable by this user" in out["why"]
    assert "readable by root only since Linux 5.10" in out["why"] and "sudo" in out["why"]
    assert out["chosen"] == "power-model" and out["measured"] is False
    assert out["skipped"]["rapl"] == out["why"]
    assert out["named"].startswith("energy meter 'rapl' is not available here: ")
    assert "allowed: auto, rapl, jetson-ina3221, rpi5-pmic, usb-serial, power-model" in out["named"]
    assert "(available here: auto, power-model)" in out["named"]


# -- this machine ------------------------------------------------------------------------------------------
def test_this_machines_powercap_reads_or_says_why():
    meter = RaplMeter()     # the real /sys/class/powercap
    ok, why = meter.available()
    target = SimpleNamespace(name="host-x86_64", energy_meter="rapl",
                             power_model=SimpleNamespace(idle_w=10.0, active_w=35.0, source="test"))
    choice = pick_meter("auto", target)
    if ok:
        with meter.session(0.05) as s:
            time.sleep(0.3)
        r = s.result()
        assert r.measured and r.joules > 0 and 0 < r.mean_watts < 2000, r
        assert choice.meter.name == "rapl"
    else:
        assert "/sys/class/powercap" in why, why
        if os.path.isdir("/sys/class/powercap") and os.geteuid() != 0:
            assert "root" in why or "no RAPL package zone" in why, why
        assert choice.meter.name != "rapl" and dict(choice.skipped)["rapl"] == why
