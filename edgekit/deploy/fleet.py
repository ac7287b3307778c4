"""Many boards at once: bounded parallelism, one failing board never stops the others."""
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgekit.deploy.errors import DeployError
from edgekit.deploy.releases import DEFAULT_KEEP, flash, list_releases, rollback
from edgekit.deploy.hosts import Board
from edgekit.deploy.package import build_payload
from edgekit.deploy.signature import SignaturePolicy
from edgekit.errors import EdgekitError

DEFAULT_JOBS = 4
MAX_JOBS = 64


@dataclass(frozen=True)
class BoardOutcome:
    board: str
    ok: bool
    seconds: float
    result: Optional[Dict[str, Any]]      # the action's to_dict() when ok
    error: str                           # one line when not ok

    def to_dict(self) -> Dict[str, Any]:
        return {"board": self.board, "ok": self.ok, "seconds": round(self.seconds, 3), "result": self.result,
                "error": self.error}


@dataclass(frozen=True)
class FleetReport:
    action: str
    outcomes: Tuple[BoardOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> Tuple[BoardOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    def to_dict(self) -> Dict[str, Any]:
        return {"action": self.action, "ok": self.ok, "succeeded": len(self.outcomes) - len(self.failed),
                "failed": len(self.failed), "boards": [o.to_dict() for o in self.outcomes]}


def check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise DeployError("--jobs: expected an integer from 1 to {}, got {!r}".format(MAX_JOBS, jobs))
    return jobs


def _run_one(board: Board, action: Callable[[Board], Any]) -> BoardOutcome:
    t0 = time.monotonic()
    try:
        result = action(board)
        return BoardOutcome(board.label, True, time.monotonic() - t0, result.to_dict(), "")
    except EdgekitError as exc:
        return BoardOutcome(board.label, False, time.monotonic() - t0, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug on one board must not hide the others' results
        return BoardOutcome(board.label, False, time.monotonic() - t0, None,
                            "{}: internal error {}: {}".format(board.label, type(exc).__name__, exc))


def run_fleet(action_name: str, boards: Sequence[Board], action: Callable[[Board], Any],
              jobs: int = DEFAULT_JOBS) -> FleetReport:
    """Apply action to every board, at most `jobs` at a time; outcomes in inventory order."""
    if not boards:
        raise DeployError("the inventory lists no boards")
    check_jobs(jobs)
    with ThreadPoolExecutor(max_workers=min(jobs, len(boards)), thread_name_prefix="edgekit-flash") as pool:
        futures = [pool.submit(_run_one, b, action) for b in boards]
        outcomes = tuple(f.result() for f in futures)
    return FleetReport(action=action_name, outcomes=outcomes)


def flash_fleet(bundle_dir: str, boards: Sequence[Board], jobs: int = DEFAULT_JOBS, force: bool = False,
                keep: int = DEFAULT_KEEP, signature: Optional[SignaturePolicy] = None) -> FleetReport:
    payload = build_payload(bundle_dir)          # bundle errors stop everything before any board is touched
    if signature is not None:
        signature.check_local(bundle_dir)        # so does a signature that --trusted-key does not accept
    return run_fleet("flash", boards, lambda b: flash(bundle_dir, b, force=force, keep=keep, payload=payload,
                                                      signature=signature), jobs)


def rollback_fleet(boards: Sequence[Board], jobs: int = DEFAULT_JOBS,
                   signature: Optional[SignaturePolicy] = None) -> FleetReport:
    return run_fleet("rollback", boards, lambda b: rollback(b, signature=signature), jobs)


def list_fleet(boards: Sequence[Board], jobs: int = DEFAULT_JOBS) -> FleetReport:
    return run_fleet("list", boards, list_releases, jobs)


def fleet_rows(report: FleetReport) -> List[Tuple[str, ...]]:
    """One row per board for the CLI table: board, result, current release, uploaded, seconds, detail."""
    rows = []
    for o in report.outcomes:
        r = o.result or {}
        uploaded = "{} files, {} B".format(r["uploaded_files"], r["uploaded_bytes"]) if "uploaded_files" in r else "-"
        detail = o.error if not o.ok else "; ".join(r.get("warnings", ())) or ""
        if detail.startswith(o.board + ": "):
            detail = detail[len(o.board) + 2:]
        rows.append((o.board, "ok" if o.ok else "FAILED", str(r.get("current") or "-"), uploaded,
                     "{:.2f}".format(o.seconds), detail))
    return rows
