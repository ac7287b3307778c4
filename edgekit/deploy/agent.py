"""The board-side half of `edgekit flash`: sent as `python3 -c <agent_device.py + this file> COMMAND ARGS`, JSON
on stdin/stdout (upload.agent_source() joins the two files).

Standard library only, Python 3.5 syntax (so an old board can still say which Python it has). Commands:
  probe DIR ID        board facts + the state of DIR/releases/ID against the expected files on stdin
  install DIR ID SRC KEEP  verify SRC (a staging dir name, or '-' for the release itself) against the
                      marker on stdin, fsync, write the marker, move into place, switch DIR/current, prune
  rollback DIR [ID]   verify DIR/previous (and that it is release ID), then swap current and previous
  list DIR            releases with their markers and which are current / previous
  discard DIR NAME    remove an unfinished staging directory
  df DIR              free bytes where DIR is (or would be)
Layout: DIR/releases/<id>/{manifest.json, stage_*.tflite, report.json, runtime/edgekit/..., MARKER};
DIR/current and DIR/previous are symlinks to releases/<id>, replaced by rename(2) so they switch atomically.
"""
import hashlib
import json
import os
import re
import shutil
import sys
import time

MARKER = ".edgekit-release.json"
ID_RE = re.compile(r"^[0-9a-f]{16}$")
STAGING_RE = re.compile(r"^\.partial-[0-9a-f]{16}-[0-9a-f]{8,32}$")
PARTIAL_FILE_RE = re.compile(r"\.partial-[0-9a-f]{8}$")      # a file of an in-place repair, beside its final name
PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
STALE_STAGING_S = 600

if "device_keys" not in globals():     # imported as a module; on the board agent_device.py's source comes first
    from edgekit.deploy.agent_device import Refused, device_keys, read_text, record_dir


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_join(base, rel):
    """base/rel, refusing absolute paths, '..' and anything that resolves outside base."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or not all(PART_RE.match(p) and p != ".." for p in parts):
        raise Refused("unsafe file name {!r} (allowed: relative names of letters, digits, '_', '-', '.')".format(rel))
    path = os.path.join(base, *parts)
    real_base = os.path.realpath(base)
    if not os.path.realpath(path).startswith(real_base + os.sep):
        raise Refused("file {!r} resolves outside {}".format(rel, base))
    return path


def check_id(value):
    if not ID_RE.match(value):
        raise Refused("invalid release id {!r}; allowed: 16 lowercase hex digits (a bundle id)".format(value))
    return value


def bad_files(base, files):
    """[[rel, problem], ...] for every expected file that is missing or has another sha256."""
    bad = []
    for rel in sorted(files):
        path = safe_join(base, rel)
        if not os.path.isfile(path) or os.path.islink(path):
            bad.append([rel, "missing"])
            continue
        got = sha256(path)
        if got != files[rel]:
            bad.append([rel, "sha256 {} (expected {})".format(got, files[rel])])
    return bad


def read_marker(release_dir):
    try:
        with open(os.path.join(release_dir, MARKER), "r") as f:
            marker = json.load(f)
        return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def link_id(remote_dir, name):
    try:
        target = os.readlink(os.path.join(remote_dir, name))
    except OSError:
        return None
    rid = target.rstrip("/").split("/")[-1]
    return rid if ID_RE.match(rid) else None


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_link(remote_dir, name, rid):
    """Point remote_dir/name at releases/rid with one rename(2): readers see the old or the new link."""
    tmp = os.path.join(remote_dir, ".{}.tmp-{}".format(name, os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink("releases/" + rid, tmp)
    os.replace(tmp, os.path.join(remote_dir, name))
    fsync_path(remote_dir, directory=True)


def free_bytes(path):
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    st = os.statvfs(path or "/")
    return st.f_bavail * st.f_frsize


def cmd_df(remote_dir):
    """Free bytes where remote_dir is (or would be), whether that file system is read-only and the nearest
    existing directory writable, and where current points now."""
    path = remote_dir
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return {"free_bytes": free_bytes(remote_dir), "read_only": bool(st.f_flag & getattr(os, "ST_RDONLY", 1)),
            "writable": os.access(path, os.W_OK), "checked": path, "current": link_id(remote_dir, "current")}


def interpreters():
    found = {}
    for name in ("ai_edge_litert", "tflite_runtime"):
        try:
            __import__(name + ".interpreter")
            found[name] = dist_version(name.replace("_", "-"))
        except Exception:  # noqa: BLE001 - any import failure means "not usable here"
            found[name] = None
    found["tensorflow"] = None
    try:
        import importlib.util
        spec = importlib.util.find_spec("tensorflow")
        if spec is not None and spec.origin and os.path.isdir(os.path.join(os.path.dirname(spec.origin), "lite")):
            found["tensorflow"] = dist_version("tensorflow")
    except Exception:  # noqa: BLE001
        pass
    return found


def dist_version(dist):
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - informational
        return "unknown"


def os_name():
    for line in read_text("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def memory_mb():
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def cmd_probe(remote_dir, rid, expected):
    import platform
    try:
        import numpy
        np_version = numpy.__version__
    except Exception:  # noqa: BLE001
        np_version = None
    release = os.path.join(remote_dir, "releases", check_id(rid))
    cleaned = clean_leftovers(remote_dir)           # before free_bytes: what failed flashes left is not counted
    state, bad = "absent", []
    if os.path.isdir(release):
        bad = bad_files(release, expected["files"])
        state = "complete" if not bad and read_marker(release) is not None else "damaged"
    return {"python": platform.python_version(), "platform": sys.platform, "os": os_name(),
            "kernel": platform.release(), "arch": platform.machine(), "cores": os.cpu_count(),
            "memory_mb": memory_mb(), "model": read_text("/proc/device-tree/model"), "numpy": np_version,
            "interpreters": interpreters(), "free_bytes": free_bytes(remote_dir),
            "current": link_id(remote_dir, "current"), "previous": link_id(remote_dir, "previous"),
            "release": {"state": state, "bad": bad}, "remote_dir": remote_dir,
            "device_keys": device_keys(remote_dir), "cleaned": cleaned}


def cmd_install(remote_dir, rid, src, keep, marker):
    releases = os.path.join(remote_dir, "releases")
    release = os.path.join(releases, check_id(rid))
    if src != "-" and not STAGING_RE.match(src):
        raise Refused("invalid staging name {!r}".format(src))
    work = release if src == "-" else os.path.join(releases, src)
    try:
        bad = bad_files(work, marker["files"])
        if not bad:
            seal(releases, release, work, rid, marker)
    except BaseException:                   # e.g. the disk filled up: leave no staging dir or marker behind
        discard(work, release)
        raise
    if bad:
        discard(work, release)
        return {"ok": False, "bad": bad, "current": link_id(remote_dir, "current")}
    record_dir(remote_dir)
    old = switch(remote_dir, rid)
    removed = prune(remote_dir, keep)
    return {"ok": True, "current": rid, "previous": link_id(remote_dir, "previous"), "replaced": old,
            "removed": removed}


def discard(work, release):
    if work != release:
        shutil.rmtree(work, ignore_errors=True)
    elif os.path.lexists(os.path.join(work, MARKER + ".tmp")):
        os.unlink(os.path.join(work, MARKER + ".tmp"))


def seal(releases, release, work, rid, marker):
    """fsync the verified files, write the marker, move the staging dir into place."""
    for rel in marker["files"]:
        fsync_path(safe_join(work, rel))
    tmp = os.path.join(work, MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(work, MARKER))
    fsync_path(work, directory=True)
    if work != release:
        try:
            os.rename(work, release)
        except OSError:
            if not os.path.isdir(release):
                raise
            shutil.rmtree(work, ignore_errors=True)     # another flash put the same release there first
            if bad_files(release, marker["files"]):
                raise Refused("releases/{} appeared during the upload and does not match".format(rid))
        fsync_path(releases, directory=True)


def newest_mtime(path):
    newest = os.lstat(path).st_mtime
    for root, _, files in os.walk(path):
        for name in files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def clean_leftovers(remote_dir):
    """Remove what failed or killed flashes left, so it holds no space: staging dirs whose install began (they
    hold a marker, a minute old) or that nothing wrote to for STALE_STAGING_S, and in every release the
    *.partial-* files of an in-place repair that was cut off. A staging dir being uploaded now is kept."""
    releases = os.path.join(remote_dir, "releases")
    removed = []
    now = time.time()
    for name in sorted(os.listdir(releases)) if os.path.isdir(releases) else []:
        path = os.path.join(releases, name)
        if STAGING_RE.match(name) and os.path.isdir(path) and not os.path.islink(path):
            began = [os.path.join(path, n) for n in (MARKER, MARKER + ".tmp")]
            if any(os.path.lexists(m) and now - os.lstat(m).st_mtime > 60 for m in began) or \
                    now - newest_mtime(path) > STALE_STAGING_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
        elif ID_RE.match(name) and os.path.isdir(path) and not os.path.islink(path):
            for root, _, files in os.walk(path):
                for f in files:
                    if PARTIAL_FILE_RE.search(f):
                        os.unlink(os.path.join(root, f))
                        removed.append(os.path.relpath(os.path.join(root, f), releases))
    return removed


def switch(remote_dir, rid):
    old = link_id(remote_dir, "current")
    if old is not None and old != rid:
        set_link(remote_dir, "previous", old)
    set_link(remote_dir, "current", rid)
    return old


def prune(remote_dir, keep):
    """Keep the newest `keep` releases plus current and previous; drop stale staging dirs."""
    releases = os.path.join(remote_dir, "releases")
    pinned = {link_id(remote_dir, "current"), link_id(remote_dir, "previous")}
    dated = []
    removed = []
    clean_leftovers(remote_dir)
    for name in os.listdir(releases):
        path = os.path.join(releases, name)
        if ID_RE.match(name) and os.path.isdir(path):
            marker = read_marker(path) or {}
            dated.append((str(marker.get("flashed_at", "")), os.path.getmtime(path), name))
    dated.sort(reverse=True)
    kept = 0
    for _, _, name in dated:
        if name in pinned or kept < keep:
            kept += 1
            continue
        shutil.rmtree(os.path.join(releases, name), ignore_errors=True)
        removed.append(name)
    return removed


def cmd_rollback(remote_dir, expect=None):
    cur, prev = link_id(remote_dir, "current"), link_id(remote_dir, "previous")
    if prev is None or prev == cur:
        raise Refused("no previous release to roll back to in {} (current: {})".format(remote_dir, cur))
    if expect is not None and prev != expect:
        raise Refused("previous release changed to {} while {} was being checked; nothing was switched".format(
            prev, expect))
    release = os.path.join(remote_dir, "releases", prev)
    marker = read_marker(release)
    if marker is None:
        raise Refused("previous release {} is gone or has no marker; it cannot be trusted".format(prev))
    bad = bad_files(release, marker["files"])
    if bad:
        return {"ok": False, "bad": bad, "release": prev}
    if cur is not None:
        set_link(remote_dir, "previous", cur)
    set_link(remote_dir, "current", prev)
    return {"ok": True, "current": prev, "previous": cur}


def cmd_list(remote_dir):
    releases = os.path.join(remote_dir, "releases")
    out = []
    names = sorted(os.listdir(releases)) if os.path.isdir(releases) else []
    for name in names:
        path = os.path.join(releases, name)
        if not (ID_RE.match(name) and os.path.isdir(path)):
            continue
        marker = read_marker(path) or {}
        size = 0
        for rel in marker.get("files", {}):
            try:
                size += os.path.getsize(safe_join(path, rel))
            except (OSError, Refused):
                pass
        out.append({"id": name, "complete": bool(marker), "model_name": marker.get("model_name", ""),
                    "target": marker.get("target", ""), "flashed_at": marker.get("flashed_at", ""),
                    "flashed_from": marker.get("flashed_from", ""), "size_bytes": size})
    return {"releases": out, "current": link_id(remote_dir, "current"),
            "previous": link_id(remote_dir, "previous"), "device_keys": device_keys(remote_dir)}


def resolve_dir(path):
    """'~/x', an absolute path, or a path relative to the login's home (the directory ssh starts in)."""
    return os.path.abspath(os.path.expanduser(path))


def main(argv):
    cmd, args = argv[0], argv[1:]
    if args:
        args[0] = resolve_dir(args[0])
    try:
        stdin = json.loads(sys.stdin.read() or "{}") if cmd in ("probe", "install") else {}
        if cmd == "probe":
            result = cmd_probe(args[0], args[1], stdin)
        elif cmd == "install":
            result = cmd_install(args[0], args[1], args[2], int(args[3]), stdin)
        elif cmd == "rollback":
            result = cmd_rollback(args[0], args[1] if len(args) > 1 else None)
        elif cmd == "list":
            result = cmd_list(args[0])
        elif cmd == "discard":
            if not STAGING_RE.match(args[1]):
                raise Refused("invalid staging name {!r}".format(args[1]))
            shutil.rmtree(os.path.join(args[0], "releases", args[1]), ignore_errors=True)
            result = {"ok": True}
        elif cmd == "df":
            result = cmd_df(args[0])
        else:
            raise Refused("unknown agent command {!r}".format(cmd))
    except (Refused, OSError, ValueError, KeyError, IndexError) as exc:
        result = {"error": "{}: {}".format(type(exc).__name__, exc) if not isinstance(exc, Refused) else str(exc)}
    if args and "error" not in result:
        result.setdefault("remote_dir", args[0])
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
