"""The meter registry and pick_meter; the board-side constraints (stdlib only, Python 3.8 syntax)."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from edgekit.bench.meters import (METERS, JetsonIna3221Meter, MeterError, PowerModelMeter, RaplMeter,
                                  RaspberryPi5PmicMeter, UsbSerialMeter, make_meter, pick_meter)
from edgekit.errors import EdgekitError
from edgekit.power_model import METER_NAMES
from edgekit.targets import get_target, list_targets

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
REPO = os.path.dirname(os.path.dirname(HERE))
METERS_DIR = os.path.join(REPO, "edgekit", "bench", "meters")
ALLOWED = "allowed: auto, rapl, jetson-ina3221, rpi5-pmic, usb-serial, power-model"


def _absent(tmp_path) -> dict:
    """Every real sensor pointed at an empty place: what a board without sensors looks like."""
    return {"rapl": RaplMeter(str(tmp_path / "powercap")), "jetson-ina3221": JetsonIna3221Meter(str(tmp_path)),
            "rpi5-pmic": RaspberryPi5PmicMeter(command=(str(tmp_path / "vcgencmd"), "pmic_read_adc"))}


def test_registry_matches_the_target_schema():
    assert tuple(METERS) == METER_NAMES
    for name, cls in METERS.items():
        assert cls.name == name
    assert [n for n, c in METERS.items() if not c.measured] == ["power-model"]
    for t in list_targets():
        assert t.energy_meter in METERS


def test_power_model_comes_from_the_profile():
    pi4 = get_target("raspberry-pi-4")
    m = make_meter("power-model", pi4)
    assert isinstance(m, PowerModelMeter) and (m.idle_w, m.active_w) == (2.7, 6.4)
    assert m.measured is False and "raspberry-pi-4" in m.describe()
    assert isinstance(make_meter("usb-serial", pi4, usb_device="/dev/ttyACM0"), UsbSerialMeter)


def test_unknown_names_are_errors_listing_the_allowed_ones():
    t = get_target("host-x86_64")
    for bad in ("ina3221", "RAPL", ""):
        with pytest.raises(EdgekitError, match="unknown energy meter {!r}; {}".format(bad, ALLOWED)):
            pick_meter(bad, t)
    with pytest.raises(MeterError, match="unknown energy meter 'nope'"):
        pick_meter("auto", t, exclude=("nope",))


def test_auto_prefers_the_profiles_sensor(tmp_path):
    orin = get_target("jetson-orin-nano")
    meters = dict(_absent(tmp_path), **{"jetson-ina3221": JetsonIna3221Meter(os.path.join(
        FIXTURES, "jetson-orin-nano-jp5", "sys")), "rapl": RaplMeter(os.path.join(
            FIXTURES, "rapl-server", "sys", "class", "powercap"))})
    choice = pick_meter("auto", orin, meters=meters)
    assert choice.meter.name == "jetson-ina3221" and choice.skipped == ()
    assert choice.reason.startswith("the profile's energy_meter: INA3221 input rail VDD_IN")
    # the profile's sensor failed earlier in the run: the next real sensor, saying why the first was skipped
    choice = pick_meter("auto", orin, meters=meters, exclude="jetson-ina3221")
    assert choice.meter.name == "rapl" and choice.reason.startswith("a readable real sensor")
    assert choice.skipped == (("jetson-ina3221", "excluded by the caller (failed earlier in this run)"),)


def test_auto_falls_back_to_the_model_and_says_why(tmp_path):
    pi4 = get_target("raspberry-pi-4")
    choice = pick_meter("auto", pi4, meters=_absent(tmp_path))
    assert choice.meter.name == "power-model" and choice.meter.measured is False
    assert choice.reason.startswith("no real sensor is readable: estimated: 2.7 W idle")
    skipped = dict(choice.skipped)
    assert list(skipped) == ["rapl", "jetson-ina3221", "rpi5-pmic", "usb-serial"]
    assert "no powercap interface" in skipped["rapl"] and "rails found: none" in skipped["jetson-ina3221"]
    assert "not found on PATH" in skipped["rpi5-pmic"] and "no USB meter configured" in skipped["usb-serial"]
    text = choice.summary()
    assert text.startswith("energy meter: power-model (estimated)") and text.count("\n  not used: ") == 4


def test_a_named_meter_that_is_absent(tmp_path):
    with pytest.raises(MeterError) as exc:
        pick_meter("jetson-ina3221", get_target("jetson-nano"), meters=_absent(tmp_path))
    msg = str(exc.value)
    assert msg.startswith("energy meter 'jetson-ina3221' is not available here: no INA3221 rail named")
    assert ALLOWED in msg and msg.endswith("(available here: auto, power-model)")
    ok = pick_meter("power-model", get_target("jetson-nano"))
    assert ok.meter.name == "power-model" and ok.reason.startswith("asked for by name")


def test_meter_modules_are_python38_syntax():
    files = sorted(glob.glob(os.path.join(METERS_DIR, "*.py")))
    assert len(files) == 8
    for path in files + [os.path.join(REPO, "edgekit", "bench", "__init__.py")]:
        with open(path) as f:
            src = f.read()
        ast.parse(src, filename=path, feature_version=(3, 8))
        assert len(src.splitlines()) < 400, path


def test_meters_import_and_run_with_the_stdlib_only():
    code = ("import sys\n"
            "for mod in ('numpy', 'yaml', 'click', 'tensorflow', 'edgekit.targets', 'serial'):\n"
            "    sys.modules[mod] = None   # importing any of them now fails\n"
            "from types import SimpleNamespace as NS\n"
            "from edgekit.bench.meters import pick_meter, measure_idle\n"
            "t = NS(name='b', energy_meter='power-model', power_model=NS(idle_w=1.0, active_w=2.0, source='s'))\n"
            "r = measure_idle(pick_meter('power-model', t).meter, 0.05, 0.01)\n"
            "assert 1.0 <= r.mean_watts <= 2.0 and r.samples >= 2, r\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _python38() -> str:
    import shutil
    probe = "import sys; sys.exit(sys.version_info[:2] != (3, 8))"
    for cand in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8.*/bin/python3.8"))) + \
            [shutil.which("python3.8") or ""]:
        try:
            if cand and subprocess.run([cand, "-c", probe], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL).returncode == 0:
                return cand
        except OSError:
            continue
    pytest.skip("no python3.8 interpreter on this machine to run the meters as JetPack 5 would")


def test_meters_run_under_python38_as_on_jetpack5():
    code = ("import time\n"
            "from edgekit.bench.meters import JetsonIna3221Meter, RaplMeter\n"
            "assert RaplMeter({rapl!r}).read() == (73820964519, 41187395214)\n"
            "m = JetsonIna3221Meter({orin!r})\n"
            "with m.session(0.01) as s:\n"
            "    time.sleep(0.05)\n"
            "assert abs(s.result().mean_watts - 5.072 * 1.184) < 1e-9, s.result()\n").format(
                rapl=os.path.join(FIXTURES, "rapl-server", "sys", "class", "powercap"),
                orin=os.path.join(FIXTURES, "jetson-orin-nano-jp5", "sys"))
    proc = subprocess.run([_python38(), "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                                    "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
