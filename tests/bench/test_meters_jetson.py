"""Jetson INA3221 on recorded sysfs trees: JetPack 4 iio (mW) and JetPack 5/6 hwmon (mV x mA)."""
import os
import shutil
import time

import pytest

from edgekit.bench.meters import JetsonIna3221Meter, MeterError, integrate_power
from tests.simulated import wait_for_samples

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
NANO = os.path.join(FIXTURES, "jetson-nano-jp4", "sys")
ORIN = os.path.join(FIXTURES, "jetson-orin-nano-jp5", "sys")
NANO_IN = "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
ORIN_IN = "bus/i2c/devices/1-0040/hwmon/hwmon1"


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


def test_jetpack4_nano_total_is_pom_5v_in():
    m = JetsonIna3221Meter(NANO)
    # rail_name_0 = POM_5V_IN, in_power0_input = 3184 mW  ->  3184 / 1000 = 3.184 W
    assert m.read() == pytest.approx(3.184)
    ok, why = m.available()
    assert ok and "POM_5V_IN" in why and "iio (JetPack 4)" in why and why.endswith("in_power0_input")


def test_jetpack5_orin_total_is_vdd_in_volts_times_amps():
    m = JetsonIna3221Meter(ORIN)
    # in1_label = VDD_IN, in1_input = 5072 mV, curr1_input = 1184 mA  ->  5.072 V * 1.184 A = 6.005248 W
    assert m.read() == pytest.approx(5.072 * 1.184)
    assert 5.072 * 1.184 == pytest.approx(6.005248)
    ok, why = m.available()
    assert ok and "VDD_IN" in why and "hwmon (JetPack 5/6)" in why


def test_a_named_rail_and_a_missing_one():
    # rail_name_2 = POM_5V_CPU, in_power2_input = 718 mW
    assert JetsonIna3221Meter(NANO, rail="POM_5V_CPU").read() == pytest.approx(0.718)
    # in3_label = VDD_SOC: 5064 mV * 472 mA = 2.390208 W
    assert JetsonIna3221Meter(ORIN, rail="VDD_SOC").read() == pytest.approx(5.064 * 0.472)
    ok, why = JetsonIna3221Meter(ORIN, rail="POM_5V_IN").available()
    assert not ok and "no INA3221 rail named POM_5V_IN" in why
    assert "rails found: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC" in why     # the tmp451 hwmon is not a rail


def test_not_a_jetson(tmp_path):
    ok, why = JetsonIna3221Meter(str(tmp_path)).available()
    assert not ok and "no INA3221 rail named VDD_IN or POM_5V_IN" in why and "rails found: none" in why


def test_background_sampler_sees_the_rail_change(tmp_path):
    shutil.copytree(NANO, str(tmp_path / "sys"))
    power = str(tmp_path / "sys" / NANO_IN / "in_power0_input")
    m = JetsonIna3221Meter(str(tmp_path / "sys"))
    with m.session(0.02) as s:
        wait_for_samples(s, 4)
        _write_atomic(power, "6000")          # load arrives: 6 W
        wait_for_samples(s, len(s.samples) + 4)
    r = s.result()
    trace = s.samples
    watts = [w for _, w in trace]
    assert r.samples == len(trace) >= 9                          # sampled all along, not just start and stop
    assert watts[0] == pytest.approx(3.184) and watts[-1] == pytest.approx(6.0)
    assert sum(1 for w in watts if w == pytest.approx(3.184)) >= 3 and sum(1 for w in watts if w == 6.0) >= 3
    assert 3.184 < r.mean_watts < 6.0
    assert r.joules == pytest.approx(integrate_power([t for t, _ in trace], watts))
    assert r.seconds == pytest.approx(trace[-1][0] - trace[0][0])


def test_constant_rail_integrates_to_its_power(tmp_path):
    m = JetsonIna3221Meter(ORIN)
    with m.session(0.02) as s:
        wait_for_samples(s, 3)
    r = s.result()
    assert r.mean_watts == pytest.approx(6.005248)              # W * T / T
    assert r.joules == pytest.approx(6.005248 * r.seconds)


def test_garbage_and_a_sensor_that_disappears_mid_run(tmp_path):
    shutil.copytree(ORIN, str(tmp_path / "sys"))
    curr = str(tmp_path / "sys" / ORIN_IN / "curr1_input")
    _write_atomic(curr, "-99999999")                             # -99999.999 A: not a board
    ok, why = JetsonIna3221Meter(str(tmp_path / "sys")).available()
    assert not ok and "a plausible reading is a number from 0 to 10000 W" in why
    _write_atomic(curr, "1184")
    m = JetsonIna3221Meter(str(tmp_path / "sys"))
    s = m.session(0.02).start()
    time.sleep(0.05)
    os.remove(curr)
    time.sleep(0.1)
    with pytest.raises(MeterError, match=r"meter jetson-ina3221 failed during the session .*curr1_input does not "
                                         r"exist \(the sensor is absent or disappeared\)"):
        s.stop()


def test_every_rail_is_read_beside_the_total_jetpack4():
    m = JetsonIna3221Meter(NANO)
    with m.session(0.02) as s:
        wait_for_samples(s, 3)
    rails = m.rail_powers()
    assert list(rails) == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]        # rail_name_0..2, in file order
    n = s.result().samples
    assert all(r.samples == n for r in rails.values())                     # each sample read every rail
    # in_power0..2_input: 3184, 79, 718 mW
    for name, watts in (("POM_5V_IN", 3.184), ("POM_5V_GPU", 0.079), ("POM_5V_CPU", 0.718)):
        st = rails[name]
        assert st.watts_sum / st.samples == pytest.approx(watts) and st.min_watts == st.max_watts == pytest.approx(watts)


def test_every_rail_is_read_beside_the_total_jetpack5(tmp_path):
    shutil.copytree(ORIN, str(tmp_path / "sys"))
    os.remove(str(tmp_path / "sys" / ORIN_IN / "curr2_input"))          # a rail whose current cannot be read
    m = JetsonIna3221Meter(str(tmp_path / "sys"))
    with m.session(0.02) as s:
        wait_for_samples(s, 3)
    assert s.result().mean_watts == pytest.approx(5.072 * 1.184)           # the total does not depend on it
    rails = m.rail_powers()
    assert list(rails) == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert rails["VDD_CPU_GPU_CV"].samples == 0                             # found, never read
    soc = rails["VDD_SOC"]                                                  # in3 5064 mV x curr3 472 mA
    assert soc.samples == s.result().samples and soc.watts_sum / soc.samples == pytest.approx(5.064 * 0.472)
    m.open()
    assert m.rail_powers() == {}                                            # a new session starts afresh


def test_rail_table_means_per_phase():
    from edgekit.bench.energy import rail_table
    from edgekit.bench.meters.base import RailStats

    table = rail_table({"idle": [{"VDD_IN": RailStats(10.0, 2, 4.0, 6.0)}, {"VDD_IN": RailStats(4.0, 1, 4.0, 4.0)}],
                        "early_exit": [{"VDD_IN": RailStats(21.0, 3, 6.0, 8.0), "VDD_SOC": RailStats(3.0, 3, 1.0, 1.0)}],
                        "full_depth": [{"VDD_IN": RailStats(16.0, 2, 8.0, 8.0), "VDD_SOC": RailStats(0.0, 0, 0.0, 0.0)}]})
    assert table == [
        {"rail": "VDD_IN", "idle_w": 14.0 / 3, "early_exit_w": 7.0, "full_depth_w": 8.0, "samples": 8},
        {"rail": "VDD_SOC", "idle_w": None, "early_exit_w": 1.0, "full_depth_w": None, "samples": 3}]
    assert rail_table({"idle": [{}], "early_exit": [{}]}) == []             # a one-figure meter adds no table
