"""A real OpenSSH server on 127.0.0.1 for the deploy tests: own host key, own config, key auth only.

Needs Debian's openssh-server (/usr/sbin/sshd); `.ci/run` installs it. Missing sshd is a test failure.
"""
import getpass
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
APT_HINT = "install Debian's openssh-server (apt-get install -y openssh-server); the ssh tests need /usr/sbin/sshd"


def keygen(path: Path, comment: str = "edgekit-test") -> Path:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> List[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


class SshServer:
    def __init__(self, root: Path, authorized_pubkey: Path, env: Optional[dict] = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(root / "ssh_host_ed25519_key", "edgekit-test-host")
        (root / "authorized_keys").write_text(authorized_pubkey.read_text())
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.device_config = root / "device.json"
        self.env = dict(env or {})        # more variables every session on this server gets (the board's env)

    @property
    def host_key_line(self) -> str:
        kind, blob = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return "[127.0.0.1]:{} {} {}\n".format(self.port, kind, blob)

    def _config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text("\n".join([
            "Port {}".format(self.port), "ListenAddress 127.0.0.1", "HostKey {}".format(self.host_key),
            "PidFile {}".format(self.root / "sshd.pid"), "AuthorizedKeysFile {}".format(self.root / "authorized_keys"),
            "AllowUsers {}".format(getpass.getuser()), "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 100", "MaxSessions 100",
            # the board's device config (edgekit/device_keys.py) is this server's, not the tester's home
            "SetEnv EDGEKIT_DEVICE_CONFIG={}{}".format(self.device_config, "".join(
                ' "{}={}"'.format(k, v) for k, v in sorted(self.env.items()))), ""]))
        return cfg

    def start(self) -> "SshServer":
        if not os.path.exists(SSHD):
            raise RuntimeError(APT_HINT)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)     # privilege-separation dir sshd insists on
        for _ in range(5):
            self.port = free_port()
            log = open(self.root / "sshd.log", "ab")
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self._config())], stdout=log, stderr=log)
            log.close()
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError("sshd did not start; log: {}".format((self.root / "sshd.log").read_text()[-2000:]))

    def _wait_ready(self, timeout_s: float = 30.0) -> bool:   # generous: a loaded machine starts sshd slowly
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.settimeout(2.0)
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def kill_sessions(self) -> int:
        """SIGKILL every per-connection sshd process: clients see their connection drop mid-transfer."""
        victims, stack = [], list(_children(self.proc.pid))
        while stack:
            pid = stack.pop()
            victims.append(pid)
            stack.extend(_children(pid))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(victims)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_sessions()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
