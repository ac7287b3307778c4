"""Flashing over SSH: a first flash of the demo bundle against a re-flash of the same bundle.

Starts a real OpenSSH server on 127.0.0.1 (tests/deploy/sshd.py, key auth only), converts the demo model
(float32, host-x86_64), flashes it into an empty board directory, then flashes the same bundle again a few
times. A re-flash finds the release already on the board: it probes, verifies and switches, and sends no file.
Goals: the re-flash sends nothing, and takes under 3 s (on a loaded machine it can take longer: say so).
The test suite checks that nothing is sent (tests/deploy/test_flash_ssh.py); how long it takes is measured here.

    python benchmarks/bench_flash.py [--again 5]
"""
import argparse
import getpass
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edgekit.convert import ConvertOptions, convert  # noqa: E402
from edgekit.deploy import flash  # noqa: E402
from edgekit.deploy.hosts import Board, HostSpec, SshOptions  # noqa: E402
from edgekit.models.demo import ASSET, CALIB_DIR  # noqa: E402
from tests.deploy.sshd import APT_HINT, SSHD, SshServer, keygen  # noqa: E402

REFLASH_GOAL_S = 3.0


def goal(ok):
    return "met" if ok else "NOT met"


def _board(tmp: Path) -> tuple:
    key = keygen(tmp / "id_bench")
    server = SshServer(tmp / "sshd", key.with_suffix(".pub")).start()
    known = tmp / "known_hosts"
    known.write_text(server.host_key_line)
    board = Board(host=HostSpec(user=getpass.getuser(), host="127.0.0.1", port=server.port),
                  ssh=SshOptions(identity=str(key), known_hosts=str(known), timeout_s=30.0),
                  remote_dir=str(tmp / "board"), remote_python=sys.executable)
    return server, board


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--again", type=int, default=5, help="re-flashes of the same bundle")
    args = ap.parse_args()
    if not os.path.exists(SSHD):
        print("skipped: " + APT_HINT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = convert(ConvertOptions(ASSET, "host-x86_64", os.path.join(CALIB_DIR, "digits_calib.npz"),
                                        str(tmp / "out"), precision="float32")).bundle_dir
        server, board = _board(tmp)
        try:
            t0 = time.perf_counter()
            first = flash(bundle, board)
            first_s = time.perf_counter() - t0
            again, walls = [], []
            for _ in range(args.again):
                t0 = time.perf_counter()
                again.append(flash(bundle, board))
                walls.append(time.perf_counter() - t0)
        finally:
            server.stop()
    sent = sum(r.uploaded_files for r in again), sum(r.uploaded_bytes for r in again)
    median = float(np.median(walls))
    print("first flash: {} files, {} bytes, transfer {:.3f} s, wall {:.3f} s".format(
        first.uploaded_files, first.uploaded_bytes, first.transfer_s, first_s))
    print("re-flash x{}: {} files, {} bytes sent; wall median {:.3f} s, max {:.3f} s ({:.2f}x the first flash)".format(
        args.again, sent[0], sent[1], median, max(walls), median / first_s))
    print("goal re-flash of an unchanged bundle sends nothing: {}".format(goal(sent == (0, 0))))
    print("goal re-flash under {:g} s (median of {}): {} ({:.3f} s)".format(
        REFLASH_GOAL_S, args.again, goal(median < REFLASH_GOAL_S), median))
    return 0


if __name__ == "__main__":
    sys.exit(main())
