"""Energy meters: the registry, and the choice of a meter for a run (`pick_meter`).

Runs on the board: stdlib only, Python 3.8 syntax, no TensorFlow.

    choice = pick_meter("auto", target)            # MeterChoice: .meter, .reason, .skipped
    idle = measure_idle(choice.meter, 5.0)
    with choice.meter.session() as s:
        run_inferences()
    e = energy_per_inference(s.result(), idle, n)  # .joules_total, .joules_above_idle, .measured
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from edgekit.bench.meters.base import (SYSTEM_CLOCK, Clock, EnergyReading, Meter, MeterError, PowerMeter, Session,
                                       integrate_counter, integrate_power)
from edgekit.bench.meters.baseline import EnergyPerInference, energy_per_inference, measure_idle, sum_readings
from edgekit.bench.meters.jetson_ina3221 import JetsonIna3221Meter
from edgekit.bench.meters.power_model import PowerModelMeter
from edgekit.bench.meters.rapl import RaplMeter
from edgekit.bench.meters.rpi5_pmic import RaspberryPi5PmicMeter
from edgekit.bench.meters.usb_serial import UsbSerialMeter
from edgekit.power_model import METER_NAMES, POWER_MODEL

# `target` below: an edgekit.targets.Target, or anything with the same name, energy_meter and power_model
# (an edgekit.power_model.PowerModel) - on the board, edgekit.bench.energy.EnergyProfile (targets/ is not shipped).
Target = Any

# The meter class of every name in edgekit.power_model.METER_NAMES (the one list of names and their order).
_CLASSES = dict((cls.name, cls) for cls in (RaplMeter, JetsonIna3221Meter, RaspberryPi5PmicMeter, UsbSerialMeter,
                                            PowerModelMeter))   # type: Dict[str, Type[Meter]]
METERS = OrderedDict((name, _CLASSES[name]) for name in METER_NAMES)   # type: Dict[str, Type[Meter]]
AUTO = "auto"

__all__ = ["METERS", "AUTO", "Clock", "SYSTEM_CLOCK", "MeterChoice", "make_meter", "pick_meter", "meter_names",
           "EnergyReading", "EnergyPerInference", "Meter", "PowerMeter", "Session", "MeterError", "measure_idle",
           "energy_per_inference", "sum_readings", "integrate_power", "integrate_counter", "RaplMeter",
           "JetsonIna3221Meter", "RaspberryPi5PmicMeter", "UsbSerialMeter", "PowerModelMeter"]


@dataclass(frozen=True)
class MeterChoice:
    meter: Meter
    reason: str                              # why this meter, in words
    skipped: Tuple[Tuple[str, str], ...]     # (meter name, why it was not used), in the order tried

    def summary(self) -> str:
        lines = ["energy meter: {} ({}) - {}".format(
            self.meter.name, "measured" if self.meter.measured else "estimated", self.reason)]
        lines += ["  not used: {}: {}".format(name, why) for name, why in self.skipped]
        return "\n".join(lines)


def meter_names() -> List[str]:
    return [AUTO] + list(METERS)


def make_meter(name: str, target: Target, usb_device: Optional[str] = None,
               meters: Optional[Mapping[str, Meter]] = None) -> Meter:
    """The meter called `name`: the instance given in `meters` under that name (a sensor at another
    location, a recorded fixture), else the registry's meter at its real system location; the power
    model comes from `target`, the USB meter reads `usb_device`."""
    if name not in METERS:
        raise MeterError("unknown energy meter {!r}; allowed: {}".format(name, ", ".join(meter_names())))
    if meters and name in meters:
        return meters[name]
    if name == POWER_MODEL:
        return PowerModelMeter.from_target(target)
    if name == "usb-serial":
        return UsbSerialMeter(device=usb_device)
    return METERS[name]()


def pick_meter(name: str, target: Target, usb_device: Optional[str] = None, exclude: Sequence[str] = (),
               meters: Optional[Mapping[str, Meter]] = None) -> MeterChoice:
    """`name` is "auto" or a registry name. auto tries the profile's energy_meter first (when it is a real
    sensor), then every other real sensor in registry order, then the power model (always available).
    `exclude` names meters not to try again (one that failed earlier in the run); `meters` overrides
    registry instances by name (see make_meter). A named meter that is not available is a MeterError
    with the reason, the allowed names and the meters available here."""
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    for n in exclude + tuple(meters or {}):
        if n not in METERS:
            raise MeterError("unknown energy meter {!r}; allowed: {}".format(n, ", ".join(METERS)))
    if name != AUTO and name not in METERS:
        raise MeterError("unknown energy meter {!r}; allowed: {}".format(name, ", ".join(meter_names())))
    if name == AUTO:
        return _auto(target, usb_device, exclude, meters)
    meter = make_meter(name, target, usb_device, meters)
    ok, why = meter.available()
    if not ok:
        here = [n for n in METERS if n != name and make_meter(n, target, usb_device, meters).available()[0]]
        raise MeterError("energy meter {!r} is not available here: {}; allowed: {} (available here: {})".format(
            name, why, ", ".join(meter_names()), ", ".join([AUTO] + here)))
    return MeterChoice(meter, "asked for by name: " + why, ())


def _auto(target: Target, usb_device: Optional[str], exclude: Sequence[str],
          meters: Optional[Mapping[str, Meter]]) -> MeterChoice:
    profile = getattr(target, "energy_meter", None)
    order = [profile] if profile in METERS and profile != POWER_MODEL else []
    order += [n for n in METERS if n not in order and n != POWER_MODEL] + [POWER_MODEL]
    skipped = []   # type: List[Tuple[str, str]]
    for n in order:
        if n in exclude:
            skipped.append((n, "excluded by the caller (failed earlier in this run)"))
            continue
        meter = make_meter(n, target, usb_device, meters)
        ok, why = meter.available()
        if ok:
            role = ("no real sensor is readable" if n == POWER_MODEL else
                    "the profile's energy_meter" if n == profile else "a readable real sensor")
            return MeterChoice(meter, "{}: {}".format(role, why), tuple(skipped))
        skipped.append((n, why))
    raise MeterError("no energy meter is available (tried {}); allowed: {}".format(
        "; ".join("{}: {}".format(n, w) for n, w in skipped), ", ".join(meter_names())))
