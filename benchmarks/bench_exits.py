"""Attached exits on a plain single-exit CNN: mean latency with early exit against full depth.

Takes the shipped digits CNN (edgekit/assets/digits_cnn.keras, one output, no exits of its own), runs
`convert --exits auto:3` for the host at int8 (heads trained on digits_calib with the backbone frozen,
thresholds fitted on digits_val for at most 1 point accuracy drop), then on digits_test measures accuracy
and batch-1 latency of early exit and full depth, interleaved (edgekit.bench.latency). For comparison it also
picks the lowest single confidence threshold that keeps val accuracy within 1 point.
Goal: >= 1.8x lower mean latency at <= 1 point test accuracy drop.

    python benchmarks/bench_exits.py [--runs 3000] [--full] [--json OUT]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.bench.latency import Protocol, bench  # noqa: E402
from edgekit.convert import ConvertOptions, convert  # noqa: E402
from edgekit.convert.exits import ExitOptions, exits_table, parse_exits  # noqa: E402
from edgekit.data import load_data  # noqa: E402
from edgekit.models.demo import CALIB_DIR  # noqa: E402
from edgekit.models.digits_cnn import ASSET  # noqa: E402
from edgekit.runtime import EarlyExitRunner, evaluate  # noqa: E402

GOAL_SPEEDUP, GOAL_DROP = 1.8, 0.01
SPLIT = {s: os.path.join(CALIB_DIR, "digits_{}.npz".format(s)) for s in ("calib", "val", "test")}


def single_threshold(runner, val, full_acc):
    """The lowest confidence threshold, the same at every exit, whose val accuracy is within GOAL_DROP."""
    for t in np.round(np.arange(0.30, 1.0001, 0.01), 4):
        ths = [float(t)] * (runner.num_stages - 1) + [0.0]
        preds = np.concatenate([runner.run(val.x[i:i + 64], thresholds=ths).predictions
                                for i in range(0, len(val.x), 64)])
        if float(np.mean(preds == val.y)) >= full_acc - GOAL_DROP:
            return ths
    return [2.0] * (runner.num_stages - 1) + [0.0]


class FixedThresholds:
    """A runner whose thresholds are the given ones instead of the manifest's (for bench and evaluate)."""

    def __init__(self, runner, thresholds):
        self._runner, self._ths = runner, list(thresholds)

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def thresholds(self):
        return list(self._ths)

    def run(self, x, full_depth=False, thresholds=None, **more):
        return self._runner.run(x, full_depth=full_depth, thresholds=self._ths if thresholds is None else thresholds,
                                **more)


def measure(runner, test, runs):
    """bench(): accuracy on the whole test split, latency batch 1, both modes interleaved in one run."""
    b = bench(runner, test.x, test.y, Protocol(runs=runs, warmup=100))
    raw = {m: np.sort(np.asarray(b["raw_ms"][m])) for m in ("early_exit", "full_depth")}
    trim = {m: float(v[:int(len(v) * 0.99)].mean()) for m, v in raw.items()}
    return {"accuracy_early_exit": b["early_exit"]["accuracy"], "accuracy_full_depth": b["full_depth"]["accuracy"],
            "mean_ms_early_exit": b["early_exit"]["latency_ms"]["mean"],
            "mean_ms_full_depth": b["full_depth"]["latency_ms"]["mean"],
            "p50_ms_early_exit": b["early_exit"]["latency_ms"]["p50"],
            "p50_ms_full_depth": b["full_depth"]["latency_ms"]["p50"],
            "speedup_mean": b["speedup"], "speedup_p50": b["full_depth"]["latency_ms"]["p50"] /
            b["early_exit"]["latency_ms"]["p50"], "speedup_trimmed_mean_99": trim["full_depth"] / trim["early_exit"],
            "exit_histogram": b["early_exit"]["exit_histogram"],
            "thresholds": [round(t, 4) for t in runner.thresholds()]}


def exit_options(spec):
    auto, layers = parse_exits(spec)
    return ExitOptions(auto=auto, layers=layers)


def run(precision, spec, runs, tmp):
    t0 = time.time()
    res = convert(ConvertOptions(ASSET, "host-x86_64", SPLIT["calib"], os.path.join(tmp, precision + spec[-1]),
                                 precision=precision, max_drop=GOAL_DROP, threshold_data=SPLIT["val"],
                                 exits=exit_options(spec)))
    convert_s = time.time() - t0
    runner = EarlyExitRunner(res.bundle_dir)
    test, val = load_data(SPLIT["test"]), load_data(SPLIT["val"])
    val_full = evaluate(runner, val.x, val.y, full_depth=True)["accuracy"]
    single = FixedThresholds(runner, single_threshold(runner, val, val_full))
    rows = [dict(measure(runner, test, runs), how="fitted jointly"),
            dict(measure(single, test, runs), how="single threshold")]
    for r in rows:
        r.update(precision=precision, exits=spec, convert_s=round(convert_s, 1),
                 drop=r["accuracy_full_depth"] - r["accuracy_early_exit"])
    return rows, res.report["exits"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3000, help="timed calls per mode")
    ap.add_argument("--full", action="store_true", help="also float32 and auto:1, auto:2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    variants = [("int8", "auto:3")] + ([("float32", "auto:3"), ("int8", "auto:2"), ("int8", "auto:1")]
                                       if args.full else [])
    rows, exits_report = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for precision, spec in variants:
            got, rep = run(precision, spec, args.runs, tmp)
            rows.extend(got)
            exits_report = exits_report or rep
    print("attached exits on the plain digits CNN (host, batch 1, 1 thread, interleaved; test split, 360 samples)")
    print(exits_table(exits_report))
    print()
    head = ("precision", "exits", "thresholds", "acc early", "acc full", "drop", "mean ms early", "mean ms full",
            "x mean", "x p50", "x trim99", "exit histogram")
    print("{:<9} {:<6} {:<16} {:>9} {:>8} {:>6} {:>13} {:>12} {:>6} {:>6} {:>8}  {}".format(*head))
    for r in rows:
        print("{:<9} {:<6} {:<16} {:>9.2%} {:>8.2%} {:>6.2%} {:>13.4f} {:>12.4f} {:>6.2f} {:>6.2f} {:>8.2f}  {}".format(
            r["precision"], r["exits"], r["how"], r["accuracy_early_exit"], r["accuracy_full_depth"], r["drop"],
            r["mean_ms_early_exit"], r["mean_ms_full_depth"], r["speedup_mean"], r["speedup_p50"],
            r["speedup_trimmed_mean_99"], r["exit_histogram"]))
    main_row = rows[0]
    met = main_row["speedup_mean"] >= GOAL_SPEEDUP and main_row["drop"] <= GOAL_DROP + 1e-12
    print("goal >= {}x lower mean latency at <= 1 point accuracy drop (int8, auto:3, fitted thresholds): "
          "{} ({:.2f}x, drop {:.2%})".format(GOAL_SPEEDUP, "met" if met else "NOT met", main_row["speedup_mean"],
                                             main_row["drop"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "exits": exits_report}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
