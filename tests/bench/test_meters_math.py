"""Integration math on known sample series, the power model, the idle baseline and energy per inference."""
import os

import pytest

from edgekit.bench.meters import (EnergyReading, MeterError, PowerModelMeter, energy_per_inference,
                                  integrate_counter, integrate_power, measure_idle, sum_readings)
from edgekit.bench.meters.base import check_watts
from edgekit.bench.meters.power_model import read_cpu_times, utilizations
from edgekit.errors import EdgekitError
from tests.simulated import SimulatedClock, wait_for_samples


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)   # a sampler never sees a half-written file, as with real sysfs


def test_trapezoid_on_a_known_series():
    # t = 0, 1, 3 s; P = 2, 4, 4 W  ->  (2+4)/2*1 + (4+4)/2*2 = 3 + 8 = 11 J
    assert integrate_power([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(11.0)
    # a single sample spans no time
    assert integrate_power([5.0], [3.0]) == 0.0
    with pytest.raises(MeterError, match="2 timestamps for 3 power samples"):
        integrate_power([0.0, 1.0], [1.0, 2.0, 3.0])


def test_counter_differences_with_wrap():
    # 100 -> 300 (+200) -> 950 (+650) -> wraps at 1000 -> 50 (+50 to the top, +50 from zero = +100)
    assert integrate_counter([100, 300, 950, 50], wrap=1000) == 200 + 650 + (1000 - 950) + 50
    with pytest.raises(MeterError, match="went down from 950 to 50 and its wrap-around range is unknown"):
        integrate_counter([100, 950, 50], wrap=0)


def test_garbage_watts_are_errors_that_quote_the_value():
    assert check_watts(3, "x") == 3.0
    for bad in (-0.5, float("nan"), float("inf"), 1e6):
        with pytest.raises(EdgekitError, match="a plausible reading is a number from 0 to 10000 W"):
            check_watts(bad, "sensor")


def test_proc_stat_parse_by_hand(tmp_path):
    p = tmp_path / "stat"
    p.write_text("cpu  16181 0 3751 62367 368 0 45 9 0 0\ncpu0 4904 0 1243 35135 67 0 12 2 0 0\n")
    # total = 16181 + 0 + 3751 + 62367 + 368 + 0 + 45 + 9 = 82721; idle = idle + iowait = 62367 + 368 = 62735
    assert read_cpu_times(str(p)) == (82721 - 62735, 82721)
    p.write_text("garbage\n")
    assert read_cpu_times(str(p)) is None
    assert read_cpu_times(str(tmp_path / "absent")) is None


def test_power_model_integration_by_hand():
    m = PowerModelMeter(idle_w=2.0, active_w=6.0, source="test")
    raw = [(1000, 4000), (1100, 4200), (1100, 4400), (1300, 4600)]
    assert utilizations(raw) == [0.5, 0.0, 1.0]      # 100/200, 0/200, 200/200
    # 1 s at 2 + 4*0.5 = 4 W, 1 s at 2 W, 2 s at 2 + 4*1 = 6 W  ->  4 + 2 + 12 = 18 J
    assert m.integrate([0.0, 1.0, 2.0, 4.0], raw) == pytest.approx(18.0)
    # unknown utilization everywhere: full active power is assumed (an upper bound): 6 W * 4 s
    assert m.integrate([0.0, 4.0], [None, None]) == pytest.approx(24.0)


def test_power_model_session_reads_proc_stat_in_the_background(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 0 0 3000 0 0 0 0 0 0\n")
    m = PowerModelMeter(idle_w=3.0, active_w=8.0, source="test profile", proc_stat=str(stat))
    with m.session(0.02) as s:
        wait_for_samples(s, 3)                                          # the start sample + 2 in the background
        _write_atomic(str(stat), "cpu  1050 0 0 3050 0 0 0 0 0 0\n")   # +50 busy of +100: 50 %
        wait_for_samples(s, len(s.samples) + 2)                         # seen by the background sampler
    r = s.result()
    assert r.meter == "power-model" and r.measured is False
    assert r.samples == len(s.samples) >= 6
    assert s.samples[0][1] == (1000, 4000) and s.samples[-1][1] == (1050, 4100)
    # intervals without a jiffy tick take the whole session's 50 %: 3 + (8 - 3) * 0.5 = 5.5 W throughout
    assert r.mean_watts == pytest.approx(5.5)
    assert "estimated" in r.source and "test profile" in r.source


def test_power_model_rejects_inverted_numbers():
    with pytest.raises(MeterError, match="got idle_w 5 and active_w 2"):
        PowerModelMeter(5, 2, "x")


def _reading(joules: float, seconds: float, meter: str = "rapl", measured: bool = True) -> EnergyReading:
    return EnergyReading(meter, measured, joules, seconds, joules / seconds, 10, "test")


def test_energy_per_inference_by_hand():
    run, idle = _reading(12.0, 4.0), _reading(10.0, 5.0)    # 3 W during the run, 2 W idle
    e = energy_per_inference(run, idle, 100)
    assert e.joules_total == pytest.approx(12.0 / 100)                  # 0.12 J
    assert e.joules_above_idle == pytest.approx((12.0 - 2.0 * 4.0) / 100)  # 0.04 J
    assert (e.mean_watts, e.idle_watts, e.measured) == (3.0, 2.0, True)
    assert energy_per_inference(_reading(12.0, 4.0, "power-model", False),
                                _reading(10.0, 5.0, "power-model", False), 1).measured is False
    with pytest.raises(MeterError, match="inference count: got 0; allowed: an integer >= 1"):
        energy_per_inference(run, idle, 0)
    with pytest.raises(MeterError, match="measured with rapl but the idle baseline with power-model"):
        energy_per_inference(run, _reading(1.0, 1.0, "power-model", False), 10)


def test_sum_readings_and_round_trip():
    total = sum_readings([_reading(3.0, 1.0), _reading(5.0, 3.0)])
    assert (total.joules, total.seconds, total.mean_watts, total.samples) == (8.0, 4.0, 2.0, 20)
    assert EnergyReading.from_dict(total.to_dict()) == total
    with pytest.raises(MeterError, match="readings come from meters power-model, rapl"):
        sum_readings([_reading(1.0, 1.0), _reading(1.0, 1.0, "power-model", False)])


def test_measure_idle_and_session_misuse(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 0 0 3000 0 0 0 0 0 0\n")
    m = PowerModelMeter(1.5, 10.0, "t", proc_stat=str(stat))
    idle = measure_idle(m, 0.1, interval_s=0.02, clock=SimulatedClock().clock())
    assert idle.seconds == pytest.approx(0.1)          # exactly the time it waited, on the clock it was given
    assert idle.mean_watts == pytest.approx(10.0)     # no jiffy moved: utilization unknown -> active_w
    with pytest.raises(MeterError, match="allowed: more than 0 and at most 3600 seconds"):
        measure_idle(m, 0)
    with pytest.raises(MeterError, match="allowed: 0.001 to 60 seconds"):
        m.session(0)
    s = m.session(0.05)
    with pytest.raises(MeterError, match="no result until it is stopped"):
        s.result()
    with pytest.raises(MeterError, match="never started"):
        s.stop()
    s.start()
    with pytest.raises(MeterError, match="already sampling in another session"):
        m.session(0.05).start()
    s.stop()
