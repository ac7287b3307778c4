"""`edgekit flash --inventory … --canary N`: the options, their checks and the output of a staged rollout."""
import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import click

from edgekit.cli.output import echo_json, echo_table
from edgekit.deploy.canary import SmokeTest
from edgekit.deploy.errors import DeployError
from edgekit.deploy.hosts import Board
from edgekit.errors import ConfigError


@dataclass(frozen=True)
class CanaryPlan:
    canary: int
    max_fail: float
    smoke: SmokeTest


def canary_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --canary, --max-fail, --smoke-data, --smoke-min-accuracy, --smoke-max-latency-ms."""
    opts = [
        click.option("--canary", type=int, default=None, metavar="N",
                     help="With --inventory: flash the first N boards, smoke-test them on --smoke-data, and only "
                          "then the rest. A failed canary is rolled back to the release it had."),
        click.option("--max-fail", type=float, default=0.0, show_default=True, metavar="PCT",
                     help="With --canary: the percentage of canaries that may fail; above it the rollout stops, "
                          "every canary is rolled back and the other boards are not touched."),
        click.option("--smoke-data", metavar="FILE", default=None,
                     help="With --canary: a small .npz (x, y) run on each canary after it is flashed."),
        click.option("--smoke-min-accuracy", type=float, default=None, metavar="FRACTION",
                     help="With --canary: the least accuracy (0..1) on --smoke-data that passes."),
        click.option("--smoke-max-latency-ms", type=float, default=None, metavar="MS",
                     help="With --canary: the largest median per-call latency on the board that passes."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(opts), fn)


def plan_from_options(action: str, inventory: Optional[str], canary: Optional[int], max_fail: float,
                      smoke_data: Optional[str], smoke_min_accuracy: Optional[float],
                      smoke_max_latency_ms: Optional[float]) -> Optional[CanaryPlan]:
    if canary is None:
        given = [name for name, v in (("--smoke-data", smoke_data), ("--smoke-min-accuracy", smoke_min_accuracy),
                                      ("--smoke-max-latency-ms", smoke_max_latency_ms)) if v is not None]
        if max_fail != 0.0:
            given.append("--max-fail")
        if given:
            raise ConfigError("{} only apply to a staged rollout; add --canary N".format(", ".join(given)))
        return None
    if inventory is None or action != "flash":
        raise ConfigError("--canary flashes part of a fleet first: it needs --inventory and a BUNDLE (not --host, "
                          "--rollback or --list)")
    if smoke_data is None:
        raise ConfigError("--canary needs --smoke-data FILE (a small .npz with x and y run on each canary)")
    if smoke_min_accuracy is None and smoke_max_latency_ms is None:
        raise ConfigError("--canary needs a bound: --smoke-min-accuracy FRACTION and/or --smoke-max-latency-ms MS")
    return CanaryPlan(canary, max_fail, SmokeTest(smoke_data, smoke_min_accuracy, smoke_max_latency_ms).check())


def run_canary(plan: CanaryPlan, bundle: str, boards: Sequence[Board], jobs: int, force: bool, keep: int,
               as_json: bool, policy: Any) -> None:
    from edgekit.deploy import canary, fleet

    report = canary.canary_rollout(bundle, boards, plan.canary, plan.smoke, max_fail=plan.max_fail, jobs=jobs,
                                   force=force, keep=keep, signature=policy)
    if as_json:
        echo_json(report.to_dict())
    else:
        header = ("board", "result", "current", "uploaded", "seconds", "detail")
        click.echo("canaries:")
        echo_table(header, fleet.fleet_rows(report.canaries))
        for s in report.smoke:
            r = s.result or {}
            acc = r.get("accuracy")
            click.echo("  smoke {}: {}  accuracy {}  median {} ms{}".format(
                s.board, "ok" if s.ok else "FAILED", "n/a" if acc is None else "{:.4f}".format(acc),
                "?" if "latency_ms" not in r else "{:.3f}".format(r["latency_ms"]["p50"]),
                "" if s.ok else "  (" + "; ".join(s.problems) + ")"))
        for o in report.rolled_back.outcomes:
            click.echo("  rolled back {}: {}".format(o.board, (o.result or {}).get("current") if o.ok else o.error))
        if report.rest is not None and report.rest.outcomes:
            click.echo("rest:")
            echo_table(header, fleet.fleet_rows(report.rest))
    if not report.ok:
        raise DeployError(canary.failure_message(report, len(boards)))
