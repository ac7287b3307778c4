"""`edgekit optimize MODEL --target T --calib C --eval E (--latency-ms L | --energy-mj J | --size S) -o OUT`:
search exits x pruning x precision x thresholds for the cheapest deployment within an accuracy drop, and write
the Pareto front, its plot, a report and the chosen bundle (edgekit/optimize/)."""
import sys
import time
from typing import Optional, Tuple

import click

from edgekit.cli.app import command
from edgekit.cli.output import echo_json, echo_table
from edgekit.cli.ssh import board_from_options, ssh_options
from edgekit.errors import ConfigError

UNITS = {"latency_ms": "ms", "energy_mj": "mJ", "size_bytes": "B"}


def _budget(latency_ms: Optional[str], energy_mj: Optional[str], size: Optional[str]):
    from edgekit.convert.precision.ladder import parse_size
    from edgekit.optimize import Budget

    given = [(m, v) for m, v in (("latency_ms", latency_ms), ("energy_mj", energy_mj), ("size_bytes", size))
             if v is not None]
    if len(given) != 1:
        raise ConfigError("got {} budgets ({}); allowed exactly one of --latency-ms, --energy-mj, --size".format(
            len(given), ", ".join(m for m, _ in given) or "none"))
    metric, value = given[0]
    text = value.strip()
    if text.endswith("%"):
        return Budget(metric, _number(metric, text[:-1]) / 100.0, relative=True).check()
    return Budget(metric, float(parse_size(text)) if metric == "size_bytes" else _number(metric, text)).check()


def _number(metric: str, text: str) -> float:
    from edgekit.optimize.space import FLAGS

    try:
        return float(text)
    except ValueError:
        raise ConfigError("{} {!r}: allowed a number above 0, or a percentage of uniform int8 at full depth "
                          "(50%)".format(FLAGS[metric], text))


def _numbers(flag: str, text: Optional[str], kind: type) -> Optional[Tuple]:
    if text is None:
        return None
    if text.strip() == "none":
        return ()
    try:
        return tuple(kind(v.strip()) for v in text.split(","))
    except ValueError:
        raise ConfigError("{} {!r}: allowed a comma-separated list of numbers, or none".format(flag, text))


def _space(exit_counts: Optional[str], prune: Optional[str], precisions: Optional[str], combos: Optional[int],
           places: Optional[str] = None):
    from dataclasses import replace

    from edgekit.optimize import SearchSpace

    space = SearchSpace()
    e, p = _numbers("--exit-counts", exit_counts, int), _numbers("--prune-fractions", prune, float)
    space = space if e is None else replace(space, exit_counts=e)
    space = space if p is None else replace(space, prune_fractions=p)
    space = space if places is None else replace(space, exit_places=tuple(s.strip() for s in places.split(",")))
    space = space if precisions is None else replace(space, precisions=tuple(s.strip() for s in precisions.split(",")))
    return (space if combos is None else replace(space, max_combinations=combos)).check()


class _Progress:
    """One line on stderr per step: phase, candidate count, elapsed time."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, phase: str, done: int, total: int, what: str) -> None:
        click.echo("optimize: {:>6.0f} s  {} {}/{}  {}".format(time.monotonic() - self.t0, phase, done, total, what),
                   err=True)


def _show(progress: Optional[bool]) -> bool:
    """Progress lines only where someone watches, so a script that reads stderr sees the one error line."""
    return progress if progress is not None else sys.stderr.isatty()


@command("optimize", "edgekit optimize edgekit/assets/digits_cnn.keras -t host-x86_64 --calib calibration/digits_calib.npz "
                     "--eval calibration/digits_val.npz --latency-ms 50% -o opt")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", required=True, help="Board profile name (see `edgekit targets`).")
@click.option("--calib", required=True, type=click.Path(dir_okay=False),
              help="Labelled calibration data: quantization ranges, head training, thresholds (held-out part).")
@click.option("--eval", "eval_path", required=True, type=click.Path(dir_okay=False),
              help="Labelled data every candidate's accuracy is measured on (never fitted on).")
@click.option("--max-accuracy-drop", "max_drop", type=float, default=0.01, show_default=True,
              help="Accuracy on --eval may be at most this far below the model's own (0.01 = one point).")
@click.option("--latency-ms", default=None, help="Budget: mean latency per inference, batch 1 (ms), or a "
              "percentage of uniform int8 at full depth timed in the same run (50%).")
@click.option("--energy-mj", default=None, help="Budget: energy per inference (mJ; labelled measured or "
                                                "estimated), or a percentage as for --latency-ms.")
@click.option("--size", default=None, help="Budget: bundle size (720000, 800K, 1.5M), or a percentage.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Output directory; must not exist (pareto.csv, pareto.png, report.json, <target>/).")
@click.option("--host", metavar="USER@HOST[:PORT]", default=None,
              help="Measure costs on this board over SSH (candidates are flashed there); default: this machine.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Conversions and measurements kept here for later runs (default: ~/.cache/edgekit/optimize).")
@click.option("--exit-counts", default=None, help="auto:N exit counts tried on a single-output model (1,2,3).")
@click.option("--exit-places", default=None,
              help="Where auto:N puts its cuts: flops, latency (measured prefix latency here), or both "
                   "(flops,latency).")
@click.option("--prune-fractions", default=None, help="FLOPs fractions kept when pruning (0.7,0.5; none: no pruning).")
@click.option("--precisions", default=None, help="Precisions tried (default: the target's uniform rungs).")
@click.option("--max-combinations", type=int, default=None, help="Most combined candidates converted (4).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--progress/--no-progress", default=None,
              help="One line per step on stderr: phase, candidates, elapsed time (default: when stderr is a terminal).")
@ssh_options
def optimize_cmd(model: str, target: str, calib: str, eval_path: str, max_drop: float, latency_ms: Optional[str],
                 energy_mj: Optional[str], size: Optional[str], out: str, host: Optional[str],
                 cache_dir: Optional[str], exit_counts: Optional[str], exit_places: Optional[str],
                 prune_fractions: Optional[str],
                 precisions: Optional[str], max_combinations: Optional[int], as_json: bool,
                 progress: Optional[bool], identity: Optional[str],
                 known_hosts: str, accept_new_host_key: bool, remote_dir: str, remote_python: str,
                 timeout_s: float) -> None:
    """Find the cheapest exits x pruning x precision x thresholds within an accuracy drop that meets a budget."""
    from edgekit.optimize import OptimizeOptions, optimize

    budget = _budget(latency_ms, energy_mj, size)
    space = _space(exit_counts, prune_fractions, precisions, max_combinations, exit_places)
    board = None if host is None else board_from_options(host, identity, known_hosts, accept_new_host_key,
                                                         remote_dir, remote_python, timeout_s)
    result = optimize(OptimizeOptions(model, target, calib, eval_path, out, budget, max_drop, board, cache_dir,
                                      space), progress=_Progress() if _show(progress) else None)
    if as_json:
        echo_json(dict(result.report, bundle_dir=result.bundle_dir))
        return
    metric, unit = budget.metric, UNITS[budget.metric]
    rows = [(p.candidate.key, "full depth" if p.drop_share is None else "{:g} x drop".format(p.drop_share),
             "{:.2%}".format(p.accuracy), "{:.4g} {}".format(p.metric(metric), unit), p.latency_from.split(":")[0],
             "*" if p == result.chosen else "") for p in result.front]
    echo_table(("candidate", "thresholds", "accuracy", metric, "measured as", "chosen"), rows)
    s = result.report["search"]
    click.echo("chosen: {} ({:.4g} {} <= {:.4g}{}, accuracy {:.2%}); bundle {}".format(
        result.chosen.name, result.chosen.metric(metric), unit, result.report["budget"]["resolved"],
        budget.describe(), result.chosen.accuracy, result.bundle_dir))
    click.echo("conversions run: {}, cache hits: {}, {:.0f} s; pareto.csv, pareto.png, report.json in {}".format(
        s["conversions_run"], s["cache_hits"], s["seconds"], out), file=sys.stdout)
