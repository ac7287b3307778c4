"""Staged rollout (`edgekit flash --inventory … --canary N`): flash N boards, smoke-test them, then the rest.

The first N boards of the inventory (after --limit) are the canaries. Each is flashed, then runs the new
release on a small data file (edgekit/runtime/smoke.py on the board); its accuracy and median per-call latency
must be within the rollout's bounds. A canary that fails (flash or smoke test) is rolled back to the release
it had. When more than max_fail_pct percent of the canaries failed, every canary that switched is rolled back
and the other boards are never contacted; otherwise the rest is flashed as `edgekit flash --inventory` does.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgekit.data import FORMATS
from edgekit.deploy.fleet import DEFAULT_JOBS, FleetReport, check_jobs, run_fleet
from edgekit.deploy.hosts import Board
from edgekit.deploy.package import build_payload
from edgekit.deploy.releases import DEFAULT_KEEP, flash, list_releases, rollback
from edgekit.deploy.remote import run_remote
from edgekit.deploy.signature import SignaturePolicy
from edgekit.errors import ConfigError, DataError

SMOKE_MODULE = "edgekit.runtime.smoke"
SMOKE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class SmokeTest:
    data: str                                   # .npz with x and y (y needed for min_accuracy), or .npy
    min_accuracy: Optional[float] = None        # fraction 0..1 of the data's labels predicted right
    max_latency_ms: Optional[float] = None      # median per-call latency on the board, milliseconds
    max_samples: int = 64

    def check(self) -> "SmokeTest":
        import os

        ext = os.path.splitext(self.data)[1].lower()
        if ext not in FORMATS or not os.path.isfile(self.data):
            raise DataError("--smoke-data {}: expected an existing {} file".format(self.data, " or ".join(FORMATS)))
        if self.min_accuracy is not None and not (isinstance(self.min_accuracy, (int, float)) and
                                                  0.0 <= self.min_accuracy <= 1.0):
            raise ConfigError("--smoke-min-accuracy: expected a fraction from 0 to 1, got {!r}".format(
                self.min_accuracy))
        if self.max_latency_ms is not None and not (isinstance(self.max_latency_ms, (int, float)) and
                                                    0.0 < self.max_latency_ms < math.inf):
            raise ConfigError("--smoke-max-latency-ms: expected milliseconds above 0, got {!r}".format(
                self.max_latency_ms))
        if self.min_accuracy is not None and ext == ".npy":
            raise ConfigError("--smoke-min-accuracy needs labels: give an .npz with x and y as --smoke-data, "
                              "got {}".format(self.data))
        if isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ConfigError("smoke test: max_samples must be at least 1, got {!r}".format(self.max_samples))
        return self

    def judge(self, result: Dict[str, Any]) -> List[str]:
        """What is out of bounds in the board's smoke result (empty: passed)."""
        problems = []
        acc = result.get("accuracy")
        if self.min_accuracy is not None:
            if acc is None:
                problems.append("no accuracy (the data has no labels)")
            elif acc < self.min_accuracy:
                problems.append("accuracy {:.4f} < {:.4f}".format(acc, self.min_accuracy))
        p50 = (result.get("latency_ms") or {}).get("p50")
        if self.max_latency_ms is not None and (p50 is None or p50 > self.max_latency_ms):
            problems.append("median latency {} ms > {:g} ms".format(
                "?" if p50 is None else "{:.3f}".format(p50), self.max_latency_ms))
        return problems


@dataclass(frozen=True)
class SmokeOutcome:
    board: str
    ok: bool
    result: Optional[Dict[str, Any]]
    problems: Tuple[str, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"board": self.board, "ok": self.ok, "result": self.result, "problems": list(self.problems)}


@dataclass(frozen=True)
class CanaryReport:
    canaries: FleetReport                 # flashing the canaries
    smoke: Tuple[SmokeOutcome, ...]       # one per canary that flashed
    rolled_back: FleetReport              # canaries switched back (empty when none needed it)
    rest: Optional[FleetReport]           # None: the canaries stopped the rollout

    @property
    def ok(self) -> bool:
        return self.rest is not None and self.canaries.ok and all(s.ok for s in self.smoke) and self.rest.ok

    def to_dict(self) -> Dict[str, Any]:
        return {"action": "canary-flash", "ok": self.ok, "stopped": self.rest is None,
                "canaries": self.canaries.to_dict(), "smoke": [s.to_dict() for s in self.smoke],
                "rolled_back": self.rolled_back.to_dict(), "rest": None if self.rest is None else self.rest.to_dict()}


def check_plan(canary: Any, max_fail: Any, boards: Sequence[Board]) -> None:
    if isinstance(canary, bool) or not isinstance(canary, int) or not 1 <= canary <= len(boards):
        raise ConfigError("--canary: expected 1 to {} (the boards selected), got {!r}".format(len(boards), canary))
    if isinstance(max_fail, bool) or not isinstance(max_fail, (int, float)) or not 0 <= max_fail <= 100:
        raise ConfigError("--max-fail: expected a percentage from 0 to 100, got {!r}".format(max_fail))


def canary_rollout(bundle_dir: str, boards: Sequence[Board], canary: int, smoke: SmokeTest, max_fail: float = 0.0,
                   jobs: int = DEFAULT_JOBS, force: bool = False, keep: int = DEFAULT_KEEP,
                   signature: Optional[SignaturePolicy] = None) -> CanaryReport:
    check_plan(canary, max_fail, boards)
    check_jobs(jobs)
    smoke.check()
    payload = build_payload(bundle_dir)          # bundle errors stop everything before any board is touched
    if signature is not None:
        signature.check_local(bundle_dir)
    first, rest = list(boards[:canary]), list(boards[canary:])
    before = {o.board: (o.result or {}).get("current") for o in run_fleet("list", first, list_releases, jobs).outcomes}
    flashed = run_fleet("flash", first, lambda b: flash(bundle_dir, b, force=force, keep=keep, payload=payload,
                                                        signature=signature), jobs)
    by_label = {b.label: b for b in first}
    smoked = tuple(_smoke(by_label[o.board], smoke) for o in flashed.outcomes if o.ok)
    failed = {o.board for o in flashed.failed} | {s.board for s in smoked if not s.ok}
    stop = 100.0 * len(failed) / len(first) > max_fail
    # A canary that switched to the bundle goes back when it failed, or when the rollout stops.
    back = [by_label[o.board] for o in flashed.outcomes
            if o.ok and before.get(o.board) != payload.bundle_id and (stop or o.board in failed)]
    undone = run_fleet("rollback", back, lambda b: rollback(b, signature=signature), jobs) if back \
        else FleetReport("rollback", ())
    if stop or not rest:
        return CanaryReport(flashed, smoked, undone, None if stop else FleetReport("flash", ()))
    later = run_fleet("flash", rest, lambda b: flash(bundle_dir, b, force=force, keep=keep, payload=payload,
                                                     signature=signature), jobs)
    return CanaryReport(flashed, smoked, undone, later)


def _smoke(board: Board, smoke: SmokeTest) -> SmokeOutcome:
    from edgekit.errors import EdgekitError

    try:
        result = run_remote(board, "current", smoke.data, extra_args=["--max-samples", str(smoke.max_samples)],
                            timeout_s=SMOKE_TIMEOUT_S, module=SMOKE_MODULE)
    except EdgekitError as exc:
        return SmokeOutcome(board.label, False, None, ("smoke test did not run: {}".format(exc),))
    problems = tuple(smoke.judge(result))
    return SmokeOutcome(board.label, not problems, result, problems)


def failure_message(report: CanaryReport, total: int) -> str:
    """One line for the CLI when the rollout stopped or a board failed."""
    parts = ["{} flash: {}".format(o.board, o.error) for o in report.canaries.failed]
    parts += ["{} smoke test: {}".format(s.board, "; ".join(s.problems)) for s in report.smoke if not s.ok]
    if report.rolled_back.outcomes:
        parts.append("rolled back {}".format(", ".join(o.board for o in report.rolled_back.outcomes if o.ok) or
                                             "no board"))
    if report.rolled_back.failed:
        parts.append("rollback FAILED on {}".format(", ".join(o.board for o in report.rolled_back.failed)))
    if report.rest is None:
        parts.append("{} other board(s) not touched".format(total - len(report.canaries.outcomes)))
        return "canary rollout stopped: " + "; ".join(parts)
    if report.rest.failed:
        parts.append("{} of {} remaining boards failed: {}".format(
            len(report.rest.failed), len(report.rest.outcomes), ", ".join(o.board for o in report.rest.failed)))
    return "canary rollout finished with failures: " + "; ".join(parts)
