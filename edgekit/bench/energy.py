"""Energy in the bench run: an idle baseline and alternating blocks of early exit and full depth.

Runs on the board: numpy + stdlib, Python 3.8 syntax, no TensorFlow.

One call is far shorter than a power sensor's sampling interval, so energy is not measured per call:
1. the meter is picked (`--meter auto`: the profile's sensor, any other readable sensor, then the
   profile's power model, which is an estimate);
2. idle baseline: half of `idle_seconds` before the blocks and half after, the meter sampling while this
   process sleeps; the two halves are added (so slow drift over the run is averaged out);
3. `blocks` blocks per mode, each at least `block_seconds` long, in the order A B B A A B ... (A = early
   exit), so that drift hits both modes alike; each block is one meter session in which batch-1 calls of
   one mode run back to back over the data;
4. per mode the block readings are added (`sum_readings`) and divided by the calls: energy per inference
   total, and above idle (the baseline's mean watts x the blocks' seconds subtracted).
A block that lasts far longer than asked (over 1.5x, and over +0.5 s: the process was stalled by an
overloaded machine) is discarded and run again, at most MAX_RETRIES times; the result lists such blocks.
A meter that fails during the run (unreadable, garbage, gone) is excluded, the next available meter is
picked in auto order, and the energy part starts again with it; the result lists every failure.
Every duration (blocks, idle, the meter's timestamps) comes from one `Clock`, the system's unless a caller
passes a simulated one.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.bench.meters import (AUTO, SYSTEM_CLOCK, Clock, EnergyReading, Meter, MeterChoice, MeterError,
                                  energy_per_inference, measure_idle, meter_names, pick_meter, sum_readings)
from edgekit.bench.meters.base import RailStats, merge_rails
from edgekit.errors import ConfigError
from edgekit.power_model import METER_NAMES, POWER_MODEL, PowerModel
from edgekit.runtime.runner import EarlyExitRunner

MODES = ("early_exit", "full_depth")
MIN_BLOCK_SECONDS = 1.0
MAX_RETRIES = 2          # an overrun block (the process was stalled) is run again at most this often
MANIFEST_KEY = "energy"  # the manifest section that carries the bundle target's energy meter and power model


@dataclass(frozen=True)
class EnergyProfile:
    """What the meters need from a board profile (duck-types edgekit.targets.Target for pick_meter).
    Plain data, so that the laptop can hand it to the board as JSON (the board has no YAML parser)."""
    name: str
    energy_meter: str
    power_model: PowerModel

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "energy_meter": self.energy_meter, "power_model": self.power_model.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "EnergyProfile":
        if not isinstance(d, dict) or not {"name", "energy_meter", "power_model"} <= set(d):
            raise ConfigError("{}: expected {{name, energy_meter, power_model: {{idle_w, active_w, source}}}}, got "
                              "{!r}".format(where, d))
        meter = d["energy_meter"]
        if meter not in METER_NAMES:
            raise ConfigError("{}.energy_meter: got {!r}; allowed: {}".format(where, meter, ", ".join(METER_NAMES)))
        return cls(str(d["name"]), meter, PowerModel.from_dict(d["power_model"], where + ".power_model"))


def profile_from_target(target: Any) -> EnergyProfile:
    """From an edgekit.targets.Target."""
    return EnergyProfile(target.name, target.energy_meter, target.power_model)


def manifest_energy(target: Any) -> Dict[str, Any]:
    """The bundle manifest's `energy` section, written at conversion from an edgekit.targets.Target:
    {energy_meter, power_model: {idle_w, active_w, source}}, the same shape as one `--profiles` entry."""
    d = profile_from_target(target).to_dict()
    del d["name"]
    return d


def profile_from_manifest(manifest: Any) -> Optional[EnergyProfile]:
    """The energy profile a bundle carries (manifest `energy`), or None for a bundle made without one."""
    section = manifest.extra.get(MANIFEST_KEY)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError("manifest.{}: expected an object {{energy_meter, power_model}}, got {!r}".format(
            MANIFEST_KEY, section))
    return EnergyProfile.from_dict(dict(section, name=manifest.target), "manifest." + MANIFEST_KEY)


def pick_profile(profiles: Mapping[str, Any], target: str) -> EnergyProfile:
    """The profile of `target` from a {name: profile dict} mapping (what `--profiles` carries)."""
    if not isinstance(profiles, Mapping) or target not in profiles:
        known = (", ".join(sorted(profiles)) if isinstance(profiles, Mapping) else "") or "none"
        raise ConfigError("no board profile for the bundle's target {!r}; profiles given: {}".format(target, known))
    return EnergyProfile.from_dict(dict(profiles[target], name=target), "profile " + target)


@dataclass(frozen=True)
class EnergyOptions:
    meter: str = AUTO
    usb_device: Optional[str] = None
    blocks: int = 3                   # per mode
    block_seconds: float = 1.0        # at least, per block
    idle_seconds: float = 2.0         # in total, half before and half after the blocks
    interval_s: Optional[float] = None   # sampling interval; None: the meter's default

    def check(self) -> "EnergyOptions":
        if self.meter not in meter_names():
            raise MeterError("unknown energy meter {!r}; allowed: {}".format(self.meter, ", ".join(meter_names())))
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or not 1 <= self.blocks <= 1000:
            raise ConfigError("--blocks must be an integer from 1 to 1000 per mode, got {!r}".format(self.blocks))
        if not MIN_BLOCK_SECONDS <= self.block_seconds <= 600:
            raise ConfigError("--block-seconds must be from {:g} to 600 (power sensors sample every 0.1-0.5 s), "
                              "got {!r}".format(MIN_BLOCK_SECONDS, self.block_seconds))
        if not 0.2 <= self.idle_seconds <= 3600:
            raise ConfigError("--idle-seconds must be from 0.2 to 3600, got {!r}".format(self.idle_seconds))
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def block_order(blocks: int) -> List[str]:
    """A B B A A B B A ...: `blocks` of each mode, every pair swapped relative to the last."""
    out = []   # type: List[str]
    for b in range(blocks):
        out += list(MODES) if b % 2 == 0 else list(reversed(MODES))
    return out


def _run_block(runner: EarlyExitRunner, samples: List[np.ndarray], full: bool, seconds: float,
               start: int, clock: Clock) -> int:
    """Batch-1 calls of one mode, back to back, for at least `seconds`; returns the number of calls."""
    now = clock.now
    n, calls = len(samples), 0
    t0 = now()
    while calls == 0 or now() - t0 < seconds:
        runner.run(samples[(start + calls) % n], full_depth=full)
        calls += 1
    return calls


def overran(reading: EnergyReading, block_seconds: float) -> bool:
    """A block that lasted far longer than asked: the process was stalled (an overloaded machine), so
    its joules are not the calls' joules."""
    return reading.seconds > max(1.5 * block_seconds, block_seconds + 0.5)


def _block(meter: Meter, runner: EarlyExitRunner, samples: List[np.ndarray], mode: str, opts: EnergyOptions,
           start: int, discarded: List[Dict[str, Any]], clock: Clock) -> Tuple[EnergyReading, int]:
    """One block of `mode` in its own meter session; an overrun block is discarded and run again
    (at most MAX_RETRIES times; the last one is then kept and the discard list says so)."""
    for attempt in range(MAX_RETRIES + 1):
        with meter.session(opts.interval_s, clock) as s:
            n = _run_block(runner, samples, mode == "full_depth", opts.block_seconds, start, clock)
        r = s.result()
        if not overran(r, opts.block_seconds):
            return r, n
        discarded.append({"mode": mode, "seconds": r.seconds, "calls": n, "samples": r.samples,
                          "kept": attempt == MAX_RETRIES})
    return r, n


def _measure_with(meter: Meter, runner: EarlyExitRunner, samples: List[np.ndarray],
                  opts: EnergyOptions, clock: Clock) -> Dict[str, Any]:
    half = opts.idle_seconds / 2.0
    idle_before = measure_idle(meter, half, opts.interval_s, clock)
    rails = {"idle": [meter.rail_powers()]}    # type: Dict[str, List[Dict[str, RailStats]]]
    readings = {m: [] for m in MODES}     # type: Dict[str, List[EnergyReading]]
    calls = {m: 0 for m in MODES}
    discarded = []                        # type: List[Dict[str, Any]]
    for mode in block_order(opts.blocks):
        r, n = _block(meter, runner, samples, mode, opts, calls[mode], discarded, clock)
        readings[mode].append(r)
        rails.setdefault(mode, []).append(meter.rail_powers())
        calls[mode] += n
    idle = sum_readings([idle_before, measure_idle(meter, half, opts.interval_s, clock)])
    rails["idle"].append(meter.rail_powers())
    out = {"idle": idle.to_dict(), "overrun_blocks": discarded}   # type: Dict[str, Any]
    table = rail_table(rails)
    if table:
        out["rails"] = table
    for mode in MODES:
        e = energy_per_inference(sum_readings(readings[mode]), idle, calls[mode]).to_dict()
        e["blocks"] = [r.to_dict() for r in readings[mode]]
        out[mode] = e
    return out


def rail_table(per_phase: Mapping[str, List[Mapping[str, RailStats]]]) -> List[Dict[str, Any]]:
    """Every rail the meter saw, with its mean watts while idle and in each mode ([] for one-figure meters).
    A rail that was found but never read has None for its figures and says so."""
    merged = dict((phase, merge_rails(parts)) for phase, parts in per_phase.items())
    names = []  # type: List[str]
    for phase in ("idle",) + MODES:
        names += [n for n in merged.get(phase, {}) if n not in names]
    rows = []
    for name in names:
        row = {"rail": name}  # type: Dict[str, Any]
        seen = 0
        for phase in ("idle",) + MODES:
            st = merged.get(phase, {}).get(name)
            row[phase + "_w"] = st.watts_sum / st.samples if st is not None and st.samples else None
            seen += st.samples if st is not None else 0
        row["samples"] = seen
        if not seen:
            row["note"] = "found but unreadable"
        rows.append(row)
    return rows


class NoPowerModel(Meter):
    """Stands in for the power model when there is no board profile (a bundle whose manifest has no `energy`
    section, run by hand without --profiles): never available, and says why, so that auto can still pick a
    real sensor."""
    name = POWER_MODEL
    measured = False
    WHY = ("the bundle's manifest carries no power model (convert it again with this edgekit) and no board profile "
           "was given (pass --profiles; edgekit bench --host does)")

    def available(self) -> Tuple[bool, str]:
        return False, self.WHY

    def describe(self) -> str:
        return "no power model"

    def read(self) -> Any:
        raise MeterError(self.WHY)


def _with_profile(profile: Optional[EnergyProfile],
                  meters: Optional[Mapping[str, Meter]]) -> Optional[Mapping[str, Meter]]:
    return meters if profile is not None else dict(meters or {}, **{POWER_MODEL: NoPowerModel()})


def preflight(opts: EnergyOptions, profile: Optional[EnergyProfile],
              meters: Optional[Mapping[str, Meter]] = None) -> str:
    """Check the options and that a meter asked for by name is there, before anything is timed; its name."""
    opts.check()
    return pick_meter(opts.meter, profile, opts.usb_device, (), _with_profile(profile, meters)).meter.name


def measure_energy(runner: EarlyExitRunner, x: np.ndarray, opts: EnergyOptions, profile: Optional[EnergyProfile],
                   meters: Optional[Mapping[str, Meter]] = None, clock: Clock = SYSTEM_CLOCK) -> Dict[str, Any]:
    """Energy per inference for both modes from one meter, with an idle baseline from the same run.
    `meters` overrides registry meters by name (recorded sensor trees in tests), as in pick_meter;
    `clock` times the blocks, the idle baseline and the meter's samples.
    Without a profile (None) there is no power model: only real sensors can be used."""
    opts.check()
    meters = _with_profile(profile, meters)
    samples = [x[i:i + 1] for i in range(len(x))]
    failures = []   # type: List[Dict[str, str]]
    exclude = []    # type: List[str]
    while True:
        name = opts.meter if not failures else AUTO
        try:
            choice = pick_meter(name, profile, opts.usb_device, exclude, meters)   # type: MeterChoice
        except MeterError as exc:
            if not failures:
                raise
            raise MeterError("every energy meter failed during the run ({}); last: {}".format(
                "; ".join("{}: {}".format(f["meter"], f["error"]) for f in failures), exc))
        try:
            measured = _measure_with(choice.meter, runner, samples, opts, clock)
        except MeterError as exc:
            failures.append({"meter": choice.meter.name, "error": str(exc)})
            exclude.append(choice.meter.name)
            continue
        return _summary(choice, measured, failures, opts)


def _summary(choice: MeterChoice, measured: Dict[str, Any], failures: List[Dict[str, str]],
             opts: EnergyOptions) -> Dict[str, Any]:
    m = choice.meter
    ee, fd = measured["early_exit"], measured["full_depth"]
    out = {
        "meter": m.name, "measured": bool(ee["measured"] and fd["measured"]),
        "kind": "measured" if ee["measured"] and fd["measured"] else "estimated",
        "source": m.describe(), "reason": choice.reason,
        "not_used": [{"meter": n, "why": w} for n, w in choice.skipped],
        "failed_during_run": failures, "options": opts.to_dict(), "block_order": block_order(opts.blocks),
        "idle": measured["idle"], "early_exit": ee, "full_depth": fd, "overrun_blocks": measured["overrun_blocks"],
        "ratio_total": _ratio(fd["joules_total"], ee["joules_total"]),
        "ratio_above_idle": _ratio(fd["joules_above_idle"], ee["joules_above_idle"]),
    }
    if measured.get("rails"):
        out["rails"] = measured["rails"]
    if failures:
        out["note"] = "meter {} failed during the run; the energy figures come from {}".format(
            ", ".join(f["meter"] for f in failures), m.name)
    out["warnings"] = _warnings(m, measured["idle"])
    return out


def _warnings(meter: Meter, idle: Dict[str, Any]) -> List[str]:
    """What makes the figures weaker than they look, in words."""
    active = getattr(meter, "active_w", None)
    if active is not None and idle["mean_watts"] >= 0.98 * active:
        return ["the idle baseline ({:.2f} W) is at the power model's active power ({:g} W): other work kept the "
                "CPUs busy while this process slept, so energy above idle cannot be told apart from zero".format(
                    idle["mean_watts"], active)]
    return []


def _ratio(full: float, early: float) -> Optional[float]:
    """full depth / early exit, or None when the early-exit figure is not positive (noise above idle)."""
    return full / early if early > 0 else None


def energy_rows(energy: Dict[str, Any]) -> List[Tuple[str, str, str, str, str, str]]:
    """Table rows: mode, mJ per inference total, above idle, mean W, calls, seconds."""
    rows = []
    for mode in MODES:
        e = energy[mode]
        rows.append((mode, "{:.4f}".format(e["joules_total"] * 1e3), "{:.4f}".format(e["joules_above_idle"] * 1e3),
                     "{:.2f}".format(e["mean_watts"]), str(e["inferences"]), "{:.2f}".format(e["seconds"])))
    return rows
