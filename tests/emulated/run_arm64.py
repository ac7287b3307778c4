"""`make test-arm64`: run a bundle on emulated Raspberry Pi software stacks and compare with x86.

The boards: arm64 Debian 12 (bookworm, Raspberry Pi OS's base) with its Python 3.11, numpy 1.26.4 and
tflite-runtime 2.14.0 from PyPI's aarch64 wheels, and arm64 Debian 11 (bullseye) with its Python 3.9, numpy
1.26.4 and tflite-runtime 2.13.0 (rootfs.py says why not 2.14.0 nor Debian's numpy), under qemu-user-static
via binfmt_misc, each in a chroot that is built once with debootstrap and cached outside the clone
(~/.cache/edgekit/arm64-<suite>; set EDGEKIT_ARM64_ROOTFS to move it). The demo is converted on the host for raspberry-pi-4 at int8 and float32;
the bundle and edgekit's runtime files (the set `edgekit flash` uploads) are copied in; `python -m
edgekit.runtime BUNDLE DATA --json` (early exit and --full-depth) and dump_outputs.py run on both sides on
the first samples of the digits test split.

Exit codes: 0 every comparison holds; 1 a mismatch or a failure; 3 skipped (no root, binfmt_misc cannot be
mounted, a registry is unreachable): printed as "skipped: <reason>", never a pass.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, REPO]

import rootfs  # noqa: E402
from compare import Comparison, compare, table  # noqa: E402

SKIPPED = 3
TARGET = "raspberry-pi-4"
PRECISIONS = ("int8", "float32")
X86_REFERENCES = ("tflite_runtime", "ai_edge_litert")   # same interpreter as the board first, then the host default
TEST = os.path.join(REPO, "calibration", "digits_test.npz")
CALIB = os.path.join(REPO, "calibration", "digits_calib.npz")


def prepare_work(work: str, samples: int) -> Dict[str, str]:
    """Convert the demo, copy the runtime file set and dump_outputs.py, cut the data; paths relative to work."""
    from edgekit.convert import ConvertOptions, convert
    from edgekit.data import load_data
    from edgekit.deploy.package import runtime_files
    from edgekit.models.demo import ASSET

    for f in runtime_files():
        dest = os.path.join(work, f.rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(f.local, dest)
    shutil.copyfile(os.path.join(HERE, "dump_outputs.py"), os.path.join(work, "dump_outputs.py"))
    test = load_data(TEST, limit=samples)
    np.savez(os.path.join(work, "data.npz"), x=test.x, y=test.y)
    rels = {}
    for p in PRECISIONS:
        out = os.path.join(work, "bundles", p)
        res = convert(ConvertOptions(ASSET, TARGET, CALIB, out, precision=p))
        rels[p] = os.path.relpath(res.bundle_dir, work)
    return rels


class Side:
    """Runs the same commands on the host (x86) or in the chroot (arm64); paths are relative to the work dir."""

    def __init__(self, name: str, work_host: str, root: str = "") -> None:
        self.name, self.work_host, self.root = name, work_host, root
        self.work = "/" + os.path.relpath(work_host, root) if root else work_host
        self.seconds = {}   # type: Dict[str, float]

    def run(self, label: str, args: Sequence[str], interpreter: str = "") -> str:
        env = {"PYTHONPATH": self.work + "/runtime"}
        if interpreter:
            env["EDGEKIT_INTERPRETER"] = interpreter
        argv = [a.replace("{work}", self.work) for a in args]
        t0 = time.monotonic()
        if self.root:
            res = rootfs.chroot_run(self.root, [rootfs.VENV + "/bin/python"] + argv, env=env, timeout=1800)
        else:
            full_env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_INTERPRETER"}
            full_env.update(env)
            res = subprocess.run([sys.executable] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=full_env, cwd=self.work_host, timeout=1800)
        self.seconds[label] = time.monotonic() - t0
        if res.returncode != 0:
            raise RuntimeError("{} on {} failed (exit {}): {}".format(label, self.name, res.returncode,
                                                                     res.stderr.decode(errors="replace")[-2000:]))
        return res.stdout.decode("utf-8", "replace")

    def results(self, precision: str, bundle: str, interpreter: str = "") -> Dict[str, Any]:
        b, d = "{work}/" + bundle, "{work}/data.npz"
        tag = "{} {}".format(precision, interpreter or "default")
        early = json.loads(self.run(tag + " early", ["-m", "edgekit.runtime", b, d, "--json"], interpreter))
        full = json.loads(self.run(tag + " full", ["-m", "edgekit.runtime", b, d, "--json", "--full-depth"],
                                   interpreter))
        out = "outputs-{}-{}-{}.npz".format(self.name, precision, interpreter or "default")
        self.run(tag + " dump", ["{work}/dump_outputs.py", b, d, "{work}/" + out], interpreter)
        with np.load(os.path.join(self.work_host, out), allow_pickle=False) as z:
            dump = {k: z[k] for k in z.files}
        return {"early": early, "full": full, "dump": dump}


def describe_board(root: str) -> str:
    code = ("import platform, sys, numpy, importlib.metadata as m; "
            "print(open('/etc/debian_version').read().strip(), platform.machine(), platform.python_version(), "
            "numpy.__version__, m.version('tflite-runtime'))")
    res = rootfs.chroot_run(root, [rootfs.VENV + "/bin/python", "-c", code], timeout=600)
    if res.returncode != 0:
        raise RuntimeError("the arm64 Python does not start: " + res.stderr.decode(errors="replace")[-2000:])
    deb, machine, py, npv, tfl = res.stdout.decode().split()
    if machine != "aarch64":
        raise RuntimeError("the chroot's Python reports machine {!r}, expected aarch64".format(machine))
    return "Debian {} {} (qemu-user), Python {}, numpy {}, tflite-runtime {}".format(deb, machine, py, npv, tfl)


def compare_all(root: str, work: str, bundles: Dict[str, str]) -> Tuple[List[Comparison], List[Comparison], Side,
                                                                           Side, Dict[str, Any]]:
    """arm64 against each x86 reference (judged), and the two x86 interpreters against each other (context)."""
    from edgekit.manifest import load_bundle

    arm, x86 = Side("arm64", work, root), Side("x86", work)
    rows, baseline, on_arm = [], [], {}
    for p in PRECISIONS:
        exit_names = [s.exit.name for s in load_bundle(os.path.join(work, bundles[p])).stages]
        on_arm[p] = arm.results(p, bundles[p])
        if on_arm[p]["early"]["interpreter"]["name"] != "tflite_runtime":
            raise RuntimeError("the board used {}, expected tflite_runtime".format(on_arm[p]["early"]["interpreter"]))
        refs = {ref: x86.results(p, bundles[p], ref) for ref in X86_REFERENCES}
        rows += [compare(p, ref, exit_names, on_arm[p], refs[ref]) for ref in X86_REFERENCES]
        baseline.append(compare(p, "{} (x86 vs x86 {})".format(X86_REFERENCES[1], X86_REFERENCES[0]), exit_names,
                                refs[X86_REFERENCES[1]], refs[X86_REFERENCES[0]]))
    return rows, baseline, arm, x86, on_arm


def flash_check(root: str, work: str, bundle: str, chroot_results: Dict[str, Any]) -> Tuple[List[str], bool]:
    """edgekit flash -> run on the emulated board over SSH; the results must equal the chroot run's."""
    from board_ssh import flash_and_run

    got = flash_and_run(root, work, os.path.join(work, bundle), os.path.join(work, "data.npz"),
                        rootfs.VENV + "/bin/python")
    lines = ["flash -> run over SSH (sshd chrooted into the arm64 root): edgekit " + got["command"]]
    fl = got["flash"]
    lines.append("  flashed {} to {}: board {}".format(fl.get("bundle_id"), fl.get("host"),
                                                       json.dumps(fl.get("board", {}), sort_keys=True)))
    for w in fl.get("warnings", []):
        lines.append("  flash warning: {}".format(w))
    ok = True
    for mode in ("early", "full"):
        remote, local = got["runs"][mode], chroot_results[mode]
        same = remote["predictions"] == local["predictions"] and remote["exits"] == local["exits"]
        ok = ok and same and remote["interpreter"]["name"] == "tflite_runtime"
        lines.append("  run_remote {:<5} interpreter {} {}: accuracy {}, exits {}, {} the chroot run".format(
            mode, remote["interpreter"]["name"], remote["interpreter"]["version"], remote["accuracy"],
            remote["exit_histogram"], "same predictions and exits as" if same else "DIFFERENT from"))
    lines.append("  wall time (s): " + ", ".join("{} {:.1f}".format(k, v) for k, v in got["seconds"].items()))
    return lines, ok


def timing_lines(arm: Side, x86: Side) -> List[str]:
    lines = ["wall time per command (s), arm64 emulated vs x86 with the same interpreter (tflite_runtime):"]
    for label, sec in arm.seconds.items():
        ref = label.replace(" default ", " tflite_runtime ")
        lines.append("  {:<28} arm64 {:7.2f}   x86 {:6.2f}".format(label, sec, x86.seconds.get(ref, float("nan"))))
    return lines


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100, help="first N samples of the digits test split")
    ap.add_argument("--suite", choices=sorted(rootfs.stacks()) + ["all"], default="all",
                    help="which Debian root to run (default: all of them, bookworm first)")
    ap.add_argument("--cache", default=None, help="root filesystem directory of bookworm (default "
                    "~/.cache/edgekit/arm64-bookworm); other suites use it with -<suite> appended")
    ap.add_argument("--rebuild", action="store_true", help="build the root filesystem again")
    ap.add_argument("--keep-work", action="store_true", help="leave the work directory inside the root filesystem")
    ap.add_argument("--no-flash", action="store_true", help="skip edgekit flash -> run over SSH to the emulated board")
    args = ap.parse_args(list(argv))
    if args.samples < 1:
        ap.error("--samples: expected at least 1, got {}".format(args.samples))
    try:
        rootfs.check_host_tools(REPO)
        print("binfmt_misc: " + rootfs.ensure_binfmt(), flush=True)
    except rootfs.Skip as exc:
        print("skipped: {}".format(exc))
        return SKIPPED
    names = sorted(rootfs.stacks()) if args.suite == "all" else [args.suite]
    names.sort(key=lambda n: n != "bookworm")
    codes = [run_stack(name, args) for name in names]
    if 1 in codes:
        return 1
    return SKIPPED if SKIPPED in codes else 0


def run_stack(suite: str, args: Any) -> int:
    """Build or reuse one suite's root, compare it with x86; 0 passed, 1 failed, 3 skipped."""
    t_start = time.monotonic()
    spec = rootfs.stacks()[suite]
    cache = rootfs.suite_dir(os.path.abspath(args.cache), spec) if args.cache else rootfs.default_cache_dir(spec)
    print("== arm64 Debian {} ==".format(suite), flush=True)
    try:
        info = rootfs.ensure_rootfs(spec, cache, rebuild=args.rebuild)
    except rootfs.Skip as exc:
        print("skipped: {}".format(exc))
        return SKIPPED
    except (RuntimeError, OSError) as exc:
        print("FAILED: building the arm64 {} root filesystem: {}".format(suite, exc))
        return 1
    built = "cached" if info["cached"] else "built: debootstrap {} s, venv {} s".format(info["debootstrap_s"],
                                                                                    info["venv_s"])
    print("root filesystem: {} ({})".format(cache, built), flush=True)
    from edgekit.errors import EdgekitError

    try:
        ok = run_and_report(cache, args.samples, not args.no_flash, args.keep_work)
    except (RuntimeError, EdgekitError) as exc:
        print("FAILED: {}".format(exc))
        return 1
    print("arm64 {} vs x86 on {} samples: {}; total wall time {:.1f} s".format(
        suite, args.samples, "passed" if ok else "FAILED", time.monotonic() - t_start))
    return 0 if ok else 1


def run_and_report(cache: str, samples: int, flash: bool, keep_work: bool) -> bool:
    os.makedirs(os.path.join(cache, "tmp"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="edgekit-arm64-", dir=os.path.join(cache, "tmp"))
    try:
        t0 = time.monotonic()
        bundles = prepare_work(work, samples)
        print("converted the demo for {} at {} on the host in {:.1f} s".format(
            TARGET, " and ".join(PRECISIONS), time.monotonic() - t0), flush=True)
        with rootfs.mounted(cache):
            print("board: " + describe_board(cache), flush=True)
            rows, baseline, arm, x86, on_arm = compare_all(cache, work, bundles)
            flash_lines, flash_ok = flash_check(cache, work, bundles["int8"], on_arm["int8"]) if flash else ([], True)
    finally:
        if not keep_work:
            rootfs.safe_rmtree(work)
    print("\n".join(table(rows)))
    print("for scale, the two x86 interpreters against each other:\n" + "\n".join(table(baseline, judged=False)))
    print("\n".join(timing_lines(arm, x86) + flash_lines))
    return all(c.ok for c in rows) and flash_ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
