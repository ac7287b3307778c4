"""`edgekit prune MODEL --prune-flops 0.5 --calib DATA -o pruned.keras`, and the --prune-* options of `convert`.

The command parses, calls edgekit.convert.prune.prune, writes the pruned model and its report
atomically (temporary files beside the destination, then renamed), and prints a per-group table.
"""
import functools
import json
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import click

from edgekit.cli.app import command, option, require
from edgekit.cli.options import ALLOCATIONS, IMPORTANCES, Choice, verbose_option
from edgekit.cli.output import echo_json, echo_table
from edgekit.cli.progress import running
from edgekit.errors import ConfigError

if TYPE_CHECKING:
    from edgekit.convert.prune import PruneOptions

DEFAULT_RECOVER_EPOCHS = 30


def prune_budget(flops: Optional[float], params: Optional[float], latency: Optional[float]) -> Tuple[str, float]:
    given = [(k, v) for k, v in (("flops", flops), ("params", params), ("latency", latency)) if v is not None]
    if len(given) != 1:
        names = ", ".join("--prune-{}".format(k) for k, _ in given) or "none"
        raise ConfigError("give exactly one pruning budget: --prune-flops, --prune-params or --prune-latency "
                          "(got {})".format(names))
    kind, fraction = given[0]
    if not 0.0 < fraction <= 1.0:           # PruneOptions.check says the same, after TensorFlow has loaded
        raise ConfigError("prune budget {}={} is outside (0, 1]; it is the fraction of the model's {} to keep".format(
            kind, fraction, kind))
    return kind, fraction


def prune_options(old_spellings: bool) -> Callable[[Callable[..., Any]], Any]:
    """--prune-flops/--prune-params/--prune-latency, --prune-importance, --recover, --recover-epochs: the same
    options on `convert` and `prune`. `prune` also takes its old spellings (--flops, --params, --latency,
    --importance), accepted but not shown."""
    def old(name: str) -> Tuple[str, ...]:
        return (name,) if old_spellings else ()

    fraction = float      # PruneOptions.check says what is allowed
    opts = [
        option("--prune-flops", "prune_flops", aliases=old("--flops"), type=fraction, default=None,
               help="Prune whole channels to keep this fraction of the FLOPs, in (0, 1]."),
        option("--prune-params", "prune_params", aliases=old("--params"), type=fraction, default=None,
               help="Prune whole channels to keep this fraction of the parameters, in (0, 1]."),
        option("--prune-latency", "prune_latency", aliases=old("--latency"), type=fraction, default=None,
               help="Prune whole channels to keep this fraction of the measured layer latency, in (0, 1]."),
        option("--prune-importance", "prune_importance", aliases=old("--importance"),
               type=Choice(IMPORTANCES, "importance"), default=None,
               help="How channels are ranked (default l1)."),
        option("--recover", is_flag=True, help="Fine-tune the pruned model by distillation from the original "
                                               "(at most {} epochs unless --recover-epochs).".format(
                                                   DEFAULT_RECOVER_EPOCHS)),
        option("--recover-epochs", type=click.IntRange(min=0), default=None,
               help="Most recovery epochs (early stopping); implies --recover when above 0."),
    ]
    return lambda fn: functools.reduce(lambda f, opt: opt(f), reversed(opts), fn)


def recover_epochs_of(recover: bool, epochs: Optional[int]) -> int:
    """--recover alone: the default epochs; --recover-epochs N: N (0: none)."""
    if epochs is not None:
        return epochs
    return DEFAULT_RECOVER_EPOCHS if recover else 0


def prune_from_cli(flops: Optional[float], params: Optional[float], latency: Optional[float],
                   importance: Optional[str], recover: bool,
                   recover_epochs: Optional[int]) -> Optional["PruneOptions"]:
    """The `convert --prune-*` options as PruneOptions (None when no budget is given), checked now so that
    a bad value fails before any work."""
    if flops is None and params is None and latency is None:
        given = [n for n, v in (("--prune-importance", importance), ("--recover", recover or None),
                                ("--recover-epochs", recover_epochs)) if v is not None]
        if given:
            raise ConfigError("{} need a budget: --prune-flops, --prune-params or --prune-latency".format(
                ", ".join(given)))
        return None
    kind, fraction = prune_budget(flops, params, latency)
    from edgekit.convert.prune import PruneOptions  # lazy: edgekit.convert imports TensorFlow at once

    return PruneOptions(fraction=fraction, budget=kind, importance=importance or "l1",
                        recover_epochs=recover_epochs_of(recover, recover_epochs)).check()


def _ratios(text: Optional[str]) -> Tuple[float, ...]:
    if text is None:
        from edgekit.convert.prune import DEFAULT_RATIOS  # lazy: edgekit.convert imports TensorFlow at once

        return DEFAULT_RATIOS
    try:
        return tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise ConfigError("--ratios {!r}: expected comma-separated numbers in (0, 1), e.g. 0.25,0.5,0.75".format(text))


def _check_out(out: str, force: bool) -> str:
    if not out.endswith(".keras"):
        raise ConfigError("output {} must end in .keras (the pruned model is saved in Keras format)".format(out))
    if os.path.exists(out) and not force:
        raise ConfigError("{} already exists; pass --force to replace it (nothing was written)".format(out))
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError("output directory {} does not exist (nothing was written)".format(parent))
    return report_path(out)


def report_path(out: str) -> str:
    return out[:-len(".keras")] + ".report.json"


def write_outputs(model, report: Dict[str, Any], out: str) -> None:
    """Save the model and the report beside each other; a failure leaves neither half-written."""
    parent = os.path.dirname(os.path.abspath(out))
    fd, tmp_model = tempfile.mkstemp(prefix=".prune-", suffix=".keras", dir=parent)
    os.close(fd)
    fd, tmp_report = tempfile.mkstemp(prefix=".prune-", suffix=".json", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        os.remove(tmp_model)
        model.save(tmp_model)
        mode = 0o666 & ~_umask()
        for p in (tmp_model, tmp_report):
            os.chmod(p, mode)
        os.replace(tmp_model, out)
        os.replace(tmp_report, report_path(out))
    finally:
        for p in (tmp_model, tmp_report):
            if os.path.exists(p):
                os.remove(p)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def summary_lines(report: Dict[str, Any]) -> Tuple[str, ...]:
    f, p, alloc = report["flops"], report["params"], report["allocation"]
    acc = report.get("accuracy") or {}

    def pct(v):
        return "n/a" if not v else "/".join("{:.2%}".format(a) for a in v)

    return (
        "pruned ({} allocation, {} importance): FLOPs {:.2f}M -> {:.2f}M ({:.1%}), params {} -> {} ({:.1%})".format(
            alloc["method"], report["options"]["importance"], f["before"] / 1e6, f["after"] / 1e6, f["fraction"],
            p["before"], p["after"], p["fraction"]),
        "distortion on calibration data: dp {:.4g} at {:.1%} of the {}, uniform {:.4g} at {:.1%}".format(
            alloc["dp"]["distortion_calib"], alloc["dp"]["cost_fraction"], report["budget"]["kind"],
            alloc["uniform"]["distortion_calib"], alloc["uniform"]["cost_fraction"]),
        "accuracy per exit on {}: unpruned {}, pruned {}, recovered {}".format(
            acc.get("on") or "-", pct(acc.get("unpruned")), pct(acc.get("pruned")), pct(acc.get("recovered"))),
    )


def _groups_table(report: Dict[str, Any]) -> None:

    rows = [(g["group"], str(g["channels"]), str(g["kept_dp"] if report["allocation"]["method"] == "dp"
                                                  else g["kept_uniform"]), ",".join(g["kinds"]))
            for g in report["groups"]]
    echo_table(("group", "channels", "kept", "touches"), rows)
    changed = [(r["layer"], "{} -> {}".format(*r["in_channels"]), "{} -> {}".format(*r["out_channels"]))
               for r in report["layers"] if r["in_channels"][0] != r["in_channels"][1]
               or r["out_channels"][0] != r["out_channels"][1]]
    if changed:
        click.echo("")
        echo_table(("layer", "in channels", "out channels"), changed)
    for s in report["skipped_groups"]:
        if s["channels"] > 1:
            click.echo("left alone: {} ({} channels): {}".format(s["group"], s["channels"], s["reason"]))


EXAMPLE = """edgekit prune edgekit/assets/demo_digits.keras --prune-flops 0.5 --calib calibration/digits_calib.npz -o half.keras --recover"""


@command("prune", EXAMPLE)
@click.argument("model", type=click.Path(exists=True))
@option("--calib", required=True, type=click.Path(exists=True, dir_okay=False),
        help="Calibration data: .npz (x, y) or .npy.")
@option("--out", "-o", required=True, type=click.Path(dir_okay=False),
        help="The pruned model (.keras); its report goes beside it (.report.json).")
@prune_options(old_spellings=True)
@option("--allocation", type=Choice(ALLOCATIONS, "allocation"), default="dp", show_default=True,
        help="dp (layer-adaptive) or uniform (the baseline).")
@option("--target", "-t", default=None, help="Board profile whose channel multiple to round to.")
@option("--channel-multiple", type=click.IntRange(min=1), default=None,
        help="Round channel counts to this multiple (default: the target's, else 1).")
@option("--ratios", default=None, help="Pruning ratios at which distortion is measured (default 0.1,...,0.9).")
@option("--samples", type=click.IntRange(min=1), default=256, show_default=True,
        help="Calibration samples used to rank channels.")
@option("--compensate/--no-compensate", default=True, show_default=True,
        help="Fold removed channels' mean contribution into the next layer's bias (or BatchNorm mean).")
@option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False), default=None,
        help="Labelled data for accuracy before/after.")
@option("--force", is_flag=True, help="Replace an existing output.")
@option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@verbose_option
def prune_cmd(model: str, calib: str, out: str, prune_flops: Optional[float], prune_params: Optional[float],
              prune_latency: Optional[float], prune_importance: Optional[str], recover: bool,
              recover_epochs: Optional[int], allocation: str, target: Optional[str], channel_multiple: Optional[int],
              ratios: Optional[str], samples: int, compensate: bool, eval_path: Optional[str], force: bool,
              as_json: bool, verbose: bool) -> None:
    """Remove whole channels (layer-adaptive ratios under a FLOPs/params/latency budget) from a Keras model."""
    from edgekit.data import load_data
    from edgekit.targets import get_target

    kind, fraction = prune_budget(prune_flops, prune_params, prune_latency)      # cheap checks before TensorFlow
    board = get_target(target) if target else None
    _check_out(out, force)
    data = load_data(calib)
    held = load_data(eval_path) if eval_path else None
    require("tensorflow")
    with running("prune", verbose) as progress:
        progress(0, 0, "load: TensorFlow and {}".format(os.path.basename(model)))
        from edgekit.convert.load import load_model
        from edgekit.convert.prune import PruneOptions, prune

        opts = PruneOptions(fraction=fraction, budget=kind, importance=prune_importance or "l1",
                            allocation=allocation, ratios=_ratios(ratios), channel_multiple=channel_multiple,
                            samples=samples, recover_epochs=recover_epochs_of(recover, recover_epochs),
                            compensate=compensate).check().resolved(board)
        keras_model = load_model(model)
        result = prune(keras_model, opts, data, progress=lambda d, t, what: progress(d, t, "prune: " + what),
                       eval_data=held)
        report = dict(result.report, model=model, output=out)
        progress(0, 0, "write: {}".format(out))
        write_outputs(result.model, report, out)
    if as_json:
        echo_json(report)
        return
    _groups_table(report)
    for line in summary_lines(report):
        click.echo(line)
    click.echo("wrote {} and {}".format(out, report_path(out)), file=sys.stderr)
