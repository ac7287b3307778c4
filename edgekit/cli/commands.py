"""`edgekit targets`, `convert`, `calibrate`, `inspect` and `demo`: making bundles and looking into them."""
import json
import os
from typing import Any, Dict, List, Optional

import click

from edgekit.cli.app import command, option, require
from edgekit.cli.checks import range_warning
from edgekit.cli.options import FIT_OBJECTIVES, Choice, exit_rule_option, runtime_options, verbose_option
from edgekit.cli.output import echo_json, echo_table
from edgekit.cli.progress import running
from edgekit.cli.text import precision_lines, threshold_text


@command("targets", "edgekit targets\nedgekit targets --json")
@option("--json", "as_json", is_flag=True, help="Print one JSON object {targets: [profile, ...]}.")
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


@command("calibrate", "edgekit calibrate out/raspberry-pi-5 --data calibration/digits_calib.npz --held-out "
                      "--max-accuracy-drop 0.01")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@option("--data", default=None, type=click.Path(exists=True, dir_okay=False),
        help="Held-out data (x, y) to fit on (default: the data and part the thresholds were last fitted on).")
@option("--held-out", is_flag=True, help="Fit on the held-out quarter of --data (as convert does with --calib).")
@option("--max-accuracy-drop", "max_drop", required=True, type=float,
        help="Allowed accuracy loss against full depth, in [0, 1] (0.01 = one point).")
@option("--holdout", type=click.Path(exists=True, dir_okay=False), default=None,
        help="A second split: reports the accuracy the fitted thresholds actually reach.")
@exit_rule_option("Exit rule for every exit (default: each exit's own).")
@option("--objective", type=Choice(FIT_OBJECTIVES, "objective"), default="auto", show_default=True,
        help="accuracy (needs labels), agreement (with the last exit) or auto (accuracy when labelled).")
@option("--margin-z", default=2.0, show_default=True, type=float,
        help="Safety margin on the accuracy constraint, in standard errors.")
@option("--threads", type=int, default=None,
        help="Fit on the stage costs measured at this thread count (edgekit profile) and run at it.")
@option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
@verbose_option
def calibrate_cmd(bundle: str, data: Optional[str], held_out: bool, max_drop: float, holdout: Optional[str],
                  exit_rule: Optional[str], objective: str, margin_z: float, threads: Optional[int], as_json: bool,
                  verbose: bool) -> None:
    """Fit per-exit thresholds for least expected latency within an accuracy drop (on the bundle's stage costs, e.g.
    measured on the board by `edgekit profile`); rewrites the bundle."""
    from edgekit.fit.threshold_fit import CalibrateOptions, calibrate, fitted_on

    data, part = fitted_on(bundle, data, held_out)
    for warning in filter(None, [range_warning(bundle, data)]):
        click.echo("edgekit: warning: {}".format(warning), err=True)
    with running("calibrate", verbose) as progress:
        progress(0, 0, "thresholds: fitting on {}".format(data))
        section = calibrate(CalibrateOptions(bundle, data, max_drop, holdout, exit_rule, objective, margin_z,
                                             threads, part))
    for warning in section.get("warnings", []) + _agreement_warning(section):
        click.echo("edgekit: warning: {}".format(warning), err=True)
    if as_json:
        echo_json(section)
        return
    _fit_table(section)


def _agreement_warning(section: Dict[str, Any]) -> list:
    if section.get("objective") != "agreement":
        return []
    return ["{} has no labels: the thresholds keep agreement with the last exit within {:g} (not accuracy); the "
            "bundle was rewritten with them".format(section.get("data"), section.get("max_accuracy_drop"))]


def _fit_table(section: Dict[str, Any]) -> None:
    fit = section["fit"]
    rows = [(name, "{:.2%}".format(p["accuracy"]), "{:.4f}".format(p["cost_ms"]), threshold_text(p["thresholds"]),
             " ".join("{:.0%}".format(f) for f in p["exit_fractions"]))
            for name, p in (("fitted", fit["chosen"]), ("full depth", fit["full_depth"]))]
    if "holdout" in section:
        p = section["holdout"]["reached"]
        rows.append(("holdout", "{:.2%}".format(p["accuracy"]), "{:.4f}".format(p["cost_ms"]), "",
                     " ".join("{:.0%}".format(f) for f in p["exit_fractions"])))
    echo_table(("operating point", section.get("objective", "accuracy"), "expected ms", "thresholds", "exits"), rows)
    click.echo("expected cost vs oracle: {:.2f}x (oracle {:.4f} ms)".format(
        fit["chosen_vs_oracle_cost"], fit["oracle_cost_ms"]))


@command("inspect", "edgekit inspect out/raspberry-pi-5\nedgekit inspect out/raspberry-pi-5 --ops")
@click.argument("bundle", type=click.Path())
@option("--json", "as_json", is_flag=True, help="Print the manifest (and report) as JSON.")
@option("--ops", is_flag=True, help="Also time each operator of each stage here (ops cut out one by one).")
@option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
        help="--ops: run its first sample (default: zeros).")
@runtime_options()
def inspect_cmd(bundle: str, as_json: bool, ops: bool, data: Optional[str], threads: Optional[int],
                interpreter: Optional[str], max_batch: Optional[int]) -> None:
    """Show a bundle's stages, tensors, exits and sizes (checksums verified)."""
    from edgekit.manifest import REPORT_NAME, load_bundle

    m = load_bundle(bundle)
    if ops and not as_json:
        _ops_tables(bundle, data, threads, interpreter, max_batch)
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
             s.exit.name, threshold_text([s.exit.threshold]),
             "{:.2f}M".format(s.flops / 1e6), "{:.1f}K".format(s.size_bytes / 1024.0),
             "-" if s.latency_ms is None else "{:.3f}".format(s.latency_ms)) for s in m.stages]
    echo_table(("stage", "file", "precision", "inputs", "carried", "exit", "threshold", "FLOPs", "size", "ms"), rows)
    for line in packed_lines(bundle, m):
        click.echo(line)
    for line in precision_lines(bundle):
        click.echo(line)


def packed_lines(bundle: str, m) -> List[str]:
    """One line per stage file that stores 4-bit weights packed, each restored and checked (runtime/guard.py)."""
    from edgekit.runtime.guard import stage_bytes

    out = []
    for s in m.stages:
        if s.packed is None:
            continue
        model = stage_bytes(bundle, s)
        out.append("stage {}: {} stores {} 4-bit convolution filter(s) nibble-packed: {:.1f}K on disk, restored at "
                   "load to the int8 model the interpreter runs ({:.1f}K in memory, sha256 checked)".format(
                       s.index, s.file, len(s.packed.regions), s.size_bytes / 1024.0, len(model) / 1024.0))
    return out


def _ops_tables(bundle: str, data: Optional[str], threads: Optional[int], interpreter: Optional[str],
                max_batch: Optional[int]) -> None:
    import numpy as np

    from edgekit.bench.ops import ops_table, profile_ops
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner

    runner = EarlyExitRunner(bundle, backend=interpreter, num_threads=threads, max_batch=max_batch)
    x = load_data(data).x[:1] if data else np.zeros((1,) + tuple(runner.manifest.input.shape[1:]), np.float32)
    click.echo(ops_table(profile_ops(runner, x)))
    click.echo()


@command("demo", "edgekit demo\nedgekit demo -t raspberry-pi-5 -o out-demo --runs 100")
@option("--target", "-t", default="host-x86_64", show_default=True, help="Board profile to convert for.")
@option("--out", "-o", default=None, type=click.Path(file_okay=False),
        help="Keep the bundle here (default: a temporary directory).")
@option("--runs", default=300, show_default=True, type=click.IntRange(min=1), help="Timed calls per mode.")
@verbose_option
def demo_cmd(target: str, out: Optional[str], runs: int, verbose: bool) -> None:
    """Convert the shipped demo model, run it on the digits test split and time early exit."""
    from edgekit.cli.demo_run import run_demo
    from edgekit.targets import get_target

    get_target(target)                       # an unknown target is refused before TensorFlow loads
    require("tensorflow")
    with running("demo", verbose) as progress:
        summary = run_demo(target, out, runs, progress=progress)
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


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else "{:.2%}".format(v)
