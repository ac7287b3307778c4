"""`edgekit flash`: one board (--host) or a fleet (--inventory); --rollback and --list use the same options."""
from typing import Any, Optional, Tuple

import click

from edgekit.cli.app import command
from edgekit.cli.canary import canary_options, plan_from_options, run_canary
from edgekit.cli.output import echo_json, echo_table
from edgekit.cli.ssh import board_from_options, ssh_options
from edgekit.deploy.errors import DeployError
from edgekit.deploy.hosts import check_remote_dir, check_remote_python, make_ssh_options
from edgekit.errors import ConfigError


@command("flash", "edgekit flash out/raspberry-pi-5 --host pi@raspberrypi.local\n"
                  "edgekit flash out/raspberry-pi-5 --inventory hosts.yaml --canary 1 --smoke-data smoke.npz "
                  "--smoke-min-accuracy 0.9")
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option("--host", metavar="USER@HOST[:PORT]", default=None, help="The board to flash.")
@click.option("--inventory", metavar="HOSTS", default=None, type=click.Path(),
              help="Flash every board listed: edgekit's YAML list (host, port, user, key, remote_dir, target?, "
                   "remote_python?, name?) or an Ansible INI/YAML inventory (needs the ansible extra).")
@click.option("--limit", metavar="PATTERN", default=None,
              help="With --inventory: only these hosts (an Ansible host pattern such as 'pis' or 'pis:!pi-3'; "
                   "board-name patterns for edgekit's own YAML).")
@ssh_options
@click.option("--target", "-t", default=None,
              help="The board's profile, when it is not the one the bundle was built for.")
@click.option("--force", is_flag=True, help="Flash despite soft mismatches (another board of the same arch).")
@click.option("--keep", type=int, default=3, show_default=True, help="Releases kept on the board (>= 2).")
@click.option("--jobs", type=int, default=4, show_default=True, help="Boards flashed at once with --inventory.")
@click.option("--rollback", is_flag=True, help="Switch current back to the previous release.")
@click.option("--list", "list_", is_flag=True, help="Show the releases on the board.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--verbose", "-v", is_flag=True, help="Report each step on stderr.")
@click.option("--require-signature", is_flag=True,
              help="Refuse BUNDLE unless signed by a --trusted-key or by a key in the board's DIR/trusted_keys/.")
@click.option("--trusted-key", "trusted_keys", multiple=True, metavar="FILE|DIR",
              help="A public key (or directory of *.pub) that must have signed BUNDLE; checked before connecting.")
@canary_options
def flash(bundle: Optional[str], host: Optional[str], inventory: Optional[str], limit: Optional[str],
          identity: Optional[str],
          known_hosts: str, accept_new_host_key: bool, remote_dir: str, remote_python: str, timeout_s: float,
          target: Optional[str], force: bool, keep: int, jobs: int, rollback: bool, list_: bool, as_json: bool,
          verbose: bool, require_signature: bool = False, trusted_keys: Tuple[str, ...] = (),
          canary: Optional[int] = None, max_fail: float = 0.0, smoke_data: Optional[str] = None,
          smoke_min_accuracy: Optional[float] = None, smoke_max_latency_ms: Optional[float] = None) -> None:
    """Upload BUNDLE to a board over SSH, verify it there, and switch to it atomically.

    A board with DIR/trusted_keys/*.pub only gets bundles signed by one of those keys (`edgekit sign`)."""
    from edgekit.deploy import releases as single
    from edgekit.deploy.hosts import BoardDefaults
    from edgekit.deploy.inventory_ansible import load_fleet_inventory
    from edgekit.deploy.signature import SignaturePolicy

    action = _action(bundle, host, inventory, rollback, list_)
    if limit is not None and inventory is None:
        raise ConfigError("--limit {!r} needs --inventory; with --host there is one board".format(limit))
    plan = plan_from_options(action, inventory, canary, max_fail, smoke_data, smoke_min_accuracy,
                             smoke_max_latency_ms)
    policy = SignaturePolicy(require=require_signature, trusted_keys=tuple(trusted_keys))
    if action == "flash":
        policy.check_local(bundle)              # --trusted-key: refuse before any board is touched
    if inventory is not None:
        defaults = BoardDefaults(ssh=make_ssh_options(identity, known_hosts, accept_new_host_key, timeout_s),
                                 remote_dir=check_remote_dir(remote_dir),
                                 remote_python=check_remote_python(remote_python), target=target)
        boards = load_fleet_inventory(inventory, defaults, limit)
        if plan is not None:
            run_canary(plan, bundle, boards, jobs, force, keep, as_json, policy)
        else:
            _fleet(action, bundle, boards, jobs, force, keep, as_json, policy)
        return
    base = board_from_options(host, identity, known_hosts, accept_new_host_key, remote_dir, remote_python,
                              timeout_s, target)
    if action == "list":
        _show_list(single.list_releases(base), as_json)
    elif action == "rollback":
        res = single.rollback(base, signature=policy)
        _out(res.to_dict(), as_json, "{}: current -> {} (previous -> {}){}".format(
            res.host, res.current, res.previous, "; signed by key {}".format(res.signed_by) if res.signed_by else ""))
    else:
        hook = (lambda event, detail: click.echo("  {}: {}".format(event, detail), err=True)) if verbose else None
        res = single.flash(bundle, base, force=force, keep=keep, on_event=hook, signature=policy)
        _out(res.to_dict(), as_json, _flash_text(res))


def _action(bundle: Optional[str], host: Optional[str], inventory: Optional[str], rollback: bool, list_: bool) -> str:
    if (host is None) == (inventory is None):
        raise ConfigError("give exactly one of --host USER@HOST[:PORT] or --inventory HOSTS.yaml; got {}".format(
            "both" if host else "neither"))
    if rollback and list_:
        raise ConfigError("--rollback and --list: choose one")
    action = "rollback" if rollback else "list" if list_ else "flash"
    if action == "flash" and bundle is None:
        raise ConfigError("flash needs a BUNDLE directory (manifest.json + stage_*.tflite), or --rollback / --list")
    if action != "flash" and bundle is not None:
        raise ConfigError("--{} takes no BUNDLE, got {!r}".format(action, bundle))
    return action


def _out(obj: Any, as_json: bool, text: str) -> None:

    if as_json:
        echo_json(obj)
    else:
        click.echo(text)


def _flash_text(res: Any) -> str:
    lines = ["flashed {} ({}, target {}) to {}:{}/releases/{}".format(
        res.bundle_id, res.model_name or "unnamed", res.target, res.host, res.remote_dir, res.bundle_id)]
    what = ("uploaded {} files, {} bytes in {:.2f} s".format(res.uploaded_files, res.uploaded_bytes, res.transfer_s)
            if res.uploaded_files else "already on the board, verified; nothing uploaded")
    lines.append("  {}; total {:.2f} s; current -> {}, previous -> {}".format(
        what, res.total_s, res.current, res.previous or "none"))
    lines += ["  warning: " + w for w in res.warnings]
    if res.signed_by:
        lines.append("  signature verified: signed by key {}".format(res.signed_by))
    if res.removed:
        lines.append("  removed old releases: " + ", ".join(res.removed))
    return "\n".join(lines)


def _show_list(res: Any, as_json: bool) -> None:

    if as_json:
        _out(res.to_dict(), True, "")
        return
    click.echo("{}:{}".format(res.host, res.remote_dir))
    if not res.releases:
        click.echo("  no releases")
        return
    rows = [(r.id, "current" if r.id == res.current else "previous" if r.id == res.previous else "",
             r.model_name, r.target, r.flashed_at[:19].replace("T", " "), str(r.size_bytes),
             "" if r.complete else "INCOMPLETE") for r in res.releases]
    echo_table(("release", "link", "model", "target", "flashed (UTC)", "bytes", ""), rows)


def _fleet(action: str, bundle: Optional[str], boards: Any, jobs: int, force: bool, keep: int, as_json: bool,
           policy: Any = None) -> None:
    from edgekit.deploy import fleet

    if action == "flash":
        report = fleet.flash_fleet(bundle, boards, jobs=jobs, force=force, keep=keep, signature=policy)
    elif action == "rollback":
        report = fleet.rollback_fleet(boards, jobs=jobs, signature=policy)
    else:
        report = fleet.list_fleet(boards, jobs=jobs)
    if as_json:
        _out(report.to_dict(), True, "")
    else:
        echo_table(("board", "result", "current", "uploaded", "seconds", "detail"), fleet.fleet_rows(report))
    if not report.ok:
        raise DeployError("{} of {} boards failed ({}): {}".format(
            len(report.failed), len(report.outcomes), action, "; ".join(o.board for o in report.failed)))
