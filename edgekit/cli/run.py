"""`edgekit run` and `edgekit bench`: a bundle on data, here or on a board over SSH (--host)."""
from typing import Any, Dict, Optional

import click

from edgekit.cli.app import command, option
from edgekit.cli.checks import range_warning
from edgekit.cli.options import Choice, data_option, meters, one_data, runtime_options, verbose_option
from edgekit.cli.output import echo_json
from edgekit.cli.progress import running
from edgekit.cli.ssh import board_from_options, ssh_options
from edgekit.cli.text import budget_note
from edgekit.errors import ConfigError

_HOST_HELP = ("Run on this board over SSH (USER@HOST[:PORT]); BUNDLE is then 'current', 'previous', a bundle id "
              "or a flashed local bundle directory.")
_DATA_HELP = "Inputs (and labels): .npz with x (and y) or .npy; also accepted as the DATA argument."


def _warn(message: Optional[str]) -> None:
    if message:
        click.echo("edgekit: warning: {}".format(message), err=True)


@command("run", "edgekit run out/raspberry-pi-5 --data calibration/digits_test.npz\n"
                "edgekit run out/raspberry-pi-5 --data calibration/digits_test.npz --budget-ms 0.5 --anytime")
@click.argument("bundle", type=click.Path())
@click.argument("data_arg", metavar="[DATA]", required=False, type=click.Path(exists=True, dir_okay=False))
@data_option(_DATA_HELP)
@option("--full-depth", is_flag=True, help="Run every stage for every sample.")
@option("--budget-ms", type=float, default=None,
        help="Per-sample latency budget: run a stage only if it is predicted to fit.")
@option("--anytime", is_flag=True, help="With --budget-ms: return the best answer so far at the deadline.")
@option("--target-ms", type=float, default=None, help="Hold this mean latency per sample: a load controller moves "
                                                      "the exit thresholds while the samples run.")
@runtime_options()
@option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@option("--host", metavar="USER@HOST[:PORT]", default=None, help=_HOST_HELP)
@ssh_options
@verbose_option
def run_cmd(bundle: str, data_arg: Optional[str], data: Optional[str], full_depth: bool, budget_ms: Optional[float],
            anytime: bool, target_ms: Optional[float], threads: Optional[int], interpreter: Optional[str],
            max_batch: Optional[int], as_json: bool, host: Optional[str], identity: Optional[str], known_hosts: str, accept_new_host_key: bool,
            remote_dir: str, remote_python: str, timeout_s: float, verbose: bool) -> None:
    """Run a bundle on DATA with early exit: predictions, exits, accuracy (when labelled)."""
    data = one_data(data_arg, data)
    if anytime and budget_ms is None:
        raise ConfigError("--anytime returns the best answer at the deadline: it needs --budget-ms MS")
    _warn(range_warning(bundle, data))
    if host is not None:
        from edgekit.deploy.board_runs import board_run

        if budget_ms is not None or anytime:
            raise ConfigError("--budget-ms/--anytime run locally only for now: the board's python -m edgekit.runtime "
                              "does not take them; got --host {} with them".format(host))
        board = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                                   timeout_s)
        result = board_run(board, bundle, data, full_depth, threads, target_ms, interpreter, max_batch)
        delegates = result.get("delegates", [])
    else:
        with running("run", verbose):
            result, delegates = _run_here(bundle, data, full_depth, budget_ms, anytime, target_ms, threads,
                                          interpreter, max_batch)
    if as_json:
        echo_json(result)
        return
    acc = "n/a (no labels)" if result["accuracy"] is None else "{:.2%}".format(result["accuracy"])
    click.echo("{}{} samples  accuracy {}  exit histogram {}  ({}){}".format(
        "{}: ".format(result["host"]) if "host" in result else "", len(result["exits"]), acc,
        result["exit_histogram"], "; ".join(delegates), budget_note(result, budget_ms)))
    if "controller" in result:
        from edgekit.runtime.controller import controller_line

        click.echo(controller_line(result["controller"]))


def _run_here(bundle: str, data: str, full_depth: bool, budget_ms: Optional[float], anytime: bool,
              target_ms: Optional[float], threads: Optional[int], interpreter: Optional[str],
              max_batch: Optional[int]) -> Any:
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate

    runner = EarlyExitRunner(bundle, backend=interpreter, num_threads=threads, max_batch=max_batch)
    ds = load_data(data, max_batch=runner.max_batch)
    result = evaluate(runner, ds.x, ds.y, full_depth=full_depth, budget_ms=budget_ms, anytime=anytime,
                      target_ms=target_ms)
    return result, runner.delegate_status


def _energy_options(fn: Any) -> Any:
    for opt in reversed([
        option("--meter", type=Choice(meters(), "energy meter"), default="auto", show_default=True,
               help="Energy meter (auto: the board's own sensor, else the power model)."),
        option("--usb-meter", "usb_meter", metavar="DEVICE", default=None, help="Serial device of a USB power meter."),
        option("--blocks", default=3, show_default=True, type=int, help="Energy blocks per mode (alternating)."),
        option("--block-seconds", default=1.0, show_default=True, type=float,
               help="Seconds per energy block (>= 1)."),
        option("--idle-seconds", default=2.0, show_default=True, type=float, help="Idle baseline seconds, same run."),
    ]):
        fn = opt(fn)
    return fn


@command("bench", "edgekit bench out/raspberry-pi-5 --data calibration/digits_test.npz --report bench-report\n"
                  "edgekit bench current --data calibration/digits_test.npz --host pi@raspberrypi.local")
@click.argument("bundle", type=click.Path())
@click.argument("data_arg", metavar="[DATA]", required=False, type=click.Path(exists=True, dir_okay=False))
@data_option(_DATA_HELP)
@option("--runs", default=200, show_default=True, type=int, help="Steady-state calls per mode.")
@option("--warmup", default=20, show_default=True, type=int, help="Discarded calls per mode.")
@option("--seconds", default=0.0, show_default=True, type=float, help="Minimum steady-state time.")
@_energy_options
@option("--report", "report_dir", metavar="DIR", default=None, type=click.Path(),
        help="Write JSON, CSV and PNG plots to DIR (atomically).")
@option("--force", is_flag=True, help="Replace an existing --report DIR.")
@runtime_options(max_batch=False)
@option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@option("--host", metavar="USER@HOST[:PORT]", default=None, help=_HOST_HELP)
@ssh_options
@verbose_option
def bench_cmd(bundle: str, data_arg: Optional[str], data: Optional[str], runs: int, warmup: int, seconds: float,
              meter: str, usb_meter: Optional[str], blocks: int, block_seconds: float, idle_seconds: float,
              report_dir: Optional[str], force: bool, threads: Optional[int], interpreter: Optional[str],
              as_json: bool, host: Optional[str], identity: Optional[str],
              known_hosts: str, accept_new_host_key: bool, remote_dir: str, remote_python: str, timeout_s: float,
              verbose: bool) -> None:
    """Latency and energy of early exit against full depth from one run (batch 1), with accuracy."""
    from edgekit.bench.command import local_bench
    from edgekit.deploy.board_runs import board_bench
    from edgekit.bench.energy import EnergyOptions
    from edgekit.bench.latency import Protocol
    from edgekit.bench.report import check_report_dir, write_report

    data = one_data(data_arg, data)
    protocol = Protocol(runs=runs, warmup=warmup, min_seconds=seconds).check()
    energy = EnergyOptions(meter=meter, usb_device=usb_meter, blocks=blocks, block_seconds=block_seconds,
                           idle_seconds=idle_seconds).check()
    if report_dir is not None:
        check_report_dir(report_dir, force)
    _warn(range_warning(bundle, data))
    if host is not None:
        board = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                                   timeout_s)
        result = board_bench(board, bundle, data, protocol, energy, threads, interpreter)
    else:
        with running("bench", verbose):
            result = local_bench(bundle, data, protocol, energy, threads, interpreter)
    written = write_report(result, report_dir, force) if report_dir is not None else []
    _print_bench(result, as_json, report_dir, written)


def _print_bench(result: Dict[str, Any], as_json: bool, report_dir: Optional[str], written: Any) -> None:
    from edgekit.bench.run import text_lines

    if as_json:
        echo_json({k: v for k, v in result.items() if not k.startswith("raw_")})   # raw_ms, raw_calls: the report
        return
    for line in text_lines(result):
        click.echo(line)
    if report_dir is not None:
        click.echo("report: {} ({})".format(report_dir, ", ".join(written)))
