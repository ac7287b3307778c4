"""Raspberry Pi 5 PMIC rails through `vcgencmd pmic_read_adc`: the sum of current x voltage over rails.

Runs on the board: stdlib only, Python 3.8 syntax. The command runs as an argv list, never a shell.

Output lines look like
    VDD_CORE_A current(7)=1.08053000A
    VDD_CORE_V volt(15)=0.72178200V
Current and voltage of a rail are paired by the rail name (VDD_CORE); the ADC channel numbers in
parentheses differ between the two and are never used for pairing. Lines without a partner (EXT5V_V,
BATT_V) are not rails with power. The PMIC rails cover the SoC, DRAM and on-board I/O supplies, not the
5 V that USB peripherals draw nor the PMIC's own conversion losses: less than wall power.
"""
import re
import shutil
import subprocess
from typing import Dict, List, Sequence, Tuple

from edgekit.bench.meters.base import MeterError, PowerMeter
from edgekit.errors import first_line

DEFAULT_COMMAND = ("vcgencmd", "pmic_read_adc")
_LINE = re.compile(r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>\S+?)(?P<unit>[AV])\s*$")


def parse_pmic(text: str) -> Dict[str, Tuple[float, float]]:
    """{rail: (amps, volts)} for every rail with both a current and a voltage line."""
    amps, volts = {}, {}   # type: Dict[str, float], Dict[str, float]
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        if m.group("kind") != m.group("unit"):
            raise MeterError("vcgencmd line {!r}: a {} reading must end in {}".format(
                line.strip(), m.group("rail") + "_" + m.group("kind"), m.group("kind")))
        try:
            value = float(m.group("value"))
        except ValueError:
            raise MeterError("vcgencmd line {!r}: {!r} is not a number".format(line.strip(), m.group("value")))
        (amps if m.group("kind") == "A" else volts)[m.group("rail")] = value
    return dict((rail, (amps[rail], volts[rail])) for rail in sorted(amps) if rail in volts)


def rail_watts(rails: Dict[str, Tuple[float, float]]) -> Dict[str, float]:
    return dict((rail, a * v) for rail, (a, v) in rails.items())


class RaspberryPi5PmicMeter(PowerMeter):
    name = "rpi5-pmic"
    measured = True
    default_interval_s = 0.25      # each sample is a subprocess (a few ms of CPU)

    def __init__(self, command: Sequence[str] = DEFAULT_COMMAND, timeout_s: float = 5.0) -> None:
        self.command = tuple(command)
        self.timeout_s = timeout_s
        self._rails = []   # type: List[str]

    def run(self) -> str:
        """The command's stdout; MeterError naming the command and what it said when it fails."""
        argv = list(self.command)
        if shutil.which(argv[0]) is None:
            raise MeterError("{} not found on PATH (it ships with Raspberry Pi OS in /usr/bin; this is not a "
                             "Raspberry Pi, or the tool is not installed)".format(argv[0]))
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=self.timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            raise MeterError("running {} failed: {}".format(" ".join(argv), exc))
        if proc.returncode != 0:
            said = first_line(proc.stderr.strip() or proc.stdout, default="no output")
            raise MeterError("{} exited with code {}: {} (pmic_read_adc exists on the Raspberry Pi 5 only; "
                             "/dev/vcio needs the video group)".format(" ".join(argv), proc.returncode, said))
        return proc.stdout

    def read_watts(self) -> float:
        text = self.run()
        rails = parse_pmic(text)
        if not rails:
            first = first_line(text, default="no output")
            raise MeterError("{} printed no rail with both a current (_A) and a voltage (_V) line; first line: "
                             "{!r} (pmic_read_adc exists on the Raspberry Pi 5 only)".format(
                                 " ".join(self.command), first))
        self._rails = sorted(rails)
        return sum(rail_watts(rails).values())

    def describe(self) -> str:
        rails = ", ".join(self._rails) if self._rails else "not read yet"
        return "sum of Raspberry Pi 5 PMIC rail powers (A x V paired by rail name) from `{}`; rails: {}; " \
               "excludes USB peripherals and PMIC losses".format(" ".join(self.command), rails)
