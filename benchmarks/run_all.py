"""Run every benchmark suite (benchmarks/bench_*.py) in one command and write the summary.

Each suite is run in its own process (so one suite's TensorFlow state cannot touch another's), its
output is kept in benchmarks/results/<name>.txt, and benchmarks/results/summary.txt lists every suite
with its exit code and wall time. Speed goals are ratios measured within one run of a suite.

    python benchmarks/run_all.py [--only NAME ...]
"""
import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
BUDGET_S = 15 * 60          # every suite, one command, under 15 minutes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="suite names, e.g. chaining")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    suites = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    if args.only:
        suites = [s for s in suites if os.path.basename(s)[6:-3] in args.only]
    lines, goals, failed = [], [], 0
    start = time.time()
    for path in suites:
        name = os.path.basename(path)[6:-3]
        print("== {}".format(name), flush=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, path], capture_output=True, text=True)
        dt = time.time() - t0
        with open(os.path.join(RESULTS, name + ".txt"), "w") as f:
            f.write(proc.stdout)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            failed += 1
            sys.stdout.write(proc.stderr[-3000:])
        lines.append("{:<24} exit {:<3} {:7.1f} s".format(name, proc.returncode, dt))
        goals += ["{:<24} {}".format(name, ln.strip()) for ln in proc.stdout.splitlines() if ln.startswith("goal")]
    total = time.time() - start
    lines.append("total {:.1f} s; goal: all suites in one command under {} minutes: {}".format(
        total, BUDGET_S // 60, "met" if total < BUDGET_S else "NOT met"))
    summary = "\n".join(["benchmark suites ({} run, {} failed)".format(len(suites), failed)] + lines
                         + ["", "goals reported by the suites:"] + (goals or ["(none)"])) + "\n"
    with open(os.path.join(RESULTS, "summary.txt"), "w") as f:
        f.write(summary)
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
