"""Early exit against full depth on the demo bundle: latency and energy from one `edgekit bench` run.

Converts the demo model for this machine (host-x86_64, float32), then runs the real command
`edgekit bench BUNDLE --data digits_test --report DIR --json` (latency window interleaved call by call,
then energy in alternating blocks with an idle baseline from the same run) and prints the ratios.
Goals: both modes get latency percentiles and energy per inference from one run with the meter
named and marked measured/estimated, and the report files written; RAPL is used when readable here,
else the power model; early exit costs less energy per inference than full depth (total and above idle).

    python benchmarks/bench_energy.py [--full] [--report DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.bench.meters import RaplMeter  # noqa: E402
from edgekit.models.demo import ASSET, CALIB_DIR  # noqa: E402

MODES = ("early_exit", "full_depth")
REPORT_FILES = ("report.json", "latency.csv", "energy.csv", "curve.csv", "exits.csv", "latency_histogram.png",
                "accuracy_latency.png", "exit_distribution.png", "energy.png")


def goal(ok):
    return "met" if ok else "NOT met"


def edgekit_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "edgekit")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "edgekit.cli"]


def convert_demo(out_dir):
    from edgekit.convert import ConvertOptions, convert

    res = convert(ConvertOptions(ASSET, "host-x86_64", os.path.join(CALIB_DIR, "digits_calib.npz"), out_dir,
                                 precision="float32"))
    return res.bundle_dir


def run_bench(bundle, report_dir, full):
    args = ["--runs", "600", "--blocks", "5", "--block-seconds", "3", "--idle-seconds", "6"] if full else \
        ["--runs", "300", "--blocks", "3", "--block-seconds", "2", "--idle-seconds", "4"]
    cmd = edgekit_cmd() + ["bench", bundle, "--data", os.path.join(CALIB_DIR, "digits_test.npz"), "--report",
                           report_dir, "--force", "--json"] + args
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit("edgekit bench failed (exit {})".format(proc.returncode))
    return json.loads(proc.stdout)


def table(res):
    e = res["energy"]
    print("early exit vs full depth, demo bundle (float32, host-x86_64), one `edgekit bench` run, batch 1")
    print("{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>13} {:>14} {:>7}".format(
        "mode", "accuracy", "mean ms", "p50", "p90", "p99", "mJ/inference", "mJ above idle", "calls"))
    for m in MODES:
        lat, en = res[m]["latency_ms"], e[m]
        print("{:<11} {:>9.4f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>13.4f} {:>14.4f} {:>7}".format(
            m, res[m]["accuracy"], lat["mean"], lat["p50"], lat["p90"], lat["p99"], en["joules_total"] * 1e3,
            en["joules_above_idle"] * 1e3, en["inferences"]))
    print("meter: {} ({}) - {}".format(e["meter"], e["kind"].upper(), e["source"]))
    print("idle baseline {:.2f} W over {:.1f} s; blocks {} x {:g} s per mode, order {}".format(
        e["idle"]["mean_watts"], e["idle"]["seconds"], e["options"]["blocks"], e["options"]["block_seconds"],
        " ".join("A" if b == "early_exit" else "B" for b in e["block_order"])))
    if e["overrun_blocks"]:
        print("energy blocks that overran (process stalled by other load) and were run again: {}".format(
            ", ".join("{} {:.1f} s".format(b["mode"], b["seconds"]) for b in e["overrun_blocks"])))
    for w in e["warnings"]:
        print("warning: " + w)
    for f in e["failed_during_run"]:
        print("meter {} failed during the run: {}".format(f["meter"], f["error"]))
    ratio = e["ratio_above_idle"]
    print("ratios (full depth / early exit): latency mean {:.2f}x, latency p50 {:.2f}x, energy per inference "
          "{:.2f}x total, {} above idle".format(
              res["speedup"], res["full_depth"]["latency_ms"]["p50"] / res["early_exit"]["latency_ms"]["p50"],
              e["ratio_total"] if e["ratio_total"] is not None else float("nan"),
              "n/a (early exit not above idle)" if ratio is None else "{:.2f}x".format(ratio)))


def goals(res, report_dir):
    e = res["energy"]
    complete = all({"p50", "p90", "p99", "mean"} <= set(res[m]["latency_ms"]) and e[m]["inferences"] > 0
                   for m in MODES) and e["meter"] and e["kind"] in ("measured", "estimated")
    written = all(os.path.isfile(os.path.join(report_dir, f)) for f in REPORT_FILES)
    rapl_ok, why = RaplMeter().available()
    want = "rapl" if rapl_ok else "power-model"
    print("goal: latency percentiles and energy per inference for both modes from one run, meter named and "
          "marked, report written: {}".format(goal(complete and written)))
    print("goal: RAPL when readable here, else the power model (RAPL {}; used {}): {}".format(
        "readable" if rapl_ok else "not readable: " + why.split(";")[0], e["meter"], goal(e["meter"] == want)))
    print("goal: early exit uses less energy per inference than full depth, total: {}".format(
        goal(e["ratio_total"] is not None and e["ratio_total"] > 1.0)))
    print("goal: early exit uses less energy per inference than full depth, above idle: {}".format(
        goal(e["ratio_above_idle"] is not None and e["ratio_above_idle"] > 1.0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="longer latency window and energy blocks")
    ap.add_argument("--report", default=os.path.join(ROOT, "benchmarks", "results", "energy_report"),
                    help="where the bench report goes (replaced)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = convert_demo(tmp)
        res = run_bench(bundle, args.report, args.full)
    table(res)
    goals(res, args.report)
    print("report: {}".format(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
