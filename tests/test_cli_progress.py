"""Progress a user can read: named phases with elapsed time (and ETA when the work is countable), one timestamped
line per phase when piped, the library's chatter captured. Clocks are injected; nothing here is timed."""
import io
import os
import re
import subprocess
import sys

import numpy as np

from edgekit.cli.progress import Progress
from tests.conftest import CALIB, ROOT

CNN = os.path.join(ROOT, "edgekit", "assets", "digits_cnn.keras")
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")
LINE = re.compile(r"^\d\d:\d\d:\d\d \+(\d+\.\ds|\d+:\d\d) (\w+): ([^:]+)(: .*)?$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_piped_progress_prints_one_timestamped_line_per_phase():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("convert", out, live=False, clock=clock, wall=lambda: 0.0)
    bar(0, 0, "load: TensorFlow")
    clock.now += 12.5
    for e in range(1, 41):
        bar(e, 40, "exit heads: exit0 epoch {}/40".format(e))
    clock.now += 61.0
    bar(1, 3, "quantize: stage 0 -> int8")
    bar(2, 3, "quantize: stage 1 -> int8")
    bar.close()
    lines = out.getvalue().splitlines()
    assert [LINE.match(ln).group(3) for ln in lines] == ["load", "exit heads", "quantize", "done"]
    assert [LINE.match(ln).group(1) for ln in lines] == ["0.0s", "12.5s", "1:14", "1:14"]
    assert lines[1].endswith("exit heads: exit0 epoch 1/40")


def test_eta_from_the_rate_of_the_current_count():
    clock = FakeClock()
    bar = Progress("convert", io.StringIO(), live=False, clock=clock)
    bar(0, 0, "load")
    clock.now += 5.0
    bar(1, 10, "exit heads: epoch 1/10")
    assert bar.eta(clock.now) == 45.0            # 5 s for the first of 10
    clock.now += 5.0
    bar(2, 10, "exit heads: epoch 2/10")
    assert bar.eta(clock.now) == 40.0
    bar(0, 0, "precision: stage 0: sensitivity of conv1 1/4")     # counted from the detail
    clock.now += 2.0
    bar(0, 0, "precision: stage 0: sensitivity of conv2 2/4")
    assert (bar.done, bar.total) == (2, 4) and bar.eta(clock.now) == 2.0
    clock.now += 3.0
    bar(0, 0, "precision: stage 1: sensitivity of conv3 1/4")     # the next stage's count starts afresh
    assert bar.eta(clock.now) == 9.0
    clock.now += 1.0
    assert bar.eta(clock.now) == 8.0                               # counting down between reports
    bar(0, 0, "measure: stage costs")
    assert bar.eta(clock.now) is None                              # not countable: no ETA


def test_a_terminal_gets_one_line_redrawn_with_bar_elapsed_and_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("prune", out, live=True, clock=clock)
    bar(0, 0, "load")
    clock.now += 4.0
    bar(5, 20, "prune: recovery epoch 5/20")
    frames = out.getvalue().split("\r\x1b[K")
    assert "\n" not in out.getvalue()
    assert frames[-1].startswith("prune  prune  [#####---------------] 5/20  recovery epoch 5/20  4.0s  ETA 12.0s")
    bar.close()
    assert out.getvalue().endswith("\n") and "prune: done" in out.getvalue().splitlines()[-1]


def test_failed_work_prints_no_done_line():
    out = io.StringIO()
    bar = Progress("convert", out, live=False, clock=FakeClock())
    bar(0, 0, "load")
    bar.close(ok=False)
    assert len(out.getvalue().splitlines()) == 1


def test_convert_with_exits_piped_reports_every_phase_with_elapsed_time(tmp_path):
    from edgekit.data import load_data

    calib = load_data(CALIB)
    part = str(tmp_path / "calib300.npz")
    np.savez(part, x=calib.x[:300], y=calib.y[:300])
    got = subprocess.run([EDGEKIT, "convert", CNN, "-t", "host-x86_64", "--calib", part, "-o", str(tmp_path / "out"),
                          "--precision", "float32", "--exits", "auto:3", "--head-epochs", "2",
                          "--max-accuracy-drop", "0.05"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900, cwd=ROOT)
    assert got.returncode == 0, got.stderr
    lines = [ln for ln in got.stderr.splitlines() if ln.strip() and not ln.startswith("edgekit: warning: ")]
    matched = [LINE.match(ln) for ln in lines]
    assert all(matched), lines          # the rest of stderr is phase lines: TensorFlow's and Keras' output captured
    phases = [m.group(3) for m in matched]
    assert phases == ["load", "exit heads", "split", "quantize", "measure", "thresholds", "write", "done"], phases
    assert all(m.group(2) == "convert" for m in matched)
    assert "bundle {}".format(tmp_path / "out" / "host-x86_64") in got.stdout
