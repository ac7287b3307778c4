"""`edgekit run` and `edgekit bench`: a bundle on data, here or on a board over SSH (--host)."""
from typing import Optional

import click

from edgekit.cli.output import echo_json
from edgekit.cli.ssh import board_from_options, ssh_options
from edgekit.cli.text import budget_note

_HOST_HELP = ("Run on this board over SSH (USER@HOST[:PORT]); BUNDLE is then 'current', 'previous', a bundle id "
              "or a flashed local bundle directory.")


@click.command("run")
@click.argument("bundle", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--full-depth", is_flag=True, help="Run every stage for every sample.")
@click.option("--budget-ms", type=float, default=None,
              help="Per-sample latency budget: run a stage only if it is predicted to fit.")
@click.option("--anytime", is_flag=True, help="With --budget-ms: return the best answer so far at the deadline.")
@click.option("--target-ms", type=float, default=None, help="Hold this mean latency per sample: a load controller "
                                                            "moves the exit thresholds while the samples run.")
@click.option("--threads", type=int, default=None,
              help="Interpreter threads for every stage (default: the counts measured per stage in the bundle).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--host", metavar="USER@HOST[:PORT]", default=None, help=_HOST_HELP)
@ssh_options
def run_cmd(bundle: str, data: str, full_depth: bool, budget_ms: Optional[float], anytime: bool,
            target_ms: Optional[float], threads: Optional[int], as_json: bool,
            host: Optional[str], identity: Optional[str], known_hosts: str, accept_new_host_key: bool,
            remote_dir: str, remote_python: str, timeout_s: float) -> None:
    """Run a bundle on DATA with early exit: predictions, exits, accuracy (when labelled)."""
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate
    from edgekit.runtime.controller import controller_line

    if host is not None:
        from edgekit.deploy.board_runs import board_run
        from edgekit.errors import ConfigError

        if budget_ms is not None or anytime:
            raise ConfigError("--budget-ms/--anytime run locally only for now: the board's python -m edgekit.runtime "
                              "does not take them; got --host {} with them".format(host))
        board = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                                   timeout_s)
        result = board_run(board, bundle, data, full_depth, threads, target_ms)
        delegates = result.get("delegates", [])
    else:
        runner = EarlyExitRunner(bundle, num_threads=threads)
        ds = load_data(data, max_batch=runner.max_batch)
        result = evaluate(runner, ds.x, ds.y, full_depth=full_depth, budget_ms=budget_ms, anytime=anytime,
                          target_ms=target_ms)
        delegates = runner.delegate_status
    if as_json:
        echo_json(result)
        return
    acc = "n/a (no labels)" if result["accuracy"] is None else "{:.2%}".format(result["accuracy"])
    click.echo("{}{} samples  accuracy {}  exit histogram {}  ({}){}".format(
        "{}: ".format(result["host"]) if "host" in result else "", len(result["exits"]), acc,
        result["exit_histogram"], "; ".join(delegates), budget_note(result, budget_ms)))
    if "controller" in result:
        click.echo(controller_line(result["controller"]))


@click.command("bench")
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Inputs (and labels) to time.")
@click.option("--runs", default=200, show_default=True, type=int, help="Steady-state calls per mode.")
@click.option("--warmup", default=20, show_default=True, type=int, help="Discarded calls per mode.")
@click.option("--seconds", default=0.0, show_default=True, type=float, help="Minimum steady-state time.")
@click.option("--meter", default="auto", show_default=True,
              help="Energy meter: auto, rapl, jetson-ina3221, rpi5-pmic, usb-serial or power-model.")
@click.option("--usb-meter", "usb_meter", metavar="DEVICE", default=None, help="Serial device of a USB power meter.")
@click.option("--blocks", default=3, show_default=True, type=int, help="Energy blocks per mode (alternating).")
@click.option("--block-seconds", default=1.0, show_default=True, type=float, help="Seconds per energy block (>= 1).")
@click.option("--idle-seconds", default=2.0, show_default=True, type=float, help="Idle baseline seconds, same run.")
@click.option("--report", "report_dir", metavar="DIR", default=None, type=click.Path(),
              help="Write JSON, CSV and PNG plots to DIR (atomically).")
@click.option("--force", is_flag=True, help="Replace an existing --report DIR.")
@click.option("--threads", type=int, default=None,
              help="Interpreter threads for every stage (default: the counts measured per stage in the bundle).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--host", metavar="USER@HOST[:PORT]", default=None, help=_HOST_HELP)
@ssh_options
def bench_cmd(bundle: str, data: str, runs: int, warmup: int, seconds: float, meter: str, usb_meter: Optional[str],
              blocks: int, block_seconds: float, idle_seconds: float, report_dir: Optional[str], force: bool,
              threads: Optional[int], as_json: bool, host: Optional[str], identity: Optional[str], known_hosts: str,
              accept_new_host_key: bool, remote_dir: str, remote_python: str, timeout_s: float) -> None:
    """Latency and energy of early exit against full depth from one run (batch 1), with accuracy."""
    from edgekit.bench.command import local_bench
    from edgekit.deploy.board_runs import board_bench
    from edgekit.bench.energy import EnergyOptions
    from edgekit.bench.latency import Protocol
    from edgekit.bench.report import check_report_dir, write_report
    from edgekit.bench.run import text_lines

    protocol = Protocol(runs=runs, warmup=warmup, min_seconds=seconds).check()
    energy = EnergyOptions(meter=meter, usb_device=usb_meter, blocks=blocks, block_seconds=block_seconds,
                           idle_seconds=idle_seconds).check()
    if report_dir is not None:
        check_report_dir(report_dir, force)
    if host is not None:
        board = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                                   timeout_s)
        result = board_bench(board, bundle, data, protocol, energy, threads)
    else:
        result = local_bench(bundle, data, protocol, energy, threads)
    written = write_report(result, report_dir, force) if report_dir is not None else []
    if as_json:
        echo_json({k: v for k, v in result.items() if not k.startswith("raw_")})   # raw_ms, raw_calls: the report
        return
    for line in text_lines(result):
        click.echo(line)
    if report_dir is not None:
        click.echo("report: {} ({})".format(report_dir, ", ".join(written)))
