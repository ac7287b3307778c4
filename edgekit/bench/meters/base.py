"""What every energy meter shares: the reading, the background sampler, the integration of raw samples.

Runs on the board: stdlib only, Python 3.8 syntax.

A meter reads one *raw sample* at a time (`Meter.read`): watts for a power sensor, a cumulative energy
counter for RAPL, CPU time counters for the power model. A `Session` takes a sample when it starts,
then one every `interval_s` in a background thread, then one when it stops, and hands the timestamped
series to `Meter.integrate`, which turns it into joules. No meter trusts anyone else's averaging.
Timestamps come from a `Clock` (the system's by default), so that a simulated one can stand in for it.
"""
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from edgekit.errors import EdgekitError

MAX_PLAUSIBLE_WATTS = 10000.0   # a reading above this (or negative, or NaN) is garbage, not a board


class MeterError(EdgekitError):
    """An energy meter is absent, unreadable, returned garbage, or failed during a session."""


@dataclass(frozen=True)
class Clock:
    """Where sessions take their timestamps (`now`, seconds) and where an idle baseline waits (`sleep`).
    The system's clock by default; a simulated one makes seconds and joules independent of how busy the
    machine is (the background sampler still wakes on real time: that only changes how many samples)."""
    now: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep


SYSTEM_CLOCK = Clock()


@dataclass(frozen=True)
class EnergyReading:
    meter: str          # registry name, e.g. "rapl"
    measured: bool      # False: estimated from the target's power model
    joules: float
    seconds: float
    mean_watts: float
    samples: int        # raw samples integrated, including the ones at start and stop
    source: str         # what was read, in words (files, rails, command, model numbers)

    def to_dict(self) -> Dict[str, Any]:
        return {"meter": self.meter, "measured": self.measured, "joules": self.joules, "seconds": self.seconds,
                "mean_watts": self.mean_watts, "samples": self.samples, "source": self.source}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "EnergyReading":
        return cls(meter=str(d["meter"]), measured=bool(d["measured"]), joules=float(d["joules"]),
                   seconds=float(d["seconds"]), mean_watts=float(d["mean_watts"]), samples=int(d["samples"]),
                   source=str(d["source"]))


class RailStats(NamedTuple):
    """One rail's power over a session: sum of the sampled watts (for means), how many, smallest, largest."""
    watts_sum: float
    samples: int
    min_watts: float
    max_watts: float

    def add(self, watts: float) -> "RailStats":
        return RailStats(self.watts_sum + watts, self.samples + 1, min(self.min_watts, watts),
                         max(self.max_watts, watts))


def merge_rails(parts: Sequence[Mapping[str, RailStats]]) -> Dict[str, RailStats]:
    """Several sessions' rail powers added up, rail by rail (a rail missing from a session adds nothing)."""
    out = {}  # type: Dict[str, RailStats]
    for part in parts:
        for name, st in part.items():
            old = out.get(name)
            out[name] = st if old is None else RailStats(old.watts_sum + st.watts_sum, old.samples + st.samples,
                                                         min(old.min_watts, st.min_watts),
                                                         max(old.max_watts, st.max_watts))
    return out


# -- integration (pure functions, tested on hand-computed series) ------------------------------------------
def integrate_power(times: Sequence[float], watts: Sequence[float]) -> float:
    """Joules from power samples by the trapezoid rule: sum of (w[i] + w[i+1]) / 2 * (t[i+1] - t[i])."""
    if len(times) != len(watts):
        raise MeterError("got {} timestamps for {} power samples; they must pair up".format(len(times), len(watts)))
    total = 0.0
    for i in range(1, len(times)):
        total += (watts[i - 1] + watts[i]) / 2.0 * (times[i] - times[i - 1])
    return total


def integrate_counter(values: Sequence[int], wrap: int, what: str = "counter") -> int:
    """Sum of successive differences of a cumulative counter that restarts from 0 after reaching `wrap`.

    A decrease means the counter wrapped once: the step is (wrap - previous) + current. With wrap <= 0
    (range unknown) a decrease cannot be explained and is an error.
    """
    total = 0
    for i in range(1, len(values)):
        step = values[i] - values[i - 1]
        if step < 0:
            if wrap <= 0:
                raise MeterError("{} went down from {} to {} and its wrap-around range is unknown".format(
                    what, values[i - 1], values[i]))
            if values[i - 1] > wrap:
                raise MeterError("{} read {}, above its wrap-around range {}".format(what, values[i - 1], wrap))
            step += wrap
        total += step
    return total


def check_watts(watts: float, what: str) -> float:
    """A power figure a board can draw, or a MeterError that quotes the garbage."""
    ok = isinstance(watts, (int, float)) and not isinstance(watts, bool)
    if not ok or math.isnan(watts) or not 0.0 <= watts <= MAX_PLAUSIBLE_WATTS:
        raise MeterError("{} gave {!r} W; a plausible reading is a number from 0 to {:g} W".format(
            what, watts, MAX_PLAUSIBLE_WATTS))
    return float(watts)


# -- sysfs helpers -----------------------------------------------------------------------------------------
def read_text(path: str, permission_hint: str = "") -> str:
    """The stripped contents of a small sysfs file; every failure is a MeterError naming the path."""
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except PermissionError:
        raise MeterError("{} is not readable by this user{}".format(
            path, "; " + permission_hint if permission_hint else ""))
    except FileNotFoundError:
        raise MeterError("{} does not exist (the sensor is absent or disappeared)".format(path))
    except OSError as exc:
        raise MeterError("cannot read {}: {}".format(path, exc))


def read_int(path: str, permission_hint: str = "") -> int:
    text = read_text(path, permission_hint)
    try:
        return int(text)
    except ValueError:
        raise MeterError("{} holds {!r}; expected an integer".format(path, text[:80]))


# -- meters ------------------------------------------------------------------------------------------------
class Meter:
    """Base class. Subclasses set `name` (the registry name), `measured`, and implement `read`,
    `integrate` and `describe`; a meter with a device to hold open also overrides `open`/`close`.
    One session at a time per meter object."""

    name = "meter"
    measured = True
    default_interval_s = 0.1
    _in_session = False

    def available(self) -> Tuple[bool, str]:
        """(True, what will be read) or (False, why not). Takes one real sample; never raises."""
        if self._in_session:
            return True, self.describe()    # it is sampling right now; do not disturb its device
        try:
            self.open()
            try:
                self.read()
                return True, self.describe()
            finally:
                self.close()
        except MeterError as exc:
            return False, str(exc)

    def describe(self) -> str:
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def integrate(self, times: Sequence[float], raw: Sequence[Any]) -> float:
        raise NotImplementedError

    def rail_powers(self) -> Dict[str, RailStats]:
        """Power per supply rail over the samples since the last `open` (a session's start), for a meter that
        sees several rails (Jetson INA3221); {} for a meter that reads one figure."""
        return {}

    def open(self) -> None:
        """Acquire what sampling needs (a device file); called by a session before its first sample."""

    def close(self) -> None:
        """Release what `open` acquired; called when a session stops, also after a failure."""

    def session(self, interval_s: Optional[float] = None, clock: Clock = SYSTEM_CLOCK) -> "Session":
        return Session(self, self.default_interval_s if interval_s is None else interval_s, clock)


class PowerMeter(Meter):
    """A meter whose raw sample is instantaneous power in watts; integrated by the trapezoid rule."""

    def read(self) -> float:
        return check_watts(self.read_watts(), "{} ({})".format(self.name, self.describe()))

    def read_watts(self) -> float:
        raise NotImplementedError

    def integrate(self, times: Sequence[float], raw: Sequence[Any]) -> float:
        return integrate_power(times, [float(w) for w in raw])


class Session:
    """Background sampling of one meter between start() and stop(); also a context manager:

        with meter.session(0.05) as s:
            work()
        reading = s.result()
    """

    def __init__(self, meter: Meter, interval_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not 0.001 <= interval_s <= 60:
            raise MeterError("sampling interval for {}: got {!r}; allowed: 0.001 to 60 seconds".format(
                meter.name, interval_s))
        self.meter = meter
        self.interval_s = float(interval_s)
        self.clock = clock
        self._times = []          # type: List[float]
        self._raw = []            # type: List[Any]
        self._error = None        # type: Optional[BaseException]
        self._stop = threading.Event()
        self._thread = None       # type: Optional[threading.Thread]
        self._result = None       # type: Optional[EnergyReading]

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.stop()
        else:
            self._halt()

    @property
    def samples(self) -> List[Tuple[float, Any]]:
        """(clock time, raw sample) pairs so far: a power trace for plots, or for tests."""
        return list(zip(list(self._times), list(self._raw)))

    def start(self) -> "Session":
        if self._thread is not None:
            raise MeterError("this {} session was already started; open a new session".format(self.meter.name))
        if self.meter._in_session:
            raise MeterError("meter {} is already sampling in another session".format(self.meter.name))
        self.meter.open()
        self.meter._in_session = True
        try:
            self._sample()
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._loop, name="edgekit-meter-" + self.meter.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> EnergyReading:
        """Stop sampling, take the last sample, integrate. MeterError if the meter failed meanwhile."""
        if self._result is not None:
            return self._result
        if self._thread is None:
            raise MeterError("this {} session was never started".format(self.meter.name))
        self._halt(final_sample=True)
        if self._error is not None:
            raise MeterError("meter {} failed during the session after {} sample(s) over {:.2f} s: {}".format(
                self.meter.name, len(self._raw), self._span(), self._error))
        joules = float(self.meter.integrate(self._times, self._raw))
        seconds = self._span()
        self._result = EnergyReading(
            meter=self.meter.name, measured=self.meter.measured, joules=joules, seconds=seconds,
            mean_watts=joules / seconds if seconds > 0 else 0.0, samples=len(self._raw),
            source=self.meter.describe())
        return self._result

    def result(self) -> EnergyReading:
        if self._result is None:
            raise MeterError("the {} session has no result until it is stopped".format(self.meter.name))
        return self._result

    # -- internals -------------------------------------------------------------------------------------
    def _span(self) -> float:
        return self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0

    def _sample(self) -> None:
        before = self.clock.now()
        raw = self.meter.read()
        after = self.clock.now()
        self._times.append((before + after) / 2.0)   # a slow read (a subprocess) is stamped at its middle
        self._raw.append(raw)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except BaseException as exc:   # a background thread must not die silently
                self._error = exc
                return

    def _halt(self, final_sample: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if final_sample and self._error is None:
                try:
                    self._sample()
                except BaseException as exc:
                    self._error = exc
        finally:
            self._release()

    def _release(self) -> None:
        self.meter._in_session = False
        self.meter.close()
