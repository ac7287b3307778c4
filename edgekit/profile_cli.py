"""`edgekit profile BUNDLE [--host USER@BOARD] [--threads N]`: per-stage costs measured and written into BUNDLE."""
import json
from typing import Optional

import click

from edgekit.deploy.cli import board_from_options, ssh_options


@click.command("profile")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Inputs; the first sample feeds the stages (default: a synthetic sample of the input's shape).")
@click.option("--threads", type=int, default=None,
              help="Measure this thread count only (default: every count from 1 to the machine's cores).")
@click.option("--host", metavar="USER@HOST[:PORT]", default=None,
              help="Measure on this board over SSH (BUNDLE must be flashed there); default: this machine.")
@click.option("--dry-run", is_flag=True, help="Measure and print; do not write the bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print the costs record as JSON.")
@ssh_options
def profile(bundle: str, data: Optional[str], threads: Optional[int], host: Optional[str], dry_run: bool,
            as_json: bool, identity: Optional[str], known_hosts: str, accept_new_host_key: bool, remote_dir: str,
            remote_python: str, timeout_s: float) -> None:
    """Measure each stage's cost at each thread count (warmed up, interleaved, until the median is stable) here
    or on the board, and write the costs and the fastest thread count per stage into BUNDLE. `edgekit
    calibrate` then fits thresholds on these costs."""
    from edgekit.bench.profile import (check_threads, cost_rows, profile_board, profile_here, sample_input,
                                       summary, write_costs)
    from edgekit.bench.run import _table
    from edgekit.data import load_data
    from edgekit.manifest import load_bundle

    check_threads(threads)
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
        for line in _table(("stage", "ms by threads: median [p10-p90]", "threads", "ms"), cost_rows(section)):
            click.echo(line)
        click.echo("{} {}".format("not written (--dry-run):" if dry_run else "written into", bundle))
    if signed:
        click.echo("edgekit: note: {} was signed; its manifest changed, so the signature was removed: sign it "
                   "again (edgekit sign {} --key KEY)".format(bundle, bundle), err=True)
