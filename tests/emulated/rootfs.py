"""arm64 Debian root filesystems (12 bookworm, 11 bullseye) run under qemu-user-static through binfmt_misc,
cached outside the clone.

Used by run_arm64.py (`make test-arm64`). Needs root (mount, chroot, debootstrap). Every reason this machine
cannot do it is raised as Skip, which the caller turns into "skipped: <reason>" and exit code 3.
"""
import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
BINFMT_NAME = "qemu-aarch64"
BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
VENV = "/opt/edgekit-venv"                 # inside the root filesystem
STAMP = ".edgekit-stamp.json"              # in the venv and at the root: what was built, and how long it took
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONSTRAINTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "constraints.txt")
BOARD_PACKAGES = ("numpy", "tflite-runtime")     # what the board's venv holds, at the project's pins


def board_pins(path: str = CONSTRAINTS) -> Tuple[str, ...]:
    """numpy and tflite-runtime as pinned in constraints.txt (one source of versions for host and board)."""
    pins = {}
    with open(path) as fh:
        for line in fh:
            name, sep, version = line.split("#")[0].strip().partition("==")
            if sep and name.strip().lower() in BOARD_PACKAGES:
                pins[name.strip().lower()] = "{}=={}".format(name.strip().lower(), version.strip())
    missing = [p for p in BOARD_PACKAGES if p not in pins]
    if missing:
        raise RuntimeError("{} pins no version of {}".format(path, ", ".join(missing)))
    return tuple(pins[p] for p in BOARD_PACKAGES)


# Debian 11's Python is 3.9: tflite-runtime 2.14.0's cp39 aarch64 wheel is manylinux_2_34 (glibc 2.34) and
# bullseye has glibc 2.31, so the newest that installs there is 2.13.0, which needs numpy >= 1.21.2: bullseye's
# own python3-numpy (1.19.5) is too old, so numpy comes from PyPI at the project's pin on both stacks.
BULLSEYE_TFLITE_RUNTIME = "tflite-runtime==2.13.0"


def bullseye_pins(path: str = CONSTRAINTS) -> Tuple[str, ...]:
    return tuple(BULLSEYE_TFLITE_RUNTIME if p.startswith("tflite-runtime==") else p for p in board_pins(path))


class Skip(Exception):
    """This machine cannot run the emulated board (no root, no binfmt_misc, registry unreachable)."""


@dataclass(frozen=True)
class RootfsSpec:
    suite: str = "bookworm"
    arch: str = "arm64"
    variant: str = "minbase"
    include: Tuple[str, ...] = ("python3", "python3-pip", "python3-venv")
    mirror: str = "http://deb.debian.org/debian"
    pip: Tuple[str, ...] = field(default_factory=board_pins)   # numpy<2: tflite-runtime 2.14 needs it

    def base_key(self) -> Dict[str, object]:
        """What the debootstrap layer depends on, in its JSON form (tuples become lists), as stamped."""
        d = asdict(self)
        d.pop("pip")
        return json.loads(json.dumps(d))


def stacks() -> Dict[str, "RootfsSpec"]:
    """The board software stacks `make test-arm64` runs, by Debian suite: Raspberry Pi OS bookworm and bullseye."""
    return {"bookworm": RootfsSpec(), "bullseye": RootfsSpec(suite="bullseye", pip=bullseye_pins())}


def default_cache_dir(spec: RootfsSpec) -> str:
    """~/.cache/edgekit/arm64-<suite>; EDGEKIT_ARM64_ROOTFS names the bookworm root, other suites sit beside it
    with their suite appended."""
    env = os.environ.get("EDGEKIT_ARM64_ROOTFS")
    if env:
        return suite_dir(os.path.abspath(env), spec)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekit", "{}-{}".format(spec.arch, spec.suite))


def suite_dir(base: str, spec: RootfsSpec) -> str:
    return base if spec.suite == RootfsSpec().suite else "{}-{}".format(base.rstrip("/"), spec.suite)


def _run(cmd: Sequence[str], what: str, env: Optional[Dict[str, str]] = None, log: Optional[str] = None) -> None:
    out = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    text = out.stdout.decode("utf-8", "replace")
    if log:
        with open(log, "a") as fh:
            fh.write("$ {}\n{}\n".format(" ".join(cmd), text))
    if out.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError("{} failed (exit {}): {}\n{}".format(what, out.returncode, " ".join(cmd), tail))


# -- host prerequisites --------------------------------------------------------------------------------
def check_host_tools(repo: str) -> None:
    """debootstrap + qemu-aarch64-static; installed by scripts/system-deps.sh --arm64 when missing."""
    if os.geteuid() != 0:
        raise Skip("needs root (mount, chroot, debootstrap); running as uid {}".format(os.geteuid()))
    if shutil.which("debootstrap") and os.path.exists("/usr/bin/qemu-aarch64-static") and os.path.exists(BINFMT_CONF):
        return
    res = subprocess.run(["bash", os.path.join(repo, "scripts", "system-deps.sh"), "--arm64"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        last = (res.stdout.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise Skip("debootstrap/qemu-user-static/binfmt-support cannot be installed: {}".format(last))


def ensure_binfmt() -> str:
    """Mount binfmt_misc if needed and register qemu-aarch64 from its binfmt.d file; returns what was done."""
    done = []
    if not os.path.exists(os.path.join(BINFMT_DIR, "status")):
        res = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            raise Skip("binfmt_misc cannot be mounted at {}: {}".format(
                BINFMT_DIR, res.stdout.decode("utf-8", "replace").strip() or "exit {}".format(res.returncode)))
        done.append("mounted binfmt_misc")
    entry = os.path.join(BINFMT_DIR, BINFMT_NAME)
    if not os.path.exists(entry):
        with open(BINFMT_CONF) as fh:
            line = next((ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")), "")
        try:
            with open(os.path.join(BINFMT_DIR, "register"), "w") as fh:
                fh.write(line)
        except OSError as exc:
            raise Skip("cannot register {} with binfmt_misc: {}".format(BINFMT_CONF, exc))
        done.append("registered " + BINFMT_CONF)
    with open(entry) as fh:
        state = fh.readline().strip()
    if state != "enabled":
        raise Skip("binfmt_misc entry {} is {!r}, not enabled".format(entry, state))
    return ", ".join(done) or "already registered"


def check_registries(spec: RootfsSpec) -> None:
    """One request each to the Debian mirror and PyPI: only when something must be downloaded."""
    ctx = ssl.create_default_context(cafile=HOST_CA if os.path.exists(HOST_CA) else None)
    urls = [spec.mirror + "/dists/{}/Release".format(spec.suite), "https://pypi.org/simple/tflite-runtime/"]
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=20, context=ctx) as resp:
                resp.read(1)
        except OSError as exc:
            raise Skip("package registry unreachable: {} ({})".format(url, exc))


# -- mounts and chroot ----------------------------------------------------------------------------------
def mounts_under(path: str) -> List[str]:
    real = os.path.realpath(path).rstrip("/") + "/"
    with open("/proc/self/mounts") as fh:
        points = [ln.split()[1].replace("\\040", " ") for ln in fh]
    return [p for p in points if (p.rstrip("/") + "/").startswith(real)]


def safe_rmtree(path: str) -> None:
    """Remove a root filesystem only when nothing is mounted inside it (a bound /dev would be wiped)."""
    if not os.path.exists(path):
        return
    left = mounts_under(path)
    if left:
        raise RuntimeError("refusing to remove {}: still mounted inside: {}".format(path, ", ".join(left)))
    shutil.rmtree(path)


@contextlib.contextmanager
def mounted(root: str) -> Iterator[None]:
    """/proc, /sys and /dev inside the chroot (tflite's CPU detection reads /proc and /sys), DNS and CA copied in."""
    for src, dest in (("/etc/resolv.conf", "etc/resolv.conf"), (HOST_CA, "etc/edgekit-host-ca.crt")):
        dest = os.path.join(root, dest)
        if os.path.islink(dest):
            os.unlink(dest)              # never write through a link that points out of the root
        if os.path.exists(src):
            shutil.copyfile(src, dest)
    plan = [(["mount", "-t", "proc", "proc"], "proc"), (["mount", "-t", "sysfs", "sysfs"], "sys"),
            (["mount", "--bind", "/dev"], "dev")]
    done = []
    try:
        for cmd, sub in plan:
            target = os.path.join(root, sub)
            os.makedirs(target, exist_ok=True)
            _run(cmd + [target], "mount " + sub)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            if subprocess.run(["umount", target]).returncode != 0:
                subprocess.run(["umount", "-l", target])


def chroot_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PIP_CERT": "/etc/edgekit-host-ca.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    env.update(extra or {})
    return env


def chroot_run(root: str, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
               timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", root] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=chroot_env(env), timeout=timeout)


# -- building -------------------------------------------------------------------------------------------
def _read_stamp(path: str) -> Optional[Dict[str, object]]:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _write_stamp(path: str, data: Dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def _debootstrap(spec: RootfsSpec, cache: str, log: str) -> float:
    part = cache + ".partial"
    safe_rmtree(part)
    t0 = time.monotonic()
    _run(["debootstrap", "--arch=" + spec.arch, "--variant=" + spec.variant, "--include=" + ",".join(spec.include),
          spec.suite, part, spec.mirror], "debootstrap", log=log)
    seconds = time.monotonic() - t0
    _write_stamp(os.path.join(part, STAMP), {"base": spec.base_key(), "debootstrap_s": round(seconds, 1)})
    safe_rmtree(cache)
    os.rename(part, cache)
    return seconds


def _make_venv(spec: RootfsSpec, root: str, log: str) -> float:
    part = VENV + ".partial"
    host_part = os.path.join(root, part.lstrip("/"))
    safe_rmtree(host_part)
    t0 = time.monotonic()
    with mounted(root):
        for argv, what in ((["python3", "-m", "venv", part], "venv"),
                           ([part + "/bin/python", "-m", "pip", "install", "-q"] + list(spec.pip), "pip install")):
            res = chroot_run(root, argv)
            with open(log, "a") as fh:
                fh.write("$ {}\n{}{}\n".format(" ".join(argv), res.stdout.decode(errors="replace"),
                                              res.stderr.decode(errors="replace")))
            if res.returncode != 0:
                err = res.stderr.decode("utf-8", "replace").strip().splitlines()
                raise RuntimeError("{} inside the arm64 root failed (exit {}): {}".format(
                    what, res.returncode, "\n".join(err[-10:])))
    # python3 -m venv wrote absolute paths of the .partial name into the scripts; only bin/python is used.
    seconds = time.monotonic() - t0
    _write_stamp(os.path.join(host_part, STAMP), {"pip": list(spec.pip), "venv_s": round(seconds, 1)})
    safe_rmtree(os.path.join(root, VENV.lstrip("/")))
    os.rename(host_part, os.path.join(root, VENV.lstrip("/")))
    return seconds


@contextlib.contextmanager
def _locked(cache: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_rootfs(spec: RootfsSpec, cache: str, rebuild: bool = False, log: Optional[str] = None) -> Dict[str, object]:
    """Reuse the cached root filesystem, or build what is missing (debootstrap, then the venv). Holds a lock
    while building so two runs on one machine do not build into the same directory."""
    log = log or cache + ".build.log"
    info = {"path": cache, "debootstrap_s": None, "venv_s": None}   # type: Dict[str, object]
    with _locked(cache):
        base = _read_stamp(os.path.join(cache, STAMP))
        venv = _read_stamp(os.path.join(cache, VENV.lstrip("/"), STAMP))
        need_base = rebuild or base is None or base.get("base") != spec.base_key()
        need_venv = need_base or venv is None or venv.get("pip") != list(spec.pip)
        if need_base or need_venv:
            check_registries(spec)
        if need_base:
            info["debootstrap_s"] = round(_debootstrap(spec, cache, log), 1)
        if need_venv:
            info["venv_s"] = round(_make_venv(spec, cache, log), 1)
    info["cached"] = not (need_base or need_venv)
    return info
