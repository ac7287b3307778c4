"""NVIDIA Jetson INA3221 power monitor: total board power from the input rail.

Runs on the board: stdlib only, Python 3.8 syntax (JetPack 5 ships Python 3.8).

Two sysfs layouts, both under `sysfs_root` (default /sys):
  JetPack 4 (Nano, TX2, Xavier NX), iio driver ina3221x:
      bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N       e.g. "POM_5V_IN"
      bus/i2c/drivers/ina3221x/*/iio:device*/in_powerN_input   milliwatts
  JetPack 5/6 (Orin), hwmon driver ina3221:
      bus/i2c/devices/*/hwmon/hwmon*/inN_label                  e.g. "VDD_IN"
      bus/i2c/devices/*/hwmon/hwmon*/inN_input                  bus voltage, millivolts
      bus/i2c/devices/*/hwmon/hwmon*/currN_input                current, milliamps
The input rail carries the whole module's power: POM_5V_IN on the Nano, VDD_IN on Orin / Xavier NX / TX2.
Every sample also reads every other labelled rail (CPU, GPU, SOC, CPU_GPU_CV ...): the total is integrated
into energy, the others are reported per rail (rail_powers); a rail that cannot be read is reported so,
without failing the total.
"""
import glob
import os
import re
from typing import Dict, List, NamedTuple, Optional

from edgekit.bench.meters.base import MeterError, PowerMeter, RailStats, read_int, read_text

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")   # the first one present is the total
JP4_GLOB = "bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*"
JP5_GLOB = "bus/i2c/devices/*/hwmon/hwmon*/in*_label"


class Rail(NamedTuple):
    name: str
    layout: str          # "iio (JetPack 4)" or "hwmon (JetPack 5/6)"
    files: List[str]     # [power mW] for iio; [voltage mV, current mA] for hwmon


def find_rails(sysfs_root: str) -> List[Rail]:
    """Every labelled INA3221 channel in either layout, in path order."""
    rails = []
    for path in sorted(glob.glob(os.path.join(sysfs_root, JP4_GLOB))):
        m = re.search(r"rail_name_(\d+)$", path)
        if m:
            d = os.path.dirname(path)
            rails.append(Rail(read_text(path), "iio (JetPack 4)",
                              [os.path.join(d, "in_power{}_input".format(m.group(1)))]))
    for path in sorted(glob.glob(os.path.join(sysfs_root, JP5_GLOB))):
        m = re.search(r"in(\d+)_label$", path)
        if m:
            d, n = os.path.dirname(path), m.group(1)
            rails.append(Rail(read_text(path), "hwmon (JetPack 5/6)",
                              [os.path.join(d, "in{}_input".format(n)), os.path.join(d, "curr{}_input".format(n))]))
    return rails


def rail_watts(rail: Rail) -> float:
    """One rail's power now: mW for iio (JetPack 4), mV x mA for hwmon (JetPack 5/6)."""
    if len(rail.files) == 1:
        return read_int(rail.files[0]) / 1000.0                      # mW -> W
    return read_int(rail.files[0]) * read_int(rail.files[1]) / 1e6      # mV * mA -> W


def _keys(rails: List[Rail]) -> List[str]:
    """Rail names, made unique ("VDD_IN", "VDD_IN#2") when two sensors use the same label."""
    seen = {}  # type: Dict[str, int]
    out = []
    for r in rails:
        seen[r.name] = seen.get(r.name, 0) + 1
        out.append(r.name if seen[r.name] == 1 else "{}#{}".format(r.name, seen[r.name]))
    return out


class JetsonIna3221Meter(PowerMeter):
    name = "jetson-ina3221"
    measured = True
    default_interval_s = 0.1

    def __init__(self, sysfs_root: str = "/sys", rail: Optional[str] = None) -> None:
        self.sysfs_root = sysfs_root
        self.rail_name = rail          # None: the first of INPUT_RAILS present
        self._rail = None              # type: Optional[Rail]
        self._all = None               # type: Optional[List[Rail]]
        self._stats = {}               # type: Dict[str, RailStats]

    def open(self) -> None:
        self._stats = {}

    def rail(self) -> Rail:
        """The rail to read, found once; MeterError listing what was found when it is absent."""
        if self._rail is None:
            rails = self._all = find_rails(self.sysfs_root)
            wanted = (self.rail_name,) if self.rail_name else INPUT_RAILS
            by_name = dict((r.name, r) for r in reversed(rails))
            for name in wanted:
                if name in by_name:
                    self._rail = by_name[name]
                    break
            else:
                raise MeterError("no INA3221 rail named {} under {} (searched {} and {}; rails found: {})".format(
                    " or ".join(wanted), self.sysfs_root, JP4_GLOB, JP5_GLOB,
                    ", ".join(r.name for r in rails) or "none"))
        return self._rail

    def describe(self) -> str:
        r = self.rail()
        return "INA3221 input rail {} via {}: {}".format(r.name, r.layout, ", ".join(r.files))

    def read_watts(self) -> float:
        total_rail = self.rail()
        total = rail_watts(total_rail)                 # a failure here fails the sample, as it must
        for key, r in zip(_keys(self._all or [total_rail]), self._all or [total_rail]):
            try:
                w = total if r is total_rail else rail_watts(r)
            except MeterError:
                self._stats.setdefault(key, RailStats(0.0, 0, 0.0, 0.0))     # found, but no reading
                continue
            old = self._stats.get(key)
            self._stats[key] = RailStats(w, 1, w, w) if old is None or old.samples == 0 else old.add(w)
        return total

    def rail_powers(self) -> Dict[str, RailStats]:
        return dict(self._stats)
