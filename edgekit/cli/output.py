"""What every command module prints with: one JSON object, aligned tables (progress bars: progress.py).

It sits below every command module of edgekit/cli/, so none of them imports another to print.
"""
import json
from typing import Any, List, Optional

import click


def echo_json(obj: Any) -> None:
    """--json prints one JSON object on stdout and nothing else there."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def table_lines(header: Any, rows: Any) -> List[str]:
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    return [line.format(*header), line.format(*("-" * w for w in widths))] + [line.format(*r) for r in rows]


def echo_table(header: Any, rows: Any, out: Optional[Any] = None) -> None:
    for line in table_lines(header, rows):
        click.echo(line, file=out)
