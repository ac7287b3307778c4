"""`edgekit profile BUNDLE [--host USER@BOARD] [--threads N] [--ops]`: per-stage costs measured and written into
BUNDLE; --ops prints where each stage's time goes, op by op (edgekit/bench/ops.py, this machine only)."""
import json
from typing import Optional

import click

from edgekit.cli.app import command
from edgekit.cli.output import table_lines
from edgekit.cli.ssh import board_from_options, ssh_options


@command("profile", "edgekit profile out/raspberry-pi-5 --data calibration/digits_calib.npz\n"
                    "edgekit profile current --host pi@raspberrypi.local")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Inputs; the first sample feeds the stages (default: a synthetic sample of the input's shape).")
@click.option("--threads", type=int, default=None,
              help="Measure this thread count only (default: every count from 1 to the machine's cores).")
@click.option("--host", metavar="USER@HOST[:PORT]", default=None,
              help="Measure on this board over SSH (BUNDLE must be flashed there); default: this machine.")
@click.option("--dry-run", is_flag=True, help="Measure and print; do not write the bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print the costs record as JSON.")
@click.option("--ops", is_flag=True, help="Only print the time of each op of each stage here (each op timed alone); "
                                          "writes nothing.")
@ssh_options
def profile(bundle: str, data: Optional[str], threads: Optional[int], host: Optional[str], dry_run: bool,
            as_json: bool, ops: bool, identity: Optional[str], known_hosts: str, accept_new_host_key: bool,
            remote_dir: str, remote_python: str, timeout_s: float) -> None:
    """Measure each stage's cost at each thread count (warmed up, interleaved, until the median is stable) here
    or on the board, and write the costs and the fastest thread count per stage into BUNDLE. `edgekit
    calibrate` then fits thresholds on these costs."""
    from edgekit.bench.profile import check_threads, cost_rows, profile_here, sample_input, summary, write_costs
    from edgekit.deploy.board_runs import profile_board
    from edgekit.data import load_data
    from edgekit.manifest import load_bundle

    check_threads(threads)
    if ops:
        _ops(bundle, data, host, as_json)
        return
    manifest = load_bundle(bundle)
    if host is not None:
        board = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                                   timeout_s)
        section = profile_board(board, bundle, data, threads)
    else:
        x = load_data(data).x if data is not None else sample_input(manifest)
        section = profile_here(bundle, x, threads)
    signed = False if dry_run else write_costs(bundle, section)
    if as_json:
        click.echo(json.dumps(section, indent=2))
    else:
        click.echo(summary(section))
        for line in table_lines(("stage", "ms by threads: median [p10-p90]", "threads", "ms"), cost_rows(section)):
            click.echo(line)
        click.echo("{} {}".format("not written (--dry-run):" if dry_run else "written into", bundle))
    if signed:
        click.echo("edgekit: note: {} was signed; its manifest changed, so the signature was removed: sign it "
                   "again (edgekit sign {} --key KEY)".format(bundle, bundle), err=True)


def _ops(bundle: str, data: Optional[str], host: Optional[str], as_json: bool) -> None:
    from edgekit.bench.ops import ops_table, profile_ops
    from edgekit.bench.profile import sample_input
    from edgekit.data import load_data
    from edgekit.errors import ConfigError
    from edgekit.runtime import EarlyExitRunner

    if host is not None or as_json:
        raise ConfigError("--ops runs on this machine and prints a table; got {}; allowed: --ops with --data".format(
            "--host" if host is not None else "--json"))
    runner = EarlyExitRunner(bundle)
    x = load_data(data).x[:1] if data is not None else sample_input(runner.manifest)
    click.echo(ops_table(profile_ops(runner, x)))
