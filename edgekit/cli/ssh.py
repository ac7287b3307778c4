"""The SSH options of every command that reaches a board (flash, run/bench/profile --host) and the Board they make."""
import functools
from typing import Any, Callable, Optional

import click

from edgekit.deploy.hosts import (DEFAULT_KNOWN_HOSTS, DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON, DEFAULT_TIMEOUT_S,
                                  Board, check_remote_dir, check_remote_python, make_ssh_options, parse_host)


def ssh_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --identity, --known-hosts, --accept-new-host-key, --remote-dir, --remote-python, --timeout."""
    opts = [
        click.option("--identity", "-i", metavar="KEY", default=None,
                     help="Private key file (only this key is tried). Default: ssh-agent, then ~/.ssh keys."),
        click.option("--known-hosts", metavar="FILE", default=DEFAULT_KNOWN_HOSTS, show_default=True,
                     help="Trusted host keys. Unknown keys are refused; a changed key is always refused."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust a board's key the first time and record it in --known-hosts."),
        click.option("--remote-dir", metavar="DIR", default=DEFAULT_REMOTE_DIR, show_default=True,
                     help="Directory on the board holding releases/, current and previous."),
        click.option("--remote-python", metavar="PY", default=DEFAULT_REMOTE_PYTHON, show_default=True,
                     help="Python on the board (needs numpy and a TFLite interpreter to run bundles)."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(0.0, 3600.0, min_open=True),
                     default=DEFAULT_TIMEOUT_S, show_default=True,
                     help="Seconds to wait for the board to connect and answer."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(opts), fn)


def board_from_options(host: str, identity: Optional[str], known_hosts: str, accept_new_host_key: bool,
                       remote_dir: str, remote_python: str, timeout_s: float, target: Optional[str] = None) -> Board:
    """The Board for --host and the ssh_options values."""
    return Board(host=parse_host(host), ssh=make_ssh_options(identity, known_hosts, accept_new_host_key, timeout_s),
                 remote_dir=check_remote_dir(remote_dir), remote_python=check_remote_python(remote_python),
                 target=target)
