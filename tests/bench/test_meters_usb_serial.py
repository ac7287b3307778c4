"""External USB meter over a serial line, driven through a pseudo-terminal: the meter opens the pty's
device path, sets it raw with termios and reads lines, exactly as it would /dev/ttyUSB0."""
import os
import time
import tty

import pytest

from edgekit.bench.meters import MeterError, UsbSerialMeter
from edgekit.bench.meters.usb_serial import parse_line
from tests.simulated import wait_for_samples

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_line_format_by_hand():
    assert parse_line("2.315W") == pytest.approx(2.315)
    assert parse_line("2.315") == pytest.approx(2.315)
    assert parse_line("5.08V,0.455A") == pytest.approx(5.08 * 0.455)      # 2.3114 W
    assert parse_line("5.07 0.462") == pytest.approx(5.07 * 0.462)        # 2.34234 W
    assert parse_line("5.09;0.448") == pytest.approx(5.09 * 0.448)        # 2.28032 W
    for not_a_reading in ("", "V,A", "USB power meter v1.2 ready", "5.08A,0.455V", "ERR overload"):
        assert parse_line(not_a_reading) is None


def test_recorded_stream_gives_the_newest_reading(pty_pair):
    master, path = pty_pair
    with open(os.path.join(FIXTURES, "usb-serial", "stream.txt"), "rb") as f:
        os.write(master, f.read())
    m = UsbSerialMeter(path, baud=9600, stale_s=1.0)
    m.open()
    try:
        # banner and header skipped; the last line of the recording is 5.09;0.448 -> 2.28032 W
        assert m.read() == pytest.approx(5.09 * 0.448)
    finally:
        m.close()


def test_session_integrates_what_the_meter_sends(pty_pair):
    master, path = pty_pair
    m = UsbSerialMeter(path, baud=115200, stale_s=60.0)   # a reading stays valid all through the test
    os.write(master, b"5.00V,0.400A\r\n")                  # the meter reports 2.0 W ...
    with m.session(0.02) as s:
        wait_for_samples(s, 3)
        os.write(master, b"3.0W\r\n")                      # ... then 3.0 W
        wait_for_samples(s, len(s.samples) + 2)
    r = s.result()
    watts = [w for _, w in s.samples]
    assert watts[:3] == [pytest.approx(5.00 * 0.400)] * 3 and watts[-1] == pytest.approx(3.0)
    assert 2.0 < r.mean_watts < 3.0 and r.measured and r.meter == "usb-serial"


def test_unconfigured_missing_silent_and_garbage_devices(pty_pair, tmp_path):
    ok, why = UsbSerialMeter().available()
    assert not ok and why.startswith("no USB meter configured")
    ok, why = UsbSerialMeter(str(tmp_path / "ttyUSB9")).available()
    assert not ok and "cannot open USB meter device" in why and "ttyUSB9" in why
    master, path = pty_pair
    ok, why = UsbSerialMeter(path, stale_s=0.2).available()
    assert not ok and "gave no reading in 0.2 s; last line received: '(none)'" in why
    os.write(master, b"ERR overload\r\n")
    ok, why = UsbSerialMeter(path, stale_s=0.2).available()
    assert not ok and "last line received: 'ERR overload'" in why and "<watts>[W]" in why
    os.write(master, b"-3.5W\n")
    ok, why = UsbSerialMeter(path, stale_s=0.2).available()
    assert not ok and "a plausible reading is a number from 0 to 10000 W" in why
    ok, why = UsbSerialMeter(path, baud=12345).available()
    assert not ok and "baud rate 12345 is not supported" in why


def test_meter_unplugged_mid_run(pty_pair):
    master, path = pty_pair
    os.write(master, b"2.0W\n")
    m = UsbSerialMeter(path, stale_s=0.3)
    s = m.session(0.02).start()   # the start sample read 2.0 W
    os.close(master)              # the cable is pulled: reads now fail (EIO) or go stale
    time.sleep(0.5)               # at least 0.5 s, so the last reading is stale (a busy machine only makes it older)
    with pytest.raises(MeterError, match=r"meter usb-serial failed during the session"):
        s.stop()
