"""An external USB power meter that prints readings over a serial port (optional).

Runs on the board: stdlib only (os, termios; pyserial is not needed), Python 3.8 syntax.

Line format, one reading per line (ASCII, ending in \\n or \\r\\n):
    <watts>                      e.g. "2.315" or "2.315W"
    <volts><sep><amps>           e.g. "5.08 0.455", "5.08,0.455", "5.08V;0.455A"  (sep: space, comma, semicolon)
Unit suffixes, when present, must be W, V and A in those places. Any other line (a banner, a header,
garbage) is skipped; if no valid line arrives for `stale_s` seconds the meter fails and quotes the last
line it received. When the path is a terminal it is set to raw mode at `baud`, 8N1.
Without a configured device the meter is simply unavailable.
"""
import os
import re
import time
from typing import Optional

from edgekit.bench.meters.base import MeterError, PowerMeter

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_WATTS = re.compile(r"^\s*" + _NUM + r"\s*W?\s*$")
_VOLTS_AMPS = re.compile(r"^\s*" + _NUM + r"\s*V?\s*[,; \t]\s*" + _NUM + r"\s*A?\s*$")
LINE_FORMAT = "'<watts>[W]' or '<volts>[V]<space|,|;><amps>[A]', one reading per line"


def parse_line(line: str) -> Optional[float]:
    """Watts from one line in LINE_FORMAT, or None when the line is not a reading."""
    m = _WATTS.match(line)
    if m:
        return float(m.group(1))
    m = _VOLTS_AMPS.match(line)
    if m:
        return float(m.group(1)) * float(m.group(2))
    return None


def _set_raw(fd: int, baud: int) -> None:
    import termios   # POSIX only; imported here so the module imports anywhere
    speed = getattr(termios, "B{}".format(baud), None)
    if speed is None:
        raise MeterError("serial baud rate {} is not supported; allowed: a standard rate such as 9600, 19200, "
                         "38400, 57600, 115200 or 230400".format(baud))
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0                                                               # iflag: no translation
    attrs[1] = 0                                                               # oflag
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL                    # cflag: 8N1, receiver on
    attrs[3] = 0                                                               # lflag: no echo, not canonical
    attrs[4] = attrs[5] = speed
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class UsbSerialMeter(PowerMeter):
    name = "usb-serial"
    measured = True
    default_interval_s = 0.1

    def __init__(self, device: Optional[str] = None, baud: int = 115200, stale_s: float = 2.0) -> None:
        self.device = device
        self.baud = baud
        self.stale_s = stale_s
        self._fd = None           # type: Optional[int]
        self._buf = b""
        self._last_line = ""
        self._last_watts = None   # type: Optional[float]
        self._last_time = 0.0

    def describe(self) -> str:
        return "external USB meter on {} ({} baud), lines of {}".format(self.device, self.baud, LINE_FORMAT)

    def open(self) -> None:
        if not self.device:
            raise MeterError("no USB meter configured; give its serial device (e.g. /dev/ttyUSB0) to use usb-serial")
        try:
            fd = os.open(self.device, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise MeterError("cannot open USB meter device {}: {}".format(self.device, exc.strerror or exc))
        try:
            if os.isatty(fd):
                _set_raw(fd, self.baud)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._buf, self._last_watts, self._last_line = fd, b"", None, ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read_watts(self) -> float:
        """The newest reading; waits up to stale_s for the first one."""
        if self._fd is None:
            self.open()
        deadline = time.monotonic() + self.stale_s
        while True:
            self._drain()
            now = time.monotonic()
            if self._last_watts is not None and now - self._last_time <= self.stale_s:
                return self._last_watts
            if now >= deadline:
                raise MeterError("USB meter {} gave no reading in {:g} s; last line received: {!r}; expected {}"
                                 .format(self.device, self.stale_s, self._last_line or "(none)", LINE_FORMAT))
            time.sleep(min(0.01, max(0.0, deadline - now)))

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 4096)   # type: ignore[arg-type]
            except BlockingIOError:
                break
            except OSError as exc:
                raise MeterError("USB meter {} stopped answering: {}".format(self.device, exc))
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode("ascii", "replace").strip()
            if not line:
                continue
            self._last_line = line[:80]
            watts = parse_line(line)
            if watts is not None:
                self._last_watts, self._last_time = watts, time.monotonic()
