"""The emulated board over SSH: the host's OpenSSH server with ChrootDirectory set to the arm64 root filesystem.

After authentication sshd chroots into the root filesystem, so the shell, `uname -m`, the agent that `edgekit
flash` sends and the Python that runs it are the arm64 ones (under qemu-user); SFTP is internal-sftp inside
the chroot. `edgekit flash` and `run_remote` then drive it as they drive a real Raspberry Pi.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # tests/, for the deploy tests' real-sshd helper

from deploy.sshd import SshServer, keygen  # noqa: E402

REMOTE_DIR = "/root/edgekit"                   # inside the chroot


class ChrootedSshServer(SshServer):
    def __init__(self, root: Path, authorized_pubkey: Path, chroot: str) -> None:
        super().__init__(root, authorized_pubkey)
        self.chroot = os.path.realpath(chroot)

    def _config(self) -> Path:
        cfg = super()._config()
        cfg.write_text(cfg.read_text() + "ChrootDirectory {}\n".format(self.chroot))
        return cfg


def flash_and_run(chroot: str, work: str, bundle: str, data: str, python: str) -> Dict[str, Any]:
    """`edgekit flash` the bundle to the emulated board, then run it there with run_remote (early exit and full
    depth). Returns the flash report, both run results and the wall time of each step."""
    from edgekit.deploy import SshOptions, run_remote
    from edgekit.deploy.remote import make_board

    keys = Path(work) / "ssh"
    keys.mkdir(exist_ok=True)
    client = keygen(keys / "client_key")
    server = ChrootedSshServer(keys / "sshd", Path(str(client) + ".pub"), chroot).start()
    try:
        known = keys / "known_hosts"
        known.write_text(server.host_key_line)
        host = "root@127.0.0.1:{}".format(server.port)
        argv = [sys.executable, "-m", "edgekit.cli", "flash", bundle, "--host", host, "-i", str(client),
                "--known-hosts", str(known), "--remote-python", python, "--remote-dir", REMOTE_DIR, "--force",
                "--timeout", "120", "--json"]
        seconds = {}   # type: Dict[str, float]
        t0 = time.monotonic()
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800)
        seconds["flash"] = time.monotonic() - t0
        if res.returncode != 0:
            raise RuntimeError("edgekit flash to the emulated board failed (exit {}): {}".format(
                res.returncode, res.stderr.decode(errors="replace")[-2000:]))
        report = json.loads(res.stdout.decode())
        board = make_board(host, SshOptions(identity=str(client), known_hosts=str(known), timeout_s=120.0),
                           REMOTE_DIR, python)
        runs = {}
        for mode, extra in (("early", []), ("full", ["--full-depth"])):
            t0 = time.monotonic()
            runs[mode] = run_remote(board, "current", data, extra_args=extra)
            seconds["run " + mode] = time.monotonic() - t0
    finally:
        server.stop()
    return {"flash": report, "runs": runs, "seconds": seconds, "command": " ".join(argv[1:])}
