"""Energy in the bench run: alternating blocks, idle baseline from the same run, a meter that fails mid-run.

RAPL is driven through its real sysfs-reading code on a copied fixture tree. Time is simulated
(tests/simulated.py): a call takes the bundle's fixed stage costs, the idle baseline takes its seconds, and
the package counter follows that clock at a known power, so the expected joules are computed by hand and
nothing depends on how busy the machine is.
"""
import os
import shutil

import numpy as np
import pytest

from edgekit.bench.energy import (EnergyOptions, EnergyProfile, block_order, measure_energy, overran,
                                  pick_profile, profile_from_target)
from edgekit.bench.meters import EnergyReading
from edgekit.bench.meters import JetsonIna3221Meter, MeterError, RaplMeter, RaspberryPi5PmicMeter
from edgekit.power_model import PowerModel
from edgekit.errors import ConfigError, EdgekitError
from edgekit.runtime import EarlyExitRunner
from edgekit.targets import get_target
from tests.bundle_edit import copy_bundle, set_stage_costs
from tests.simulated import CostedRunner, SimulatedClock

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
START_UJ = 73820964519                 # rapl-server intel-rapl:0 energy_uj
WRAP_UJ = 262143328850
FAST = dict(blocks=1, block_seconds=1.0, idle_seconds=0.4, interval_s=0.02)
STAGE_MS = (1.0, 2.0, 4.0)             # fixed stage costs written into the test bundle


@pytest.fixture(scope="module")
def runner(demo_bundles, tmp_path_factory):
    bundle = copy_bundle(demo_bundles("float32", "host-x86_64"), str(tmp_path_factory.mktemp("energy") / "b"))
    set_stage_costs(bundle, STAGE_MS)
    return EarlyExitRunner(bundle)


@pytest.fixture(scope="module")
def x(test_split):
    return test_split.x[:64]


def _rapl_tree(tmp_path) -> str:
    shutil.copytree(os.path.join(FIXTURES, "rapl-server"), str(tmp_path / "rapl"))
    root = str(tmp_path / "rapl" / "sys" / "class" / "powercap")
    shutil.rmtree(os.path.join(root, "intel-rapl:1"))          # one package: intel-rapl:0
    return root


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


class ConstantPower:
    """Moves intel-rapl:0/energy_uj as a package drawing `watts` would, on the simulated clock."""

    def __init__(self, root: str, watts: float, start_uj: int = START_UJ) -> None:
        self.path = os.path.join(root, "intel-rapl:0", "energy_uj")
        self.watts, self.start_uj = watts, start_uj
        _write(self.path, str(start_uj % WRAP_UJ))    # the counter holds its start before any meter reads it

    def __call__(self, now: float) -> None:
        _write(self.path, str(int(round(self.start_uj + self.watts * now * 1e6)) % WRAP_UJ))


def _absent(tmp_path) -> dict:
    return {"jetson-ina3221": JetsonIna3221Meter(str(tmp_path / "nosys")),
            "rpi5-pmic": RaspberryPi5PmicMeter(command=(str(tmp_path / "no-vcgencmd"), "pmic_read_adc"))}


def host_profile() -> EnergyProfile:
    return profile_from_target(get_target("host-x86_64"))


def test_blocks_alternate_abba():
    assert block_order(1) == ["early_exit", "full_depth"]
    assert block_order(3) == ["early_exit", "full_depth", "full_depth", "early_exit", "early_exit", "full_depth"]


def test_a_block_far_longer_than_asked_is_an_overrun():
    def r(seconds):
        return EnergyReading("rapl", True, 1.0, seconds, 1.0 / seconds, 5, "fixture")

    assert not overran(r(1.02), 1.0) and not overran(r(1.49), 1.0) and overran(r(1.51), 1.0)
    assert not overran(r(4.4), 3.0) and overran(r(4.6), 3.0)
    assert overran(r(41.5), 2.0)          # seen on the loaded shared machine: a 2 s block stalled for 40 s


@pytest.mark.parametrize("kw, needle", [
    (dict(block_seconds=0.5), "--block-seconds must be from 1"),
    (dict(blocks=0), "--blocks must be an integer from 1"),
    (dict(idle_seconds=0.0), "--idle-seconds must be from 0.2"),
    (dict(meter="ina3221"), "unknown energy meter 'ina3221'; allowed: auto, rapl"),
])
def test_bad_options_name_what_is_allowed(kw, needle):
    with pytest.raises(EdgekitError, match=needle.replace("(", r"\(")):
        EnergyOptions(**kw).check()


def test_profiles_from_targets_and_json():
    p = host_profile()
    assert (p.name, p.energy_meter, p.power_model.idle_w, p.power_model.active_w) == ("host-x86_64", "rapl", 10.0, 35.0)
    table = {"b": {"energy_meter": "power-model", "power_model": {"idle_w": 1, "active_w": 2, "source": "s"}}}
    assert pick_profile(table, "b") == EnergyProfile("b", "power-model", PowerModel(1.0, 2.0, "s"))
    with pytest.raises(ConfigError, match="no board profile for the bundle's target 'c'; profiles given: b"):
        pick_profile(table, "c")
    with pytest.raises(ConfigError, match="energy_meter: got 'x'"):
        pick_profile({"b": dict(table["b"], energy_meter="x")}, "b")


def test_rapl_at_constant_power_gives_hand_computed_joules_and_nothing_above_idle(tmp_path, runner, x):
    root = _rapl_tree(tmp_path)
    sim = SimulatedClock(ConstantPower(root, 20.0, start_uj=WRAP_UJ - 3_000_000))   # wraps 0.15 s into the idle
    e = measure_energy(CostedRunner(runner, sim), x, EnergyOptions(**FAST), host_profile(),
                       dict(_absent(tmp_path), rapl=RaplMeter(root)), sim.clock())
    assert (e["meter"], e["measured"], e["kind"], e["failed_during_run"]) == ("rapl", True, "measured", [])
    assert e["overrun_blocks"] == [] and e["warnings"] == []       # RAPL has no "active power" to be stuck at
    assert e["reason"].startswith("the profile's energy_meter")
    assert e["idle"]["seconds"] == pytest.approx(0.4) and e["idle"]["mean_watts"] == pytest.approx(20.0)
    full_call_s = sum(STAGE_MS) / 1000.0
    for mode in ("early_exit", "full_depth"):
        m = e[mode]
        blocks = m["blocks"]
        # a block runs calls until its second has passed: it ends within one full-depth call of it
        assert len(blocks) == 1 and 1.0 <= blocks[0]["seconds"] < 1.0 + full_call_s + 1e-9
        # 20 W for the block's seconds, divided by its calls (the counter wrapped on the way: still 20 W)
        assert m["joules_total"] == pytest.approx(20.0 * m["seconds"] / m["inferences"], rel=1e-6)
        assert m["joules_total"] * m["inferences"] == pytest.approx(sum(b["joules"] for b in blocks))
        # nothing but the constant 20 W: nothing above idle, up to the counter's microjoule steps
        assert abs(m["joules_above_idle"]) <= 1e-6 * m["joules_total"]
        assert m["joules_above_idle"] == pytest.approx(
            (m["joules_total"] * m["inferences"] - e["idle"]["mean_watts"] * m["seconds"]) / m["inferences"])
    # full depth runs every stage: 7 ms a call, so 143 calls fill the second (142 leave 6 ms of it)
    assert e["full_depth"]["inferences"] == 143
    assert e["full_depth"]["joules_total"] == pytest.approx(20.0 * full_call_s, rel=1e-6)
    # same watts, fewer stages per call: early exit costs less per inference than full depth
    assert e["early_exit"]["inferences"] > e["full_depth"]["inferences"]
    assert e["early_exit"]["joules_total"] < e["full_depth"]["joules_total"]
    assert e["ratio_total"] == pytest.approx(e["full_depth"]["joules_total"] / e["early_exit"]["joules_total"])


def test_a_stalled_block_is_run_again_and_listed(tmp_path, runner, x):
    """The process stalls for 10 s in the middle of the first block (an overloaded machine): that block's
    joules are not the calls' joules, so it is discarded and run again, and the result says so."""
    root = _rapl_tree(tmp_path)
    sim = SimulatedClock(ConstantPower(root, 20.0))

    def stall(n: int) -> None:
        if n == 50:
            sim.advance(10.0)

    e = measure_energy(CostedRunner(runner, sim, stall), x, EnergyOptions(**FAST), host_profile(),
                       dict(_absent(tmp_path), rapl=RaplMeter(root)), sim.clock())
    [stalled] = e["overrun_blocks"]
    assert (stalled["mode"], stalled["kept"]) == ("early_exit", False) and stalled["seconds"] > 10.0
    assert e["meter"] == "rapl" and e["failed_during_run"] == []
    for mode in ("early_exit", "full_depth"):
        assert len(e[mode]["blocks"]) == 1 and e[mode]["blocks"][0]["seconds"] < 1.5


@pytest.mark.parametrize("fault, needle", [("remove", "does not exist"), ("garbage", "expected an integer")])
def test_a_meter_failing_mid_run_drops_to_the_next_and_says_so(tmp_path, runner, x, fault, needle):
    root = _rapl_tree(tmp_path)
    energy_uj = os.path.join(root, "intel-rapl:0", "energy_uj")

    def break_sensor(n: int) -> None:   # at the 5th call: inside the first block (after the idle baseline)
        if n != 5:
            return
        if fault == "remove":
            os.remove(energy_uj)
        else:
            _write(energy_uj, "garbage")

    sim = SimulatedClock()
    e = measure_energy(CostedRunner(runner, sim, break_sensor), x, EnergyOptions(**FAST), host_profile(),
                       dict(_absent(tmp_path), rapl=RaplMeter(root)), sim.clock())
    assert e["meter"] == "power-model" and e["kind"] == "estimated" and e["measured"] is False
    assert [f["meter"] for f in e["failed_during_run"]] == ["rapl"]
    assert needle in e["failed_during_run"][0]["error"]
    assert e["note"] == "meter rapl failed during the run; the energy figures come from power-model"
    assert {"meter": "rapl", "why": "excluded by the caller (failed earlier in this run)"} in e["not_used"]
    for mode in ("early_exit", "full_depth"):
        assert e[mode]["meter"] == "power-model" and e[mode]["inferences"] >= 1 and e[mode]["joules_total"] > 0


def test_a_named_meter_that_is_absent_is_an_error(tmp_path, runner, x):
    with pytest.raises(MeterError, match="energy meter 'rapl' is not available here: .* does not exist"):
        measure_energy(runner, x, EnergyOptions(meter="rapl", **FAST), host_profile(),
                       dict(_absent(tmp_path), rapl=RaplMeter(str(tmp_path / "no-powercap"))))


def test_this_machine_uses_rapl_when_readable_else_the_power_model(runner, x):
    e = measure_energy(runner, x, EnergyOptions(**FAST), host_profile())
    rapl_ok, why = RaplMeter().available()
    if rapl_ok:
        assert (e["meter"], e["kind"]) == ("rapl", "measured")
    else:
        assert (e["meter"], e["kind"]) == ("power-model", "estimated")
        assert {"meter": "rapl", "why": why} in e["not_used"]
        assert e["source"].startswith("estimated: 10 W idle + (35 - 10) W")
        busy = e["idle"]["mean_watts"] >= 0.98 * 35.0       # other jobs on this shared machine
        assert bool(e["warnings"]) == busy and all("idle baseline" in w for w in e["warnings"])
    for mode in ("early_exit", "full_depth"):
        assert np.isfinite(e[mode]["joules_total"]) and e[mode]["joules_total"] > 0


def test_a_jetson_reports_every_rail_per_phase(tmp_path, runner, x):
    orin = os.path.join(FIXTURES, "jetson-orin-nano-jp5", "sys")
    e = measure_energy(runner, x, EnergyOptions(meter="jetson-ina3221", **FAST),
                       profile_from_target(get_target("jetson-orin-nano")), {"jetson-ina3221": JetsonIna3221Meter(orin)})
    assert e["meter"] == "jetson-ina3221" and e["source"].startswith("INA3221 input rail VDD_IN")
    # the recorded tree holds still: each rail's power is its mV x mA in every phase
    expected = {"VDD_IN": 5.072 * 1.184, "VDD_CPU_GPU_CV": 5.064 * 0.232, "VDD_SOC": 5.064 * 0.472}
    assert [r["rail"] for r in e["rails"]] == list(expected)
    for row in e["rails"]:
        for phase in ("idle_w", "early_exit_w", "full_depth_w"):
            assert row[phase] == pytest.approx(expected[row["rail"]])
        assert row["samples"] >= 6 and "note" not in row
