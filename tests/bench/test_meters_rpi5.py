"""Raspberry Pi 5 PMIC through a fake `vcgencmd` on PATH that prints recorded `pmic_read_adc` output.

The meter runs the real subprocess path (argv list, PATH lookup, exit code, stdout parsing); only the
program at the end of PATH is a stand-in: tests/bench/fixtures/bin/vcgencmd, a 10-line sh script.
"""
import os
import re
import shutil
import time

import pytest

from edgekit.bench.meters import MeterError, RaspberryPi5PmicMeter
from edgekit.bench.meters.rpi5_pmic import parse_pmic
from tests.simulated import wait_for_samples

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
RECORDED = os.path.join(FIXTURES, "rpi5", "pmic_read_adc.txt")
SHUFFLED = os.path.join(FIXTURES, "rpi5", "pmic_read_adc_shuffled.txt")
NOT_PI5 = os.path.join(FIXTURES, "rpi5", "pmic_read_adc_not_pi5.txt")

# Hand-computed from pmic_read_adc.txt: current (A) x voltage (V) of each rail, paired by name.
RAIL_WATTS = {
    "3V7_WL_SW": 0.00000000 * 3.71731700,
    "3V3_SYS": 0.05270000 * 3.31043600,     # 0.174460 W
    "1V8_SYS": 0.16690500 * 1.79926700,     # 0.300307 W
    "DDR_VDD2": 0.02147000 * 1.11355300,    # 0.023908 W
    "DDR_VDDQ": 0.00000000 * 0.60366300,
    "1V1_SYS": 0.18054000 * 1.11208700,     # 0.200776 W
    "0V8_SW": 0.33658000 * 0.80219700,      # 0.270003 W
    "VDD_CORE": 1.08053000 * 0.72178200,    # 0.779907 W
    "3V3_DAC": 0.00000000 * 3.30891300,
    "3V3_ADC": 0.00024420 * 3.30891300,     # 0.000808 W
    "0V8_AON": 0.00000000 * 0.80219700,
    "HDMI": 0.01318680 * 5.07326000,        # 0.066900 W
}                                           # EXT5V_V and BATT_V have no current line: no power
TOTAL_W = sum(RAIL_WATTS.values())          # 1.817069 W


@pytest.fixture
def vcgencmd(monkeypatch, tmp_path):
    """Put the fake vcgencmd first on PATH; returns set_output(path, exit_code=0)."""
    monkeypatch.setenv("PATH", os.path.join(FIXTURES, "bin") + os.pathsep + os.environ.get("PATH", ""))

    def set_output(path: str, exit_code: int = 0) -> str:
        live = str(tmp_path / "output.txt")
        shutil.copyfile(path, live)
        monkeypatch.setenv("FAKE_VCGENCMD_OUTPUT", live)
        monkeypatch.setenv("FAKE_VCGENCMD_EXIT", str(exit_code))
        return live
    return set_output


def test_total_is_the_hand_computed_sum_of_rail_powers(vcgencmd):
    vcgencmd(RECORDED)
    assert TOTAL_W == pytest.approx(1.817069, abs=1e-6)
    m = RaspberryPi5PmicMeter()
    assert m.read() == pytest.approx(TOTAL_W)
    ok, why = m.available()
    assert ok and "vcgencmd pmic_read_adc" in why and "VDD_CORE" in why and "EXT5V" not in why


def test_pairing_is_by_rail_name_even_out_of_order(vcgencmd):
    with open(SHUFFLED) as f:
        text = f.read()
    rails = parse_pmic(text)
    assert rails["VDD_CORE"] == (1.08053000, 0.72178200)
    assert dict((r, a * v) for r, (a, v) in rails.items()) == pytest.approx(RAIL_WATTS)
    # pairing the i-th current line with the i-th voltage line would be wrong on this file
    amps = [float(x) for x in re.findall(r"current\(\d+\)=([\d.]+)A", text)]
    volts = [float(x) for x in re.findall(r"volt\(\d+\)=([\d.]+)V", text)]
    assert abs(sum(a * v for a, v in zip(amps, volts)) - TOTAL_W) > 0.1
    vcgencmd(SHUFFLED)
    assert RaspberryPi5PmicMeter().read() == pytest.approx(TOTAL_W)


def test_not_a_pi5_not_installed_and_failing(vcgencmd, monkeypatch):
    vcgencmd(NOT_PI5)
    ok, why = RaspberryPi5PmicMeter().available()
    assert not ok and "printed no rail with both a current (_A) and a voltage (_V) line" in why
    assert 'error=1 error_msg="Command not registered"' in why and "Raspberry Pi 5 only" in why
    vcgencmd(NOT_PI5, exit_code=255)
    ok, why = RaspberryPi5PmicMeter().available()
    assert not ok and "vcgencmd pmic_read_adc exited with code 255" in why
    ok, why = RaspberryPi5PmicMeter(command=("vcgencmd-absent", "pmic_read_adc")).available()
    assert not ok and "vcgencmd-absent not found on PATH" in why


def test_garbage_number_is_an_error(vcgencmd, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("  VDD_CORE_A current(7)=1.0.8A\n  VDD_CORE_V volt(15)=0.72V\n")
    vcgencmd(str(bad))
    with pytest.raises(MeterError, match=r"'1.0.8' is not a number"):
        RaspberryPi5PmicMeter().read()


def test_sampler_runs_the_command_repeatedly(vcgencmd):
    live = vcgencmd(RECORDED)
    m = RaspberryPi5PmicMeter()
    with m.session(0.03) as s:
        wait_for_samples(s, 3)
        with open(live + ".tmp", "w") as f:      # VDD_CORE doubles its current: +0.779907 W
            f.write(open(RECORDED).read().replace("current(7)=1.08053000A", "current(7)=2.16106000A"))
        os.replace(live + ".tmp", live)
        wait_for_samples(s, len(s.samples) + 2)
    r = s.result()
    watts = [w for _, w in s.samples]
    assert r.samples == len(s.samples) >= 6
    assert watts[0] == pytest.approx(TOTAL_W)
    assert watts[-1] == pytest.approx(TOTAL_W + 2.16106 * 0.721782 - 1.08053 * 0.721782)
    assert TOTAL_W < r.mean_watts < watts[-1]
