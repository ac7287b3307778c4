"""The edgekit command line. Each command parses, calls one library function, prints.

Every EdgekitError becomes one line on stderr and exit code 2; heavy imports happen inside commands.
"""
import json
import sys
from typing import Any, Optional

import click

from edgekit.errors import EdgekitError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo("edgekit: error: {}".format(exc), err=True)
            sys.exit(2)


def echo_json(obj: Any) -> None:
    """--json prints one JSON object on stdout and nothing else there."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@click.group(cls=_Group)
@click.version_option(package_name="edgekit")
def main() -> None:
    """Convert, flash, run and benchmark dynamic (early-exit) networks on edge boards."""


@main.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def targets_cmd(as_json: bool) -> None:
    """List the board profiles in targets/."""
    from edgekit.targets import list_targets

    profiles = list_targets()
    if as_json:
        echo_json([t.to_dict() for t in profiles])
        return
    rows = [(t.name, t.arch, str(t.cores), t.runtime_package, ",".join(t.precisions), t.energy_meter)
            for t in profiles]
    _table(("target", "arch", "cores", "runtime", "precisions (preferred first)", "energy"), rows)


def _table(header: Any, rows: Any, out: Optional[Any] = None) -> None:
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    click.echo(line.format(*header), file=out)
    click.echo(line.format(*("-" * w for w in widths)), file=out)
    for r in rows:
        click.echo(line.format(*r), file=out)


if __name__ == "__main__":
    main()
