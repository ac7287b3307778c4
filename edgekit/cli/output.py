"""What every command module prints with: one JSON object, aligned tables, a progress bar on stderr.

It sits below every command module of edgekit/cli/, so none of them imports another to print.
"""
import json
import sys
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


class StepBar:
    """A progress bar on stderr for convert's steps (stdout stays clean for --json)."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.done = label, None, 0

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None and (total != self.bar.length or done < self.done):   # a new phase (head training)
            self.close()
            self.bar, self.done = None, 0
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         item_show_func=lambda s: s, show_eta=False)
            self.bar.__enter__()
        self.bar.update(done - self.done, what)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
