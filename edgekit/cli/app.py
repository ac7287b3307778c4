"""The `edgekit` command group: every EdgekitError a command raises becomes one line on stderr and exit code 2.

The commands themselves live in the other modules of this package and are registered in edgekit/cli/__init__.py.
"""
import sys
from typing import Any

import click

from edgekit.errors import EdgekitError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo("edgekit: error: {}".format(exc), err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="edgekit")
def main() -> None:
    """Convert, flash, run and benchmark dynamic (early-exit) networks on edge boards."""
