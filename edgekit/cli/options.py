"""The options several commands share, spelled and checked one way (README: "Options").

Every fixed list is a click Choice built from the library's own registry, so the allowed values in --help and in
the error are the ones the code accepts. Nothing here imports TensorFlow.
"""
import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import click

from edgekit.cli.app import option
from edgekit.errors import ConfigError

Decorator = Callable[[Callable[..., Any]], Any]


class Choice(click.Choice):
    """A click Choice whose refusal reads like every other edgekit error: what was given, what is allowed."""

    def __init__(self, choices: Sequence[str], what: str) -> None:
        super().__init__(list(choices))
        self.what = what

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if value in self.choices:
            return value
        raise ConfigError("unknown {} {!r}; allowed: {}".format(self.what, value, ", ".join(self.choices)))


ADAPTIVE = "adaptive"
# The fixed lists whose registries live in edgekit/convert/ (which imports TensorFlow at once): spelled here so
# that --help and a typo need no TensorFlow; tests/test_cli_mistakes.py checks each against its registry.
OBJECTIVES = ("latency", "size", "accuracy")                 # convert.precision.objective.OBJECTIVES
FIT_OBJECTIVES = ("auto", "accuracy", "agreement")           # convert.thresholds.OBJECTIVES
HEAD_TARGETS = ("auto", "labels", "distill")                 # convert.exits.TARGETS
EXIT_PLACES = ("flops", "latency")                            # convert.exits.PLACES
IMPORTANCES = ("l1", "l2", "bn_scale", "activation")         # convert.pruning.importance.IMPORTANCE
ALLOCATIONS = ("dp", "uniform")                              # convert.prune.ALLOCATIONS


def precisions() -> Tuple[str, ...]:
    """Every --precision convert takes: the whole-stage precisions, then adaptive."""
    from edgekit.rungs import PRECISIONS

    return tuple(PRECISIONS) + (ADAPTIVE,)


def exit_rules() -> Tuple[str, ...]:
    from edgekit.runtime.policy import EXIT_RULES

    return tuple(EXIT_RULES)


def meters() -> Tuple[str, ...]:
    from edgekit.bench.meters import AUTO, METERS

    return (AUTO,) + tuple(METERS)


def interpreters() -> Tuple[str, ...]:
    from edgekit.runtime.interpreter import BACKENDS

    return BACKENDS


def _stack(opts: Sequence[Decorator]) -> Decorator:
    return lambda fn: functools.reduce(lambda f, opt: opt(f), reversed(opts), fn)


def runtime_options(max_batch: bool = True) -> Decorator:
    """--threads, --interpreter, --max-batch: how the runtime runs the bundle, wherever a command runs it (the
    bench calls one sample at a time: no --max-batch there)."""
    return _stack([
        click.option("--threads", type=int, default=None,
                     help="Interpreter threads for every stage (default: the counts measured per stage in the "
                          "bundle)."),
        click.option("--interpreter", type=Choice(interpreters(), "interpreter"), default=None,
                     help="TFLite interpreter package: {} (default: the first installed).".format(
                         ", ".join(interpreters()))),
    ] + ([click.option("--max-batch", type=int, default=None,
                       help="Most samples per call (default: the manifest's, else 1024).")] if max_batch else []))


def exit_rule_option(help_text: str) -> Decorator:
    return option("--exit-rule", "exit_rule", aliases=("--rule",), type=Choice(exit_rules(), "exit rule"),
                  default=None, help=help_text)


def verbose_option(fn: Callable[..., Any]) -> Any:
    return click.option("--verbose", "-v", is_flag=True,
                        help="Also show what TensorFlow and Keras print (captured otherwise).")(fn)


def data_option(help_text: str, required: bool = False) -> Decorator:
    return click.option("--data", "data", type=click.Path(exists=True, dir_okay=False), default=None,
                        required=required, help=help_text)


def one_data(argument: Optional[str], option_value: Optional[str]) -> str:
    """DATA as an argument or as --data (the same file), exactly once."""
    if argument is not None and option_value is not None and argument != option_value:
        raise ConfigError("give the data file once, as DATA or --data DATA; got both ({} and {})".format(
            argument, option_value))
    value = argument if argument is not None else option_value
    if value is None:
        raise ConfigError("missing the data file: give --data DATA (.npz with x and optional y, or .npy)")
    return value
