"""Progress of a long command on stderr, and the library chatter captured while it runs.

Only a process's own stderr gets progress: under a test runner's CliRunner (stderr a buffer) it stays silent,
so that an error stays the one line on stderr.

The library reports through one callback, `progress(done, total, what)` (convert, prune, demo take it). `what`
is "phase: detail" or just "phase"; done/total count the work of that phase (total 0: not countable, unless the
detail ends in a count such as "probe 3/12"). A new phase name starts a new phase.

On a terminal (stdout and stderr both) one line is redrawn in place: the phase, a bar and ETA when the work is
countable, the elapsed time. Otherwise (piped, CI, `| tee`) one timestamped line per phase, with the elapsed
time. TensorFlow's and LiteRT's C++ logs and Python warnings are captured while the work runs and shown with
-v (or when the work fails unexpectedly).
"""
import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, Iterator, Optional, TextIO, Tuple

from edgekit.errors import EdgekitError

Clock = Callable[[], float]
_COUNT = re.compile(r"(\d+)/(\d+)\b(?!.*\d+/\d+)")
BAR = 20


def is_terminal() -> bool:
    return all(_isatty(s) for s in (sys.stdout, sys.stderr))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def own_streams() -> bool:
    """Whether stdout and stderr are this process's file descriptors 1 and 2 (not a test runner's buffers)."""
    try:
        return sys.stderr.fileno() == 2 and sys.stdout.fileno() == 1
    except (AttributeError, ValueError, OSError):
        return False


def _counts(done: int, total: int, detail: str) -> Tuple[int, int]:
    if total > 0:
        return done, total
    m = _COUNT.search(detail)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return "{}:{:02d}".format(s // 60, s % 60) if s >= 60 else "{:.1f}s".format(seconds)


class Progress:
    """The `progress(done, total, what)` callback, drawing on `stream`."""

    def __init__(self, label: str, stream: Optional[TextIO] = None, live: Optional[bool] = None,
                 clock: Clock = time.monotonic, wall: Clock = time.time, quiet: bool = False) -> None:
        self.label, self.stream, self.quiet = label, stream or sys.stderr, quiet
        self.live = is_terminal() if live is None else live
        self.clock, self.wall = clock, wall
        self.start = clock()
        self.phase: Optional[str] = None
        self.count_start = self.last = self.start
        self.done, self.total, self.detail = 0, 0, ""
        self.phases = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.quiet:
            return
        phase, _, detail = str(what).partition(": ")
        with self._lock:
            now = self.clock()
            done, total = _counts(done, total, detail)
            if phase != self.phase or total != self.total or done < self.done:
                self.count_start = self.last    # a new count (the next stage's probes) began at the last report
            if phase != self.phase:
                self.phase, self.phases = phase, self.phases + 1
                if not self.live:
                    self._line(now, "{}{}".format(phase, ": " + detail if detail else ""))
            self.done, self.total, self.detail, self.last = done, total, detail, now
            if self.live:
                self._draw(now)
                self._tick()

    def eta(self, now: float) -> Optional[float]:
        """Seconds left in this phase, from its rate so far (None when not countable or not started)."""
        if self.total <= 0 or self.done <= 0 or self.done >= self.total:
            return None
        at_last = (self.last - self.count_start) * (self.total - self.done) / self.done
        return max(0.0, at_last - (now - self.last))     # counting down between reports

    def _line(self, now: float, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.wall()))
        self.stream.write("{} +{} {}: {}\n".format(stamp, _clock_text(now - self.start), self.label, text))
        self.stream.flush()

    def _draw(self, now: float) -> None:
        parts = [self.label, self.phase or ""]
        if self.total > 0:
            filled = int(BAR * min(self.done, self.total) / self.total)
            parts.append("[{}{}] {}/{}".format("#" * filled, "-" * (BAR - filled), self.done, self.total))
        if self.detail:
            parts.append(self.detail)
        parts.append(_clock_text(now - self.start))
        eta = self.eta(now)
        if eta is not None:
            parts.append("ETA " + _clock_text(eta))
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + "  ".join(p for p in parts if p)[:width])
        self.stream.flush()

    def _tick(self) -> None:
        """On a terminal, the elapsed time keeps moving between reports."""
        if self._ticker is not None:
            return

        def run() -> None:
            while not self._stop.wait(1.0):
                with self._lock:
                    self._draw(self.clock())

        self._ticker = threading.Thread(target=run, name="edgekit-progress", daemon=True)
        self._ticker.start()

    def close(self, ok: bool = True) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            now = self.clock()
            if self.live and self.phases:
                self.stream.write("\r\x1b[K")
            if ok and self.phases:
                self._line(now, "done")
            self.stream.flush()


@contextlib.contextmanager
def _captured(verbose: bool) -> Iterator[Tuple[TextIO, Callable[[], str]]]:
    """Route file descriptors 1 and 2 to a temporary file while the work runs (what TensorFlow's and LiteRT's
    C++ code prints goes there); yield the stream progress draws on and a reader of what was captured."""
    if verbose or not own_streams():
        yield sys.stderr, lambda: ""
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log = tempfile.TemporaryFile()
    stream = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def read() -> str:
        log.seek(0)
        return log.read().decode("utf-8", "replace")

    try:
        yield stream, read
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        stream.close()
        log.close()


@contextlib.contextmanager
def running(label: str, verbose: bool = False, live: Optional[bool] = None) -> Iterator[Progress]:
    """Progress for a command's long work, with the chatter captured: shown with `verbose`, or replayed on
    stderr when the work fails with something other than an EdgekitError (whose one line says it all)."""
    live = is_terminal() if live is None else live       # asked before fds 1 and 2 are redirected
    quiet = not own_streams()
    with _captured(verbose) as (stream, read), warnings.catch_warnings(record=not verbose) as caught:
        bar = Progress(label, stream, live, quiet=quiet)
        try:
            yield bar
        except EdgekitError:
            bar.close(ok=False)
            raise
        except BaseException:
            bar.close(ok=False)
            stream.write(read())
            for w in caught or ():
                stream.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
            raise
        bar.close()
