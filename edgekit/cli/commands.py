"""`edgekit targets`, `convert`, `calibrate`, `inspect` and `demo`: making bundles and looking into them."""
import json
import os
from typing import TYPE_CHECKING, Any, Optional, Tuple

import click

from edgekit.cli.output import StepBar, echo_json, echo_table
from edgekit.cli.prune import options_from_cli, summary_lines
from edgekit.cli.text import precision_lines, threshold_lines
from edgekit.errors import ConfigError
from edgekit.rungs import LADDER, PRECISIONS

if TYPE_CHECKING:
    from edgekit.convert.exits import ExitOptions


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {targets: [profile, ...]}.")
def targets_cmd(as_json: bool) -> None:
    """List the board profiles in targets/."""
    from edgekit.targets import list_targets

    profiles = list_targets()
    if as_json:
        echo_json({"targets": [t.to_dict() for t in profiles]})
        return
    rows = [(t.name, t.arch, str(t.cores), t.runtime_package, ",".join(t.precisions), t.energy_meter)
            for t in profiles]
    echo_table(("target", "arch", "cores", "runtime", "precisions (preferred first)", "energy"), rows)


@click.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", required=True, help="Board profile name (see `edgekit targets`).")
@click.option("--calib", required=True, type=click.Path(dir_okay=False), help="Calibration data: .npz (x, y) or .npy.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory; the bundle goes to OUT/<target>.")
@click.option("--precision", default=None,
              help="{} or adaptive (default: the target's first).".format(", ".join(PRECISIONS)))
@click.option("--tolerance", type=float, default=None,
              help="adaptive: per layer the lowest rung whose KL (nats) at the exits is under this (default 0.001).")
@click.option("--size-budget", default=None, help="adaptive: least loss within this bundle size (720000, 800K, 1.5M).")
@click.option("--latency-budget", type=float, default=None,
              help="adaptive: least loss within this full-depth latency (ms, batch 1, measured here).")
@click.option("--rungs", default=None, help="adaptive: the rungs to use, of {} (float32 among them).".format(
    ",".join(LADDER)))
@click.option("--objective", default=None,
              help="adaptive: latency (default: no slower than the fastest uniform precision, smallest size at "
                   "int8's accuracy), size (smallest, whatever the kernels cost) or accuracy (least loss at that "
                   "speed).")
@click.option("--threshold", default=0.9, show_default=True, type=float, help="Softmax confidence needed to exit early.")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--input-shape", default=None, help="ONNX: the input's sizes after the batch, in the model's own "
              "layout, e.g. 3,224,224 (needed when the model leaves them dynamic).")
@click.option("--max-accuracy-drop", "max_drop", type=float, default=None,
              help="Fit per-exit thresholds so accuracy stays within this drop of full depth (e.g. 0.01).")
@click.option("--threshold-data", type=click.Path(dir_okay=False), default=None,
              help="Labelled held-out data to fit thresholds on (default: --calib).")
@click.option("--holdout", type=click.Path(dir_okay=False), default=None,
              help="A second split that reports the accuracy the fitted thresholds reach.")
@click.option("--exit-rule", default=None, help="max_softmax (default), entropy, margin or learned.")
@click.option("--exits", default=None,
              help="Attach exits to a single-output model: auto:N (at FLOPs fractions) or layer names a,b (cut after). "
                   "ONNX: the names of the exit tensors in depth order (default: the graph outputs).")
@click.option("--exit-data", type=click.Path(dir_okay=False), default=None,
              help="--exits: data to train the heads on (default: --calib); labels if present, else distillation.")
@click.option("--head-epochs", type=int, default=None, help="--exits: most epochs per head (early stopping; 40).")
@click.option("--head-target", default=None, help="--exits: auto (default), labels or distill.")
@click.option("--head-budget", type=float, default=None, help="--exits: head FLOPs / its stage's FLOPs at most (0.1).")
@click.option("--max-crossing", type=int, default=None, help="--exits: most tensors crossing a cut (1).")
@click.option("--seed", type=int, default=None, help="--exits: seed for split, order, initialisation (0).")
@click.option("--prune-flops", type=float, default=None, help="Prune whole channels to this FLOPs fraction (0, 1] before splitting.")
@click.option("--prune-params", type=float, default=None, help="Prune whole channels to this parameter fraction (0, 1].")
@click.option("--prune-latency", type=float, default=None, help="Prune whole channels to this fraction of the measured layer latency.")
@click.option("--prune-importance", default=None, help="--prune-*: l1 (default), l2, bn_scale or activation.")
@click.option("--recover-epochs", type=int, default=None, help="--prune-*: distillation fine-tune epochs (0, default: none).")
@click.option("--json", "as_json", is_flag=True, help="Print the conversion report as JSON.")
def convert_cmd(model: str, target: str, calib: str, out: str, precision: Optional[str], threshold: float,
                force: bool, input_shape: Optional[str], max_drop: Optional[float], threshold_data: Optional[str],
                holdout: Optional[str],
                exit_rule: Optional[str], as_json: bool, tolerance: Optional[float] = None,
                size_budget: Optional[str] = None, latency_budget: Optional[float] = None,
                rungs: Optional[str] = None, objective: Optional[str] = None, exits: Optional[str] = None,
                exit_data: Optional[str] = None,
                head_epochs: Optional[int] = None, head_target: Optional[str] = None,
                head_budget: Optional[float] = None, max_crossing: Optional[int] = None,
                seed: Optional[int] = None, prune_flops: Optional[float] = None,
                prune_params: Optional[float] = None, prune_latency: Optional[float] = None,
                prune_importance: Optional[str] = None, recover_epochs: Optional[int] = None) -> None:
    """Convert a multi-exit Keras model into a per-stage TFLite bundle for a board."""
    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.exits import exits_table
    from edgekit.convert.precision.ladder import parse_size

    bar = StepBar("converting")
    try:
        result = convert(ConvertOptions(model, target, calib, out, precision, threshold, force, max_drop=max_drop,
                                        threshold_data=threshold_data, holdout=holdout, exit_rule=exit_rule,
                                        input_shape=_sizes("--input-shape", input_shape),
                                        tolerance=tolerance, latency_budget_ms=latency_budget,
                                        size_budget=None if size_budget is None else parse_size(size_budget),
                                        rungs=None if rungs is None else tuple(r.strip() for r in rungs.split(",")),
                                        objective=objective,
                                        exits=exit_options(exits, exit_data, head_epochs, head_target,
                                                           head_budget, max_crossing, seed),
                                        prune=options_from_cli(prune_flops, prune_params, prune_latency,
                                                               prune_importance, recover_epochs)),
                         progress=bar)
    finally:
        bar.close()
    for note in result.report.get("notes", []):     # what did not apply (e.g. pruning an ONNX model)
        click.echo("edgekit: note: {}".format(note), err=True)
    if as_json:
        echo_json(dict(result.report, bundle_dir=result.bundle_dir))
        return
    click.echo("bundle {} ({} stages, {}, {:.1f} KiB)".format(
        result.bundle_dir, len(result.manifest.stages), result.report["precision"],
        result.report["bundle_size_bytes"] / 1024.0))
    for line in threshold_lines(result.report):
        click.echo(line)
    for warning in result.report.get("thresholds", {}).get("warnings", []):
        click.echo("edgekit: warning: {}".format(warning), err=True)
    for line in (result.report.get("precision_plan") or {}).get("summary", ()):
        click.echo(line)
    if "exits" in result.report:
        click.echo(exits_table(result.report["exits"]))
    for line in summary_lines(result.report["prune"]) if "prune" in result.report else ():
        click.echo(line)


@click.command("calibrate")
@click.argument("bundle", type=click.Path())
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Held-out data (x, y) to fit on (default: the data and part the thresholds were last fitted on).")
@click.option("--held-out", is_flag=True, help="Fit on the held-out quarter of --data (as convert does with --calib).")
@click.option("--max-accuracy-drop", "max_drop", required=True, type=float,
              help="Allowed accuracy loss against full depth, in [0, 1] (0.01 = one point).")
@click.option("--holdout", type=click.Path(dir_okay=False), default=None,
              help="A second split: reports the accuracy the fitted thresholds actually reach.")
@click.option("--rule", default=None, help="Exit rule for every exit: max_softmax, entropy, margin, learned.")
@click.option("--objective", default="auto", show_default=True,
              help="accuracy (needs labels), agreement (with the last exit) or auto.")
@click.option("--margin-z", default=2.0, show_default=True, type=float,
              help="Safety margin on the accuracy constraint, in standard errors.")
@click.option("--threads", type=int, default=None,
              help="Fit on the stage costs measured at this thread count (edgekit profile) and run at it.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def calibrate_cmd(bundle: str, data: Optional[str], held_out: bool, max_drop: float, holdout: Optional[str],
                  rule: Optional[str], objective: str, margin_z: float, threads: Optional[int], as_json: bool) -> None:
    """Fit per-exit thresholds for least expected latency within an accuracy drop (on the bundle's stage costs, e.g.
    measured on the board by `edgekit profile`); rewrites the bundle."""
    from edgekit.convert.threshold_fit import CalibrateOptions, calibrate, fitted_on

    data, part = fitted_on(bundle, data, held_out)
    section = calibrate(CalibrateOptions(bundle, data, max_drop, holdout, rule, objective, margin_z, threads,
                                         part))
    for warning in section.get("warnings", []):
        click.echo("edgekit: warning: {}".format(warning), err=True)
    if as_json:
        echo_json(section)
        return
    fit = section["fit"]
    rows = [(name, "{:.2%}".format(p["accuracy"]), "{:.4f}".format(p["cost_ms"]),
             " ".join("never" if t >= 1e9 else "{:.3f}".format(t) for t in p["thresholds"]),
             " ".join("{:.0%}".format(f) for f in p["exit_fractions"]))
            for name, p in (("fitted", fit["chosen"]), ("full depth", fit["full_depth"]))]
    if "holdout" in section:
        p = section["holdout"]["reached"]
        rows.append(("holdout", "{:.2%}".format(p["accuracy"]), "{:.4f}".format(p["cost_ms"]), "",
                     " ".join("{:.0%}".format(f) for f in p["exit_fractions"])))
    echo_table(("operating point", "accuracy", "expected ms", "thresholds", "exits"), rows)
    click.echo("expected cost vs oracle: {:.2f}x (oracle {:.4f} ms)".format(
        fit["chosen_vs_oracle_cost"], fit["oracle_cost_ms"]))


@click.command("inspect")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (and report) as JSON.")
@click.option("--ops", is_flag=True, help="Also time each operator of each stage here (ops cut out one by one).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--ops: run its first sample (default: zeros).")
def inspect_cmd(bundle: str, as_json: bool, ops: bool, data: Optional[str]) -> None:
    """Show a bundle's stages, tensors, exits and sizes (checksums verified)."""
    from edgekit.manifest import REPORT_NAME, load_bundle

    m = load_bundle(bundle)
    if ops and not as_json:
        _ops_tables(bundle, data)
    if as_json:
        d = m.to_dict()
        rp = os.path.join(bundle, REPORT_NAME)
        if os.path.isfile(rp):
            with open(rp, "r", encoding="utf-8") as f:
                d["report"] = json.load(f)
        echo_json(d)
        return
    click.echo("{}  target {}  bundle id {}  input {} {}".format(
        m.model_name, m.target, m.bundle_id, m.input.name, list(m.input.shape)))
    rows = [(str(s.index), s.file, s.precision, ",".join(t.name for t in s.inputs),
             ",".join(t.name if t.dtype == "float32" else "{} ({})".format(t.name, t.dtype) for t in s.carried) or "-",
             s.exit.name, "{:.3f}".format(s.exit.threshold),
             "{:.2f}M".format(s.flops / 1e6), "{:.1f}K".format(s.size_bytes / 1024.0),
             "-" if s.latency_ms is None else "{:.3f}".format(s.latency_ms)) for s in m.stages]
    echo_table(("stage", "file", "precision", "inputs", "carried", "exit", "threshold", "FLOPs", "size", "ms"), rows)
    for line in precision_lines(bundle):
        click.echo(line)


def _ops_tables(bundle: str, data: Optional[str]) -> None:
    import numpy as np

    from edgekit.bench.ops import ops_table, profile_ops
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner

    runner = EarlyExitRunner(bundle)
    x = load_data(data).x[:1] if data else np.zeros((1,) + tuple(runner.manifest.input.shape[1:]), np.float32)
    click.echo(ops_table(profile_ops(runner, x)))
    click.echo()


@click.command("demo")
@click.option("--target", "-t", default="host-x86_64", show_default=True, help="Board profile to convert for.")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False), help="Keep the bundle here (default: a temporary directory).")
@click.option("--runs", default=300, show_default=True, type=int, help="Timed calls per mode.")
def demo_cmd(target: str, out: Optional[str], runs: int) -> None:
    """Convert the shipped demo model, run it on the digits test split and time early exit."""
    from edgekit.cli.demo_run import run_demo

    bar = StepBar("converting demo")
    try:
        summary = run_demo(target, out, runs, progress=bar)
    finally:
        bar.close()
    echo_table(("target", "precision", "accuracy (early exit)", "accuracy (full depth)", "bundle size",
            "mean ms (early exit)", "mean ms (full depth)", "speedup", "exits"), [(
        summary["target"], summary["precision"], _pct(summary["accuracy_early_exit"]),
        _pct(summary["accuracy_full_depth"]), "{:.1f} KiB".format(summary["bundle_size_bytes"] / 1024.0),
        "{:.3f}".format(summary["mean_ms_early_exit"]), "{:.3f}".format(summary["mean_ms_full_depth"]),
        "{:.2f}x".format(summary["speedup"]), str(summary["exit_histogram"]))])
    click.echo("exit thresholds (max softmax) fitted on a held-out part of the calib split for at most 1 point of "
               "accuracy lost: {}"
               .format(", ".join("{:.3f}".format(t) for t in summary["thresholds"])))
    click.echo("bundle: {}".format(summary["bundle_dir"]))


def exit_options(spec: Optional[str], data: Optional[str], epochs: Optional[int], target: Optional[str],
                 head_budget: Optional[float], max_crossing: Optional[int],
                 seed: Optional[int]) -> Optional["ExitOptions"]:
    """convert's --exits and head-training options as ExitOptions (None without --exits); a head-training option
    given without --exits is an error, not ignored. An option left out keeps the ExitOptions default."""
    from edgekit.convert.exits import ExitOptions, parse_exits

    given = {"--exit-data": data, "--head-epochs": epochs, "--head-target": target, "--head-budget": head_budget,
             "--max-crossing": max_crossing, "--seed": seed}
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
                       target=d.target if target is None else target).check()


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else "{:.2%}".format(v)


def _sizes(option: str, text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """'3,224,224' -> (3, 224, 224)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError("{} {!r}: allowed positive integers separated by commas, e.g. 3,224,224".format(option, text))
    return tuple(int(p) for p in parts)
