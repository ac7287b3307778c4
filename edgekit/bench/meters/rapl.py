"""Intel RAPL through the powercap sysfs interface: package energy counters, summed over packages.

Runs on the board (x86 hosts here): stdlib only, Python 3.8 syntax.

Layout read (`root` defaults to /sys/class/powercap):
    intel-rapl:N/name                  "package-N" (or "psys", "dram" ... which are not summed)
    intel-rapl:N/energy_uj             cumulative microjoules; root-only since Linux 5.10
    intel-rapl:N/max_energy_range_uj   the counter restarts from 0 after this value
Subzones (intel-rapl:N:M: core, uncore, dram) are parts of a package and are not added again;
the platform zone "psys" contains the packages and is not added either.
"""
import os
import re
from typing import Any, List, NamedTuple, Sequence, Tuple

from edgekit.bench.meters.base import Meter, MeterError, integrate_counter, read_int, read_text

DEFAULT_ROOT = "/sys/class/powercap"
_ZONE = re.compile(r"^intel-rapl:(\d+)$")


class RaplDomain(NamedTuple):
    name: str            # "package-0"
    energy_path: str     # .../intel-rapl:0/energy_uj
    wrap_uj: int         # max_energy_range_uj, 0 if unknown


def permission_hint(root: str) -> str:
    return ("RAPL energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694, uid {}); run the benchmark "
            "as root (sudo), or grant read access until reboot: sudo chmod o+r {}/intel-rapl:*/energy_uj").format(
                os.geteuid(), root)


class RaplMeter(Meter):
    name = "rapl"
    measured = True
    default_interval_s = 0.1

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root
        self._domains = None   # type: Any

    def domains(self) -> List[RaplDomain]:
        """The package zones under root, found once; MeterError saying why when there are none."""
        if self._domains is None:
            self._domains = self._find_domains()
        return list(self._domains)

    def _find_domains(self) -> List[RaplDomain]:
        if not os.path.isdir(self.root):
            raise MeterError("{} does not exist: this machine has no powercap interface (not x86, a virtual "
                             "machine, or a kernel without intel_rapl)".format(self.root))
        zones = sorted((int(m.group(1)), e) for e in os.listdir(self.root) for m in [_ZONE.match(e)] if m)
        found, domains = [], []
        for _, entry in zones:
            zone = os.path.join(self.root, entry)
            name = read_text(os.path.join(zone, "name"))
            found.append("{}={}".format(entry, name))
            if not name.startswith("package"):
                continue
            try:
                wrap = read_int(os.path.join(zone, "max_energy_range_uj"), permission_hint(self.root))
            except MeterError:
                wrap = 0     # still usable; a wrap inside a session would then be reported as an error
            domains.append(RaplDomain(name, os.path.join(zone, "energy_uj"), wrap))
        if not domains:
            raise MeterError("no RAPL package zone under {} (found: {}); allowed zone names start with "
                             "'package'".format(self.root, ", ".join(found) or "no intel-rapl:N entries"))
        return domains

    def describe(self) -> str:
        ds = self.domains()
        return "RAPL {} energy counters ({})".format(
            " + ".join(d.name for d in ds), ", ".join(d.energy_path for d in ds))

    def read(self) -> Tuple[int, ...]:
        """Microjoule counters, one per package domain, in domain order."""
        out = []
        for d in self.domains():
            value = read_int(d.energy_path, permission_hint(self.root))
            if value < 0 or (d.wrap_uj > 0 and value > d.wrap_uj):
                raise MeterError("{} read {}; allowed: 0 to max_energy_range_uj {}".format(
                    d.energy_path, value, d.wrap_uj))
            out.append(value)
        return tuple(out)

    def integrate(self, times: Sequence[float], raw: Sequence[Any]) -> float:
        """Joules: per package, the wrap-aware sum of counter differences (uJ), summed, / 1e6."""
        total_uj = 0
        for i, d in enumerate(self.domains()):
            total_uj += integrate_counter([r[i] for r in raw], d.wrap_uj, d.energy_path)
        return total_uj / 1e6
