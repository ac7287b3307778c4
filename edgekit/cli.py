"""The edgekit command line. Each command parses, calls one library function, prints.

Every EdgekitError becomes one line on stderr and exit code 2; heavy imports happen inside commands.
"""
import json
import os
import sys
from typing import Any, Optional

import click

from edgekit.errors import EdgekitError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo("edgekit: error: {}".format(exc), err=True)
            sys.exit(2)


def echo_json(obj: Any) -> None:
    """--json prints one JSON object on stdout and nothing else there."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@click.group(cls=_Group)
@click.version_option(package_name="edgekit")
def main() -> None:
    """Convert, flash, run and benchmark dynamic (early-exit) networks on edge boards."""


@main.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def targets_cmd(as_json: bool) -> None:
    """List the board profiles in targets/."""
    from edgekit.targets import list_targets

    profiles = list_targets()
    if as_json:
        echo_json([t.to_dict() for t in profiles])
        return
    rows = [(t.name, t.arch, str(t.cores), t.runtime_package, ",".join(t.precisions), t.energy_meter)
            for t in profiles]
    _table(("target", "arch", "cores", "runtime", "precisions (preferred first)", "energy"), rows)


def _table(header: Any, rows: Any, out: Optional[Any] = None) -> None:
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    click.echo(line.format(*header), file=out)
    click.echo(line.format(*("-" * w for w in widths)), file=out)
    for r in rows:
        click.echo(line.format(*r), file=out)


class _StepBar:
    """A progress bar on stderr for convert's steps (stdout stays clean for --json)."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.done = label, None, 0

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         item_show_func=lambda s: s, show_eta=False)
            self.bar.__enter__()
        self.bar.update(done - self.done, what)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@main.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", required=True, help="Board profile name (see `edgekit targets`).")
@click.option("--calib", required=True, type=click.Path(dir_okay=False), help="Calibration data: .npz (x, y) or .npy.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory; the bundle goes to OUT/<target>.")
@click.option("--precision", default=None, help="float32, float16, int8 or int16x8 (default: the target's first).")
@click.option("--threshold", default=0.9, show_default=True, type=float, help="Softmax confidence needed to exit early.")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print the conversion report as JSON.")
def convert_cmd(model: str, target: str, calib: str, out: str, precision: Optional[str], threshold: float,
                force: bool, as_json: bool) -> None:
    """Convert a multi-exit Keras model into a per-stage TFLite bundle for a board."""
    from edgekit.convert import ConvertOptions, convert

    bar = _StepBar("converting")
    try:
        result = convert(ConvertOptions(model, target, calib, out, precision, threshold, force), progress=bar)
    finally:
        bar.close()
    if as_json:
        echo_json(dict(result.report, bundle_dir=result.bundle_dir))
        return
    click.echo("bundle {} ({} stages, {}, {:.1f} KiB)".format(
        result.bundle_dir, len(result.manifest.stages), result.report["precision"],
        result.report["bundle_size_bytes"] / 1024.0))


@main.command("inspect")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (and report) as JSON.")
def inspect_cmd(bundle: str, as_json: bool) -> None:
    """Show a bundle's stages, tensors, exits and sizes (checksums verified)."""
    from edgekit.manifest import REPORT_NAME, load_bundle

    m = load_bundle(bundle)
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
             ",".join(t.name for t in s.carried) or "-", s.exit.name, "{:.3f}".format(s.exit.threshold),
             "{:.2f}M".format(s.flops / 1e6), "{:.1f}K".format(s.size_bytes / 1024.0),
             "-" if s.latency_ms is None else "{:.3f}".format(s.latency_ms)) for s in m.stages]
    _table(("stage", "file", "precision", "inputs", "carried", "exit", "threshold", "FLOPs", "size", "ms"), rows)


@main.command("run")
@click.argument("bundle", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--full-depth", is_flag=True, help="Run every stage for every sample.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def run_cmd(bundle: str, data: str, full_depth: bool, as_json: bool) -> None:
    """Run a bundle on DATA with early exit: predictions, exits, accuracy (when labelled)."""
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate

    runner = EarlyExitRunner(bundle)
    ds = load_data(data)
    result = evaluate(runner, ds.x, ds.y, full_depth=full_depth)
    if as_json:
        echo_json(result)
        return
    acc = "n/a (no labels)" if result["accuracy"] is None else "{:.2%}".format(result["accuracy"])
    click.echo("{} samples  accuracy {}  exit histogram {}  ({})".format(
        len(result["exits"]), acc, result["exit_histogram"], "; ".join(runner.delegate_status)))


@main.command("bench")
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Inputs (and labels) to time.")
@click.option("--runs", default=200, show_default=True, type=int, help="Steady-state calls per mode.")
@click.option("--warmup", default=20, show_default=True, type=int, help="Discarded calls per mode.")
@click.option("--seconds", default=0.0, show_default=True, type=float, help="Minimum steady-state time.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_cmd(bundle: str, data: str, runs: int, warmup: int, seconds: float, as_json: bool) -> None:
    """Latency with early exit against full depth, interleaved in one run (batch 1)."""
    from edgekit.bench.latency import Protocol, bench
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner

    protocol = Protocol(runs=runs, warmup=warmup, min_seconds=seconds).check()
    runner = EarlyExitRunner(bundle)
    ds = load_data(data)
    result = bench(runner, ds.x, ds.y, protocol)
    if as_json:
        result.pop("raw_ms")
        echo_json(result)
        return
    rows = []
    for mode in ("early_exit", "full_depth"):
        r = result[mode]
        lat = r["latency_ms"]
        rows.append((mode, _pct(r["accuracy"]), "{:.3f}".format(lat["mean"]), "{:.3f}".format(lat["p50"]),
                     "{:.3f}".format(lat["p90"]), "{:.3f}".format(lat["p99"]), str(r["exit_histogram"])))
    _table(("mode", "accuracy", "mean ms", "p50", "p90", "p99", "exits"), rows)
    click.echo("speedup (full-depth mean / early-exit mean): {:.2f}x".format(result["speedup"]))


@main.command("demo")
@click.option("--target", "-t", default="host-x86_64", show_default=True, help="Board profile to convert for.")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False), help="Keep the bundle here (default: a temporary directory).")
@click.option("--runs", default=300, show_default=True, type=int, help="Timed calls per mode.")
def demo_cmd(target: str, out: Optional[str], runs: int) -> None:
    """Convert the shipped demo model, run it on the digits test split and time early exit."""
    from edgekit.demo import run_demo

    bar = _StepBar("converting demo")
    try:
        summary = run_demo(target, out, runs, progress=bar)
    finally:
        bar.close()
    _table(("target", "precision", "accuracy (early exit)", "accuracy (full depth)", "bundle size",
            "mean ms (early exit)", "mean ms (full depth)", "speedup", "exits"), [(
        summary["target"], summary["precision"], _pct(summary["accuracy_early_exit"]),
        _pct(summary["accuracy_full_depth"]), "{:.1f} KiB".format(summary["bundle_size_bytes"] / 1024.0),
        "{:.3f}".format(summary["mean_ms_early_exit"]), "{:.3f}".format(summary["mean_ms_full_depth"]),
        "{:.2f}x".format(summary["speedup"]), str(summary["exit_histogram"]))])
    click.echo("bundle: {}".format(summary["bundle_dir"]))


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else "{:.2%}".format(v)


from edgekit.deploy.cli import flash as _flash_cmd  # noqa: E402  (issue 8; local so deploy stays optional)
main.add_command(_flash_cmd)


if __name__ == "__main__":
    main()
