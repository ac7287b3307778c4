"""`edgekit prune MODEL --flops 0.5 --calib DATA -o pruned.keras`, and the --prune-* options of `convert`.

The command parses, calls edgekit.convert.prune.prune, writes the pruned model and its report
atomically (temporary files beside the destination, then renamed), and prints a per-group table.
"""
import json
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import click

from edgekit.cli.output import StepBar, echo_json, echo_table
from edgekit.errors import ConfigError

if TYPE_CHECKING:
    from edgekit.convert.prune import PruneOptions

DEFAULT_RECOVER_EPOCHS = 30


def _budget(flops: Optional[float], params: Optional[float], latency: Optional[float], prefix: str) -> Tuple[str, float]:
    given = [(k, v) for k, v in (("flops", flops), ("params", params), ("latency", latency)) if v is not None]
    if len(given) != 1:
        names = ", ".join("--{}{}".format(prefix, k) for k, _ in given) or "none"
        raise ConfigError("give exactly one pruning budget: --{0}flops, --{0}params or --{0}latency (got {1})".format(
            prefix, names))
    return given[0]


def options_from_cli(flops: Optional[float], params: Optional[float], latency: Optional[float],
                     importance: Optional[str], recover_epochs: Optional[int]) -> Optional["PruneOptions"]:
    """The `convert --prune-*` options as PruneOptions (None when no budget is given), checked now so that
    a bad value fails before any work."""
    from edgekit.convert.prune import PruneOptions  # lazy: edgekit.convert imports TensorFlow at once

    if flops is None and params is None and latency is None:
        if importance is not None or recover_epochs is not None:
            raise ConfigError("--prune-importance and --recover-epochs need a budget: --prune-flops, --prune-params "
                              "or --prune-latency")
        return None
    kind, fraction = _budget(flops, params, latency, "prune-")
    return PruneOptions(fraction=fraction, budget=kind, importance=importance or "l1",
                        recover_epochs=recover_epochs or 0).check()


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


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(dir_okay=False), help="Calibration data: .npz (x, y) or .npy.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The pruned model (.keras); its report goes beside it (.report.json).")
@click.option("--flops", type=float, default=None, help="Keep this fraction of the FLOPs, in (0, 1].")
@click.option("--params", type=float, default=None, help="Keep this fraction of the parameters, in (0, 1].")
@click.option("--latency", type=float, default=None, help="Keep this fraction of the measured layer latency, in (0, 1].")
@click.option("--importance", default="l1", show_default=True, help="l1, l2, bn_scale or activation.")
@click.option("--allocation", default="dp", show_default=True, help="dp (layer-adaptive) or uniform (the baseline).")
@click.option("--target", "-t", default=None, help="Board profile whose channel multiple to round to.")
@click.option("--channel-multiple", type=int, default=None, help="Round channel counts to this multiple (default: the target's, else 1).")
@click.option("--ratios", default=None, help="Pruning ratios at which distortion is measured (default 0.1,...,0.9).")
@click.option("--samples", type=int, default=256, show_default=True, help="Calibration samples used to rank channels.")
@click.option("--compensate/--no-compensate", default=True, show_default=True,
              help="Fold removed channels' mean contribution into the next layer's bias (or BatchNorm mean).")
@click.option("--recover", is_flag=True, help="Fine-tune the pruned model by distillation from the original.")
@click.option("--recover-epochs", type=int, default=None, help="Most recovery epochs (early stopping; default 30 with --recover).")
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False), default=None, help="Labelled data for accuracy before/after.")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune_cmd(model: str, calib: str, out: str, flops: Optional[float], params: Optional[float],
              latency: Optional[float], importance: str, allocation: str, target: Optional[str],
              channel_multiple: Optional[int], ratios: Optional[str], samples: int, compensate: bool, recover: bool,
              recover_epochs: Optional[int], eval_path: Optional[str], force: bool, as_json: bool) -> None:
    """Remove whole channels (layer-adaptive ratios under a FLOPs/params/latency budget)."""
    from edgekit.convert.load import load_model
    from edgekit.convert.prune import PruneOptions, prune
    from edgekit.convert.tf import tensorflow
    from edgekit.data import load_data
    from edgekit.targets import get_target

    kind, fraction = _budget(flops, params, latency, "")
    epochs = (DEFAULT_RECOVER_EPOCHS if recover_epochs is None else recover_epochs) if recover else (recover_epochs or 0)
    opts = PruneOptions(fraction=fraction, budget=kind, importance=importance, allocation=allocation,
                        ratios=_ratios(ratios), channel_multiple=channel_multiple, samples=samples,
                        recover_epochs=epochs, compensate=compensate).check()
    opts = opts.resolved(get_target(target) if target else None)
    _check_out(out, force)
    data = load_data(calib)
    held = load_data(eval_path) if eval_path else None
    tensorflow()
    keras_model = load_model(model)
    bar = StepBar("pruning")
    try:
        result = prune(keras_model, opts, data, progress=bar, eval_data=held)
    finally:
        bar.close()
    report = dict(result.report, model=model, output=out)
    write_outputs(result.model, report, out)
    if as_json:
        echo_json(report)
        return
    _groups_table(report)
    for line in summary_lines(report):
        click.echo(line)
    click.echo("wrote {} and {}".format(out, report_path(out)), file=sys.stderr)
