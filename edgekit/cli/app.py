"""The `edgekit` command group and what every command shares: one-line errors, an example in --help, options
whose old spellings still work without being shown.

Every error, click's usage errors included, is one line `edgekit: error: ...` on stderr and exit code 2; a
command with several required options missing names them all at once. The commands live in the other modules
of this package and are registered in edgekit/cli/__init__.py.
"""
import sys
from typing import Any, Callable, List, NoReturn, Optional, Sequence

import click

from edgekit.errors import ConfigError, EdgekitError

_UNSET = getattr(click.core, "UNSET", None)          # click >= 8.3 marks a parameter not given with it

# What to install when an optional dependency is missing: module -> the edgekit extra that brings it.
EXTRAS = {"tensorflow": "convert", "keras": "convert", "ai_edge_quantizer": "convert", "onnx2tf": "onnx",
          "onnx": "onnx", "onnxruntime": "onnx", "onnx_graphsurgeon": "onnx", "paramiko": "deploy",
          "matplotlib": "report", "ai_edge_litert": "runtime", "tflite_runtime": "runtime"}


def fail(message: str) -> NoReturn:
    """The one line every failure prints, whatever raised it."""
    click.echo("edgekit: error: {}".format(" ".join(str(message).split())), err=True)
    sys.exit(2)


def missing_extra(exc: ImportError) -> Optional[str]:
    """`pip install 'edgekit[X]'` advice for a missing optional dependency (None when it is not one of those)."""
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return "{} is not installed here, and this command needs it: pip install 'edgekit[{}]'".format(top, EXTRAS[top])


def require(*modules: str) -> None:
    """Refuse at once, in one line, when an optional dependency a command needs is not installed (found without
    importing it: TensorFlow takes seconds to import)."""
    import importlib.util

    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError("{} is not installed here, and this command needs it: pip install 'edgekit[{}]'".format(
                name, EXTRAS.get(name, name)))


def _usage_text(exc: click.UsageError) -> str:
    name = exc.ctx.info_name if exc.ctx is not None else None
    text = exc.format_message().rstrip(".")
    return "{}: {} (see `edgekit {} --help`)".format(name, text, name) if name and name != "edgekit" else text


class Group(click.Group):
    def make_context(self, info_name: Optional[str], args: List[str], parent: Optional[click.Context] = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            fail(_usage_text(exc))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            fail(str(exc))
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            fail(_usage_text(exc))
        except click.ClickException as exc:
            fail(exc.format_message())
        except ImportError as exc:
            advice = missing_extra(exc)
            if advice is None:
                raise
            fail(advice)


class Command(click.Command):
    """A command that reports every missing required parameter at once and shows an example under --help."""

    def __init__(self, *args: Any, example: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.example = example

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        try:
            return super().parse_args(ctx, list(args))
        except click.MissingParameter as exc:
            names = self._missing(ctx, args)
            if len(names) < 2:
                raise
            raise click.UsageError("missing {}".format(", ".join(names)), ctx) from exc

    def _missing(self, ctx: click.Context, args: Sequence[str]) -> List[str]:
        try:
            given, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        except click.UsageError:
            return []
        out = []
        for p in self.get_params(ctx):
            value = given.get(p.name)
            if p.required and (value is None or value == () or value is _UNSET):
                out.append(p.opts[0] if isinstance(p, click.Option) else p.human_readable_name)
        return out

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.example:
            with formatter.section("Example"):
                for line in self.example.strip().splitlines():     # as written: a command line is not rewrapped
                    formatter.write("{}$ {}\n".format(" " * formatter.current_indent, line.strip()))


class Option(click.Option):
    """An option whose other spellings (`aliases`) are accepted but left out of --help: renamed options keep
    working under their old names."""

    def __init__(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)

    def get_help_record(self, ctx: click.Context) -> Any:
        opts, secondary = self.opts, self.secondary_opts
        self.opts = [o for o in opts if o not in self.aliases]
        self.secondary_opts = [o for o in secondary if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = opts, secondary


def command(name: str, example: str, **attrs: Any) -> Callable[[Callable[..., Any]], Command]:
    """@click.command with this package's Command class; `example` is one or more command lines."""
    return click.command(name, cls=Command, example=example, **attrs)


def option(*decls: str, aliases: Sequence[str] = (), **attrs: Any) -> Callable[[Callable[..., Any]], Any]:
    """@click.option whose `aliases` (old spellings) are accepted but not shown."""
    return click.option(*decls, *aliases, cls=Option, aliases=aliases, **attrs)


@click.group(cls=Group)
@click.version_option(package_name="edgekit")
def main() -> None:
    """Convert, flash, run and benchmark dynamic (early-exit) networks on edge boards.

    \b
    Example:
      $ edgekit demo
      $ edgekit convert MODEL.keras -t raspberry-pi-5 --calib CALIB.npz -o out
    """
