"""Talking to the board: the agent (one `python3 -c` per step) and SFTP uploads into hidden staging names.

A new release is uploaded into DIR/releases/.partial-<id>-<random>/ and only the agent, after checking every
sha256 on the board, renames it to DIR/releases/<id>/. Files of a damaged existing release are uploaded
beside their final name and renamed over it. Neither path ever changes DIR/current.
"""
import json
import os
import posixpath
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgekit.deploy.errors import DeployError
from edgekit.deploy.package import Payload, PayloadFile
from edgekit.deploy.ssh import Session, describe

EventHook = Optional[Callable[[str, str], None]]
_AGENT_SOURCE: List[str] = []


def agent_source() -> str:
    """The board-side agent as one `python3 -c` source: agent_device.py, then agent.py."""
    if not _AGENT_SOURCE:
        here = os.path.dirname(os.path.abspath(__file__))
        parts = []
        for name in ("agent_device.py", "agent.py"):
            with open(os.path.join(here, name), "r", encoding="utf-8") as f:
                parts.append(f.read())
        _AGENT_SOURCE.append("\n".join(parts))
    return _AGENT_SOURCE[0]


def call_agent(session: Session, args: Sequence[str], doing: str, stdin: Optional[Dict[str, Any]] = None,
               timeout_s: float = 300.0) -> Dict[str, Any]:
    """Run one agent command with the board's Python; return its JSON answer or raise a DeployError."""
    board = session.board
    data = None if stdin is None else json.dumps(stdin).encode("utf-8")
    res = session.run([board.remote_python, "-c", agent_source()] + list(args), stdin=data, timeout_s=timeout_s,
                      doing=doing)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
        if res.returncode == 127:
            raise DeployError("{}: the board has no {!r} ({}); install Python >= 3.8 there or pass --remote-python "
                              "PATH".format(board.label, board.remote_python, last))
        raise DeployError("{}: {} on the board failed while {} (exit {}): {}; edgekit needs Python >= 3.8 "
                          "there".format(board.label, board.remote_python, doing, res.returncode, last))
    try:
        answer = json.loads(res.stdout)
    except ValueError:
        raise DeployError("{}: unreadable answer from the board while {}: {!r}".format(
            board.label, doing, res.stdout[:200]))
    if not isinstance(answer, dict):
        raise DeployError("{}: unexpected answer from the board while {}: {!r}".format(board.label, doing, answer))
    if "error" in answer:
        raise DeployError("{}: {} failed on the board: {}".format(board.label, doing, answer["error"]))
    return answer


@dataclass(frozen=True)
class UploadStats:
    files: int
    bytes: int
    seconds: float


class Uploader:
    """SFTP uploads for one flash; knows where it wrote so a failure can be cleaned up and explained."""

    def __init__(self, session: Session, remote_dir: str, payload: Payload, current: Optional[str],
                 on_event: EventHook = None) -> None:
        self.session, self.remote_dir, self.payload, self.current = session, remote_dir, payload, current
        self.on_event = on_event or (lambda event, detail: None)
        self.staging: Optional[str] = None
        self._made_dirs: set = set()
        self._files = 0
        self._bytes = 0

    @property
    def release_dir(self) -> str:
        return posixpath.join(self.remote_dir, "releases", self.payload.bundle_id)

    def upload_new(self) -> UploadStats:
        """Everything into a fresh staging dir; returns its name (relative to releases/) in self.staging."""
        self.staging = ".partial-{}-{}".format(self.payload.bundle_id, secrets.token_hex(6))
        base = posixpath.join(self.remote_dir, "releases", self.staging)
        t0 = time.monotonic()
        self._put_all(base, self.payload.files, in_place=False)
        return UploadStats(self._files, self._bytes, time.monotonic() - t0)

    def repair(self, bad: Sequence[str]) -> UploadStats:
        """Re-upload only the listed files of an existing release, each renamed over its final name."""
        wanted = set(bad)
        t0 = time.monotonic()
        self._put_all(self.release_dir, [f for f in self.payload.files if f.rel in wanted], in_place=True)
        return UploadStats(self._files, self._bytes, time.monotonic() - t0)

    def _put_all(self, base: str, files: Sequence[PayloadFile], in_place: bool) -> None:
        sftp = self.session.sftp
        for f in files:
            final = posixpath.join(base, f.rel)
            dest = final + ".partial-" + secrets.token_hex(4) if in_place else final
            try:
                self._mkdirs(posixpath.dirname(final))
                sftp.put(f.local, dest, confirm=True)
                if in_place:
                    sftp.posix_rename(dest, final)
            except DeployError:
                raise
            except Exception as exc:  # noqa: BLE001 - SFTP status errors and dropped links, told apart below
                if in_place and self.session.is_alive():
                    _try(lambda: sftp.remove(dest))         # a half-written file beside a release file
                raise self.failure("uploading " + f.rel, exc)
            self._files += 1
            self._bytes += f.size
            self.on_event("upload", f.rel)
        self.on_event("uploaded", base)

    def _mkdirs(self, path: str) -> None:
        todo = []
        while path not in self._made_dirs and path not in ("/", ""):
            todo.append(path)
            path = posixpath.dirname(path)
        sftp = self.session.sftp
        for d in reversed(todo):
            try:
                sftp.stat(d)
            except FileNotFoundError:
                sftp.mkdir(d, 0o755)
            self._made_dirs.add(d)

    def failure(self, doing: str, exc: BaseException) -> DeployError:
        """A DeployError for a failed upload step, after removing the staging dir when the link still works."""
        label = self.session.board.label
        still = "current still points at {}".format(self.current or "nothing (no release was active)")
        if not self.session.is_alive():
            return DeployError("{}: connection lost while {} ({}); {}; the unfinished upload stays hidden in "
                               "releases/ and is removed by a later flash".format(
                                   label, doing, _text(exc), still))
        facts, cause = "", _text(exc)
        try:
            if self.staging:
                call_agent(self.session, ["discard", self.remote_dir, self.staging], "discarding the upload",
                           timeout_s=60)
            got = call_agent(self.session, ["df", self.remote_dir], "checking free disk", timeout_s=60)
            if got.get("read_only"):
                cause = "the file system holding {} is read-only (SFTP said {!r})".format(got.get("checked"), cause)
            elif not got.get("writable", True):
                cause = "{} is not writable by {} (SFTP said {!r})".format(got.get("checked"),
                                                                         self.session.board.host.user, cause)
            facts = "; {} bytes free in {}".format(got.get("free_bytes"), self.remote_dir)
            if int(got.get("free_bytes", 1 << 30)) < (1 << 20):
                facts += " (the board's disk is full)"
            still = where_current(self.current, got)
        except DeployError:
            pass
        return DeployError("{}: upload failed while {}: {}{}; {}".format(label, doing, cause, facts, still))


def where_current(probed: Optional[str], answer: Dict[str, Any]) -> str:
    """Where current points, by the board's latest answer (another flash may have switched it since the probe)."""
    now = answer.get("current", probed)
    if now == probed:
        return "current still points at {}".format(probed or "nothing (no release was active)")
    return "current now points at {} (another flash switched it from {})".format(now or "nothing", probed or "nothing")


def _try(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - best-effort clean-up
        pass


def _text(exc: BaseException) -> str:
    return describe(exc)
