"""`edgekit convert`: a Keras or ONNX model to a per-stage TFLite bundle for a board.

Every check that needs no TensorFlow (target, precision, output, budgets, files, option combinations) runs
before TensorFlow is imported, so a typo is refused in a fraction of a second.
"""
import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import click

from edgekit.cli.app import command, option, require
from edgekit.cli.options import (ADAPTIVE, EXIT_PLACES, HEAD_TARGETS, OBJECTIVES, Choice, exit_rule_option,
                                 precisions, verbose_option)
from edgekit.cli.output import echo_json
from edgekit.cli.progress import running
from edgekit.cli.prune import prune_budget, prune_from_cli, prune_options, summary_lines
from edgekit.cli.text import threshold_lines
from edgekit.errors import ConfigError
from edgekit.rungs import LADDER

if TYPE_CHECKING:
    from edgekit.convert.exits import ExitOptions

EXAMPLE = """edgekit convert edgekit/assets/demo_digits.keras -t raspberry-pi-5 --calib calibration/digits_calib.npz -o out
edgekit convert backbone.keras -t host-x86_64 --calib calib.npz -o out --exits auto:3 --max-accuracy-drop 0.01"""


def _adaptive_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--tolerance", type=float, default=None,
                     help="adaptive: per layer the lowest rung whose KL (nats) at the exits is under this "
                          "(default 0.001)."),
        click.option("--size-budget", default=None,
                     help="adaptive: least loss within this bundle size (720000, 800K, 1.5M)."),
        click.option("--latency-budget", type=float, default=None,
                     help="adaptive: least loss within this full-depth latency (ms, batch 1, measured here)."),
        click.option("--rungs", default=None, help="adaptive: the rungs to use, of {} (float32 among them).".format(
            ",".join(LADDER))),
        click.option("--objective", type=Choice(OBJECTIVES, "objective"), default=None,
                     help="adaptive: latency (default: no slower than the fastest uniform precision, smallest size "
                          "at int8's accuracy), size (smallest, whatever the kernels cost) or accuracy (least loss "
                          "at that speed)."),
    ]):
        fn = opt(fn)
    return fn


def _exit_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--exits", default=None,
                     help="Attach exits to a single-output model: auto:N (at FLOPs or latency fractions: "
                          "--exit-placement) or layer names a,b "
                          "(cut after). ONNX: the names of the exit tensors in depth order (default: the graph "
                          "outputs)."),
        click.option("--exit-data", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="--exits: data to train the heads on (default: --calib); labels if present, else "
                          "distillation."),
        click.option("--head-epochs", type=click.IntRange(min=1), default=None,
                     help="--exits: most epochs per head (early stopping; 40)."),
        click.option("--head-target", type=Choice(HEAD_TARGETS, "head target"), default=None,
                     help="--exits: what the heads learn from (auto: labels when present, else distillation)."),
        click.option("--head-budget", type=float, default=None,
                     help="--exits: head FLOPs / its stage's FLOPs at most (0.1)."),
        click.option("--max-crossing", type=click.IntRange(min=1), default=None,
                     help="--exits: most tensors crossing a cut (1)."),
        click.option("--seed", type=int, default=None, help="--exits: seed for split, order, initialisation (0)."),
        click.option("--exit-placement", type=Choice(EXIT_PLACES, "exit placement"), default=None,
                     help="--exits auto:N: place the cuts at fractions of the FLOPs (default) or of the latency of "
                          "the backbone's prefixes, measured here at the converted precision."),
    ]):
        fn = opt(fn)
    return fn


def _threshold_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--threshold", default=0.9, show_default=True, type=float,
                     help="Confidence needed to exit early (without --max-accuracy-drop)."),
        click.option("--max-accuracy-drop", "max_drop", type=float, default=None,
                     help="Fit per-exit thresholds so accuracy stays within this drop of full depth (e.g. 0.01)."),
        click.option("--threshold-data", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Labelled held-out data to fit thresholds on (default: a held-out part of --calib)."),
        click.option("--holdout", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="A second split that reports the accuracy the fitted thresholds reach."),
        exit_rule_option("How an exit scores its confidence (default max_softmax)."),
    ]):
        fn = opt(fn)
    return fn


@command("convert", EXAMPLE)
@click.argument("model", type=click.Path())
@option("--target", "-t", required=True, help="Board profile name (see `edgekit targets`).")
@option("--calib", required=True, type=click.Path(exists=True, dir_okay=False),
        help="Calibration data: .npz (x, y) or .npy.")
@option("--out", "-o", required=True, type=click.Path(file_okay=False),
        help="Output directory; the bundle goes to OUT/<target>.")
@option("--precision", type=Choice(precisions(), "precision"), default=None,
        help="Precision of every stage, or adaptive (per layer, measured); default: the target's first.")
@_adaptive_options
@_threshold_options
@option("--force", is_flag=True, help="Replace an existing bundle.")
@option("--input-shape", default=None, help="ONNX: the input's sizes after the batch, in the model's own layout, "
        "e.g. 3,224,224 (needed when the model leaves them dynamic).")
@_exit_options
@prune_options(old_spellings=False)
@option("--json", "as_json", is_flag=True, help="Print the conversion report as JSON.")
@verbose_option
def convert_cmd(model: str, target: str, calib: str, out: str, precision: Optional[str],
                tolerance: Optional[float], size_budget: Optional[str], latency_budget: Optional[float],
                rungs: Optional[str], objective: Optional[str], threshold: float, max_drop: Optional[float],
                threshold_data: Optional[str], holdout: Optional[str], exit_rule: Optional[str], force: bool,
                input_shape: Optional[str], exits: Optional[str], exit_data: Optional[str],
                head_epochs: Optional[int], head_target: Optional[str], head_budget: Optional[float],
                max_crossing: Optional[int], seed: Optional[int], exit_placement: Optional[str],
                prune_flops: Optional[float],
                prune_params: Optional[float], prune_latency: Optional[float], prune_importance: Optional[str],
                recover: bool, recover_epochs: Optional[int], as_json: bool, verbose: bool) -> None:
    """Convert a Keras (.keras, SavedModel) or ONNX model into a per-stage TFLite bundle for a board: split at its
    exits (or at exits attached with --exits), optionally pruned, quantized, measured, thresholds fitted."""
    cheap_checks(model, target, out, force, precision, threshold, max_drop, threshold_data, holdout,
                 {"--tolerance": tolerance, "--size-budget": size_budget, "--latency-budget": latency_budget,
                  "--rungs": rungs, "--objective": objective})
    if prune_flops is None and prune_params is None and prune_latency is None:
        prune_from_cli(None, None, None, prune_importance, recover, recover_epochs)   # refuses them without a budget
    else:
        prune_budget(prune_flops, prune_params, prune_latency)
    require("tensorflow", *(("onnx2tf", "onnxruntime") if model.lower().endswith(".onnx") else ()))
    with running("convert", verbose) as progress:
        progress(0, 0, "load: TensorFlow")
        from edgekit.convert import ConvertOptions, convert  # imports TensorFlow
        from edgekit.convert.precision.ladder import parse_size

        prune = prune_from_cli(prune_flops, prune_params, prune_latency, prune_importance, recover, recover_epochs)
        opts = ConvertOptions(model, target, calib, out, precision, threshold, force, max_drop=max_drop,
                              threshold_data=threshold_data, holdout=holdout, exit_rule=exit_rule,
                              input_shape=sizes("--input-shape", input_shape), tolerance=tolerance,
                              latency_budget_ms=latency_budget,
                              size_budget=None if size_budget is None else parse_size(size_budget),
                              rungs=None if rungs is None else tuple(r.strip() for r in rungs.split(",")),
                              objective=objective,
                              exits=exit_options(exits, exit_data, head_epochs, head_target, head_budget,
                                                 max_crossing, seed, exit_placement), prune=prune)
        result = convert(opts, progress=progress)
    _print(result, as_json)


def cheap_checks(model: str, target: str, out: str, force: bool, precision: Optional[str], threshold: float,
                 max_drop: Optional[float], threshold_data: Optional[str], holdout: Optional[str],
                 adaptive: Dict[str, Any]) -> None:
    """What convert would refuse, checked before TensorFlow is imported (edgekit.convert imports it at once):
    the model file, the target, the precision on it, adaptive-only options, the threshold options, the output."""
    from edgekit.targets import get_target

    if not os.path.exists(model):
        raise ConfigError("model file not found: {}".format(model))
    board = get_target(target)
    chosen = precision or board.default_precision
    if chosen not in board.precisions + (ADAPTIVE,):
        raise ConfigError("precision {!r} is not supported on {}; allowed there: {}".format(
            chosen, board.name, ", ".join(board.precisions)))
    given = [flag for flag, v in adaptive.items() if v is not None]
    if given and precision != ADAPTIVE:
        raise ConfigError("{} only apply with --precision adaptive; got --precision {}".format(
            ", ".join(given), precision or "(the target's default)"))
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError("threshold {} is outside [0, 1]".format(threshold))
    if max_drop is None and (holdout or threshold_data):
        raise ConfigError("{} only apply to fitted thresholds: add --max-accuracy-drop DROP (without it every "
                          "exit uses --threshold {:g} and nothing is fitted)".format(
                              " and ".join(n for n, v in (("--threshold-data", threshold_data),
                                                          ("--holdout", holdout)) if v), threshold))
    bundle = os.path.join(out, board.name)
    if os.path.exists(bundle) and not force:
        raise ConfigError("bundle {} already exists; pass --force to replace it (nothing was written)".format(bundle))


def _print(result: Any, as_json: bool) -> None:
    report: Dict[str, Any] = result.report
    for note in report.get("notes", []):     # what did not apply (e.g. pruning an ONNX model)
        click.echo("edgekit: note: {}".format(note), err=True)
    for warning in report.get("thresholds", {}).get("warnings", []):
        click.echo("edgekit: warning: {}".format(warning), err=True)
    if as_json:
        echo_json(dict(report, bundle_dir=result.bundle_dir))
        return
    packed = [s for s in result.manifest.stages if s.packed is not None]
    loaded = report["bundle_size_bytes"] + sum(s.packed.size_bytes - s.size_bytes for s in packed)
    click.echo("bundle {} ({} stages, {}, {:.1f} KiB{})".format(
        result.bundle_dir, len(result.manifest.stages), report["precision"], report["bundle_size_bytes"] / 1024.0,
        " on disk, 4-bit convolution weights nibble-packed; {:.1f} KiB in memory after load".format(loaded / 1024.0)
        if packed else ""))
    measured = [st.get("calib_accuracy_tflite") for st in report.get("stages", ())]
    if measured and None not in measured:
        click.echo("accuracy of each exit alone on {} ({} samples, TFLite): {}".format(
            report["calibration"]["path"], report["calibration"]["samples"],
            " ".join("{:.2%}".format(a) for a in measured)))
    for line in threshold_lines(report):
        click.echo(line)
    for line in (report.get("precision_plan") or {}).get("summary", ()):
        click.echo(line)
    if "exits" in report:
        from edgekit.convert.exits import exits_table

        click.echo(exits_table(report["exits"]))
    for line in summary_lines(report["prune"]) if "prune" in report else ():
        click.echo(line)


def exit_options(spec: Optional[str], data: Optional[str], epochs: Optional[int], target: Optional[str],
                 head_budget: Optional[float], max_crossing: Optional[int],
                 seed: Optional[int], place: Optional[str] = None) -> Optional["ExitOptions"]:
    """convert's --exits and head-training options as ExitOptions (None without --exits); a head-training option
    given without --exits is an error, not ignored. An option left out keeps the ExitOptions default."""
    from edgekit.convert.exits import ExitOptions, parse_exits

    given = {"--exit-data": data, "--head-epochs": epochs, "--head-target": target, "--head-budget": head_budget,
             "--max-crossing": max_crossing, "--seed": seed, "--exit-placement": place}
    if spec is None:
        named = sorted(k for k, v in given.items() if v is not None)
        if named:
            raise ConfigError("{} given without --exits; head-training options need --exits auto:N or "
                              "--exits layerA,layerB".format(", ".join(named)))
        return None
    auto, layers = parse_exits(spec)
    d = ExitOptions()
    return ExitOptions(auto=auto, layers=layers, data_path=data,
                       epochs=d.epochs if epochs is None else epochs, seed=d.seed if seed is None else seed,
                       max_crossing=d.max_crossing if max_crossing is None else max_crossing,
                       head_budget=d.head_budget if head_budget is None else head_budget,
                       target=d.target if target is None else target,
                       place=d.place if place is None else place).check()


def sizes(option_name: str, text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """'3,224,224' -> (3, 224, 224)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError("{} {!r}: allowed positive integers separated by commas, e.g. 3,224,224".format(
            option_name, text))
    return tuple(int(p) for p in parts)
