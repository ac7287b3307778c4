"""Idle baseline and energy per inference, from readings of one meter taken in the same run.

Runs on the board: stdlib only, Python 3.8 syntax.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from edgekit.bench.meters.base import SYSTEM_CLOCK, Clock, EnergyReading, Meter, MeterError


@dataclass(frozen=True)
class EnergyPerInference:
    meter: str
    measured: bool                # False when either the run or the baseline is estimated
    inferences: int
    joules_total: float           # per inference: everything the meter saw, divided by the count
    joules_above_idle: float      # per inference: minus idle power x run time; may be slightly negative (noise)
    mean_watts: float             # during the run
    idle_watts: float             # the baseline's mean power
    seconds: float                # the run's duration

    def to_dict(self) -> Dict[str, Any]:
        return {"meter": self.meter, "measured": self.measured, "inferences": self.inferences,
                "joules_total": self.joules_total, "joules_above_idle": self.joules_above_idle,
                "mean_watts": self.mean_watts, "idle_watts": self.idle_watts, "seconds": self.seconds}


def measure_idle(meter: Meter, seconds: float = 5.0, interval_s: Optional[float] = None,
                 clock: Clock = SYSTEM_CLOCK) -> EnergyReading:
    """Sample `meter` for `seconds` while this thread does nothing; its mean_watts is the idle baseline."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
        raise MeterError("idle baseline duration: got {!r}; allowed: more than 0 and at most 3600 seconds".format(
            seconds))
    with meter.session(interval_s, clock) as s:
        clock.sleep(seconds)
    return s.result()


def energy_per_inference(reading: EnergyReading, idle: EnergyReading, inferences: int) -> EnergyPerInference:
    """Energy per inference total and above idle: (J - idle_W x s) / n, both readings from one meter."""
    if isinstance(inferences, bool) or not isinstance(inferences, int) or inferences < 1:
        raise MeterError("inference count: got {!r}; allowed: an integer >= 1".format(inferences))
    if reading.meter != idle.meter:
        raise MeterError("the run was measured with {} but the idle baseline with {}; allowed: the same meter "
                         "for both".format(reading.meter, idle.meter))
    above = reading.joules - idle.mean_watts * reading.seconds
    return EnergyPerInference(
        meter=reading.meter, measured=reading.measured and idle.measured, inferences=inferences,
        joules_total=reading.joules / inferences, joules_above_idle=above / inferences,
        mean_watts=reading.mean_watts, idle_watts=idle.mean_watts, seconds=reading.seconds)


def sum_readings(readings: Sequence[EnergyReading]) -> EnergyReading:
    """One reading from several sessions of one meter (interleaved blocks of the same policy)."""
    if not readings:
        raise MeterError("no readings to add up; allowed: one or more readings of one meter")
    meters = sorted(set(r.meter for r in readings))
    if len(meters) != 1:
        raise MeterError("readings come from meters {}; allowed: readings of one meter".format(", ".join(meters)))
    joules = sum(r.joules for r in readings)
    seconds = sum(r.seconds for r in readings)
    return EnergyReading(meter=meters[0], measured=all(r.measured for r in readings), joules=joules,
                         seconds=seconds, mean_watts=joules / seconds if seconds > 0 else 0.0,
                         samples=sum(r.samples for r in readings), source=readings[0].source)
