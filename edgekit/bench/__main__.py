"""On the board: python -m edgekit.bench BUNDLE DATA [--json] [--meter auto|NAME] [--profiles JSON] ...

Latency, energy and accuracy of early exit against full depth from one run (see edgekit/bench/run.py).
The energy profile (meter and power model) is the one the bundle's manifest carries, written at conversion
from its target; `--profiles` replaces it. Prints the same JSON object as `edgekit bench --json` (with the
raw per-call times, which the laptop turns into the report); exit code 2 with one line `edgekit: error: ...`
on bad input.
numpy + a TFLite interpreter only, Python 3.8 syntax.
"""
import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from edgekit.bench.energy import EnergyOptions, EnergyProfile, pick_profile, profile_from_manifest
from edgekit.bench.latency import Protocol, timed_runner
from edgekit.bench.meters import meter_names
from edgekit.bench.run import run_bench, text_lines
from edgekit.errors import ConfigError
from edgekit.runtime.entry import finish
from edgekit.runtime.interpreter import BACKENDS


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m edgekit.bench", description=__doc__.splitlines()[2])
    ap.add_argument("bundle")
    ap.add_argument("data", nargs="?", default=None, help=".npz with x (and optional y) or .npy")
    ap.add_argument("--data", dest="data_opt", default=None, help="the same as the DATA argument")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=200, help="steady-state calls per mode (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="discarded calls per mode (default 20)")
    ap.add_argument("--seconds", type=float, default=0.0, help="minimum steady-state time (default 0)")
    ap.add_argument("--meter", default="auto", help="one of: " + ", ".join(meter_names()))
    ap.add_argument("--usb-meter", default=None, help="serial device of an external USB power meter")
    ap.add_argument("--blocks", type=int, default=3, help="energy blocks per mode (default 3)")
    ap.add_argument("--block-seconds", type=float, default=1.0, help="seconds per energy block, >= 1 (default 1)")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="idle baseline seconds (default 2)")
    ap.add_argument("--profiles", default=None,
                    help='JSON {target: {energy_meter, power_model: {idle_w, active_w, source}}}, used instead of '
                         "the profile the bundle's manifest carries (its 'energy' section)")
    ap.add_argument("--interpreter", choices=BACKENDS, default=None)
    ap.add_argument("--threads", type=int, default=None)
    return ap


def _data_path(args: Any) -> str:
    if (args.data is None) == (args.data_opt is None):
        raise ConfigError("give the data file once, as DATA or --data DATA; got {}".format(
            "both" if args.data else "neither"))
    return args.data if args.data is not None else args.data_opt


def _profile(profiles: Optional[str], manifest: Any) -> Optional[EnergyProfile]:
    """The bundle target's energy profile: from --profiles when given, else the one the manifest carries; None
    when neither has one (then only real sensors can be used)."""
    if profiles is None:
        return profile_from_manifest(manifest)
    try:
        table = json.loads(profiles)
    except ValueError as exc:
        raise ConfigError("--profiles: not JSON ({}); allowed: a JSON object {{target: profile}}".format(exc))
    return pick_profile(table, manifest.target)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)

    def work() -> Dict[str, Any]:
        from edgekit.data import load_data

        protocol = Protocol(runs=args.runs, warmup=args.warmup, min_seconds=args.seconds).check()
        energy = EnergyOptions(meter=args.meter, usb_device=args.usb_meter, blocks=args.blocks,
                               block_seconds=args.block_seconds, idle_seconds=args.idle_seconds).check()
        data = load_data(_data_path(args))
        runner, init_ms = timed_runner(args.bundle, backend=args.interpreter, num_threads=args.threads)
        profile = _profile(args.profiles, runner.manifest)
        return run_bench(runner, data.x, data.y, protocol, energy, profile, init_ms=init_ms)

    return finish(work, args.json, lambda result: "\n".join(text_lines(result)))


if __name__ == "__main__":
    sys.exit(main())
