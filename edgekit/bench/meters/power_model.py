"""The power-model meter: an estimate from the target profile's idle and active watts. Always available,
always marked estimated (`measured = False`).

Runs on the board: stdlib only, Python 3.8 syntax.

Power over an interval = idle_w + (active_w - idle_w) x CPU utilization over that interval, the
utilization being busy / total CPU time from the aggregate `cpu` line of /proc/stat (busy = all time
but idle and iowait). When /proc/stat cannot be read the model assumes active_w throughout (an upper
bound: energy above idle then comes out as zero) and says so in its description.
"""
from typing import Any, List, Optional, Sequence, Tuple

from edgekit.bench.meters.base import Meter, MeterError
from edgekit.power_model import POWER_MODEL

DEFAULT_PROC_STAT = "/proc/stat"


def read_cpu_times(path: str) -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies summed over all CPUs, or None when the file cannot be read or parsed."""
    try:
        with open(path, "r") as f:
            first = f.readline().split()
        if not first or first[0] != "cpu" or len(first) < 5:
            return None
        fields = [int(x) for x in first[1:9]]   # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields)                       # guest time is already counted in user / nice
    return total - idle, total


def utilizations(raw: Sequence[Optional[Tuple[int, int]]]) -> List[Optional[float]]:
    """Busy fraction per interval between successive samples; None where it cannot be known."""
    out = []   # type: List[Optional[float]]
    for a, b in zip(raw[:-1], raw[1:]):
        if a is None or b is None or b[1] - a[1] <= 0:
            out.append(None)
        else:
            out.append(min(1.0, max(0.0, (b[0] - a[0]) / float(b[1] - a[1]))))
    return out


class PowerModelMeter(Meter):
    name = POWER_MODEL
    measured = False
    default_interval_s = 0.5

    def __init__(self, idle_w: float, active_w: float, source: str, proc_stat: str = DEFAULT_PROC_STAT) -> None:
        if not 0 <= idle_w <= active_w:
            raise MeterError("power model: got idle_w {!r} and active_w {!r}; allowed: 0 <= idle_w <= active_w"
                             .format(idle_w, active_w))
        self.idle_w = float(idle_w)
        self.active_w = float(active_w)
        self.source = source
        self.proc_stat = proc_stat

    @classmethod
    def from_target(cls, target: Any, proc_stat: str = DEFAULT_PROC_STAT) -> "PowerModelMeter":
        """From an edgekit.targets.Target or an EnergyProfile (its power_model: an edgekit.power_model.PowerModel)."""
        pm = target.power_model
        return cls(pm.idle_w, pm.active_w, "{}: {}".format(target.name, pm.source), proc_stat)

    def describe(self) -> str:
        how = ("x CPU utilization from {}".format(self.proc_stat) if read_cpu_times(self.proc_stat) is not None
               else "x 1 ({} unreadable: assumes full load throughout)".format(self.proc_stat))
        return "estimated: {:g} W idle + ({:g} - {:g}) W {} (profile {})".format(
            self.idle_w, self.active_w, self.idle_w, how, self.source)

    def read(self) -> Optional[Tuple[int, int]]:
        return read_cpu_times(self.proc_stat)

    def watts(self, utilization: float) -> float:
        return self.idle_w + (self.active_w - self.idle_w) * utilization

    def integrate(self, times: Sequence[float], raw: Sequence[Any]) -> float:
        """Joules: sum over intervals of dt x watts(utilization of that interval). An interval too short
        for the jiffy clock gets the utilization of the whole session, or 1 when that is unknown too."""
        whole = utilizations([raw[0], raw[-1]])[0] if len(raw) > 1 else None
        fallback = 1.0 if whole is None else whole
        total = 0.0
        for i, u in enumerate(utilizations(raw)):
            total += (times[i + 1] - times[i]) * self.watts(fallback if u is None else u)
        return total
