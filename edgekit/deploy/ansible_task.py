"""What the `edgekit_release` Ansible action does on one host, over the connection Ansible already opened.

The action plugin (edgekit/deploy/ansible/action_plugins/edgekit_release.py) hands over a `Link`: run an argv
on the board (with stdin), copy a file there, fetch one back. Everything else is edgekit's own flash path: the
same board agent (probe, install, rollback, list), the same staged upload (deploy/upload.py), the same board
checks and signature policy. So a playbook and `edgekit flash` leave a board in the same state.

Unlike `edgekit flash`, a host already on the bundle (verified by the probe) is left untouched and reported
unchanged, which is what Ansible users expect of a second run; check mode probes and reports what would change.
"""
import io
import os
import posixpath
import secrets
import shlex
import tarfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from edgekit.deploy.errors import DeployError, VerifyError
from edgekit.deploy.hosts import (DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON, Board, HostSpec, check_remote_dir,
                                  check_remote_python)
from edgekit.deploy.package import build_payload
from edgekit.deploy.probe import check_board
from edgekit.deploy.releases import DEFAULT_KEEP, bytes_of, check_release_signature, install_release, probe, \
    resolve_target
from edgekit.deploy.signature import SignaturePolicy
from edgekit.deploy.ssh import CommandResult
from edgekit.deploy.upload import Uploader, UploadStats, call_agent
from edgekit.errors import ConfigError, first_line

STATES = ("flashed", "rolled_back", "listed")


class Link:
    """The transport: the action plugin implements these three over Ansible's connection plugin."""

    def run(self, argv: list, stdin: Optional[bytes], timeout_s: Optional[float]) -> CommandResult:
        raise NotImplementedError

    def put(self, local: str, remote: str) -> None:
        raise NotImplementedError

    def fetch(self, remote: str, local: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class _Stat:
    st_size: int


class _Files:
    """The few SFTP calls deploy/upload.py and releases.py make, as commands and copies over a Link."""

    def __init__(self, session: "LinkSession") -> None:
        self.session = session

    def _ok(self, argv: list, doing: str) -> CommandResult:
        res = self.session.run(argv, doing=doing, timeout_s=120)
        if res.returncode != 0:
            raise OSError("{} failed: {}".format(" ".join(shlex.quote(a) for a in argv),
                                                 (res.stderr.strip().splitlines() or ["exit {}".format(
                                                     res.returncode)])[-1]))
        return res

    def stat(self, path: str) -> _Stat:
        res = self.session.run(["stat", "-L", "-c", "%s", "--", path], doing="checking " + path, timeout_s=120)
        if res.returncode != 0:
            raise FileNotFoundError(path)
        return _Stat(int(res.stdout.strip() or 0))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._ok(["mkdir", "-m", "{:o}".format(mode), "--", path], "creating " + path)

    def put(self, local: str, remote: str, confirm: bool = True) -> None:
        self.session.link.put(local, remote)

    def get(self, remote: str, local: str) -> None:
        self.session.link.fetch(remote, local)

    def mkdir_p(self, path: str) -> None:
        self._ok(["mkdir", "-p", "-m", "755", "--", path], "creating " + path)

    def posix_rename(self, src: str, dest: str) -> None:
        self._ok(["mv", "-f", "--", src, dest], "renaming " + src)

    def remove(self, path: str) -> None:
        self._ok(["rm", "-f", "--", path], "removing " + path)


class LinkSession:
    """Stands in for deploy/ssh.Session where call_agent, Uploader and the release checks need one."""

    def __init__(self, board: Board, link: Link) -> None:
        self.board, self.link = board, link
        self.sftp = _Files(self)

    def run(self, argv: Any, stdin: Optional[bytes] = None, timeout_s: Optional[float] = None,
            doing: str = "running a command") -> CommandResult:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise DeployError("internal: remote argv must be a non-empty list of strings, got {!r}".format(argv))
        try:
            return self.link.run(list(argv), stdin, timeout_s)
        except DeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - the connection plugin's own errors, as one line
            raise self.lost(doing, exc)

    def is_alive(self) -> bool:
        return True                      # Ansible reconnects per command; a dead link fails the next one

    def lost(self, doing: str, exc: BaseException) -> DeployError:
        text = first_line(exc)
        return DeployError("{}: connection failed while {}: {}".format(self.board.label, doing, text))


def flash_task(session: LinkSession, bundle_dir: str, keep: int = DEFAULT_KEEP, force: bool = False,
               check_mode: bool = False, signature: Optional[SignaturePolicy] = None) -> Dict[str, Any]:
    """Flash one host; returns Ansible's result keys (changed, msg) and edgekit's (current, uploaded_*)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise DeployError("keep: expected at least 2 (the current and the previous release), got {!r}".format(keep))
    board = session.board
    payload = build_payload(bundle_dir)
    target = resolve_target(board, payload.manifest.target)
    info = probe(session, payload)
    signer = (signature or SignaturePolicy()).check_board(payload.bundle_dir, info.device_keys, board.label)
    need = payload.total_bytes if info.release_state == "absent" else bytes_of(payload, info.release_bad)
    warnings = check_board(info, target, payload.manifest.target, need, force, board.label)
    out = {"bundle_id": payload.bundle_id, "model_name": payload.manifest.model_name, "target": target.name,
           "remote_dir": info.remote_dir, "release_state": info.release_state, "warnings": warnings,
           "signed_by": signer, "uploaded_files": 0, "uploaded_bytes": 0}
    if info.release_state == "complete" and info.current == payload.bundle_id:
        out.update(changed=False, current=info.current, previous=info.previous,
                   msg="{} is current and verified; nothing to do".format(payload.bundle_id))
        return out
    if check_mode:
        files = len(payload.files) if info.release_state == "absent" else len(info.release_bad)
        out.update(changed=True, current=info.current, previous=info.previous, would_upload_files=files,
                   would_upload_bytes=need, msg="would switch current from {} to {} ({} files to upload)".format(
                       info.current or "nothing", payload.bundle_id, files))
        return out
    up = Uploader(session, info.remote_dir, payload, info.current)
    stats = UploadStats(0, 0, 0.0)
    if info.release_state == "absent":
        stats = upload_tar(session, up)
    elif info.release_state == "damaged":
        stats = up.repair(info.release_bad)
    answer = install_release(session, up, info, keep)
    out.update(changed=True, current=str(answer["current"]), previous=answer.get("previous"),
               uploaded_files=stats.files, uploaded_bytes=stats.bytes, removed=list(answer.get("removed", ())),
               msg="current {} -> {} ({} files uploaded)".format(info.current or "nothing", answer["current"],
                                                                  stats.files))
    return out


def upload_tar(session: LinkSession, up: Uploader) -> UploadStats:
    """The whole release as one tar stream into a fresh staging dir: two commands however many files (a
    per-file copy costs a round trip each over Ansible's connection). The agent verifies every sha256 before
    the staging dir becomes a release, exactly as after an SFTP upload."""
    t0 = time.monotonic()
    payload = up.payload
    up.staging = ".partial-{}-{}".format(payload.bundle_id, secrets.token_hex(6))
    base = posixpath.join(up.remote_dir, "releases", up.staging)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in payload.files:
            info = tar.gettarinfo(f.local, arcname=f.rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(f.local, "rb") as fh:
                tar.addfile(info, fh)
    try:
        session.sftp.mkdir_p(base)
        res = session.run(["tar", "-x", "-f", "-", "-C", base], stdin=buf.getvalue(), timeout_s=3600,
                          doing="unpacking the upload")
        if res.returncode != 0:
            raise OSError("tar -x exit {}: {}".format(res.returncode, (res.stderr.strip().splitlines() or [""])[-1]))
    except (OSError, DeployError) as exc:
        raise up.failure("uploading {} files as a tar stream".format(len(payload.files)), exc)
    return UploadStats(len(payload.files), payload.total_bytes, time.monotonic() - t0)


def rollback_task(session: LinkSession, check_mode: bool = False,
                  signature: Optional[SignaturePolicy] = None) -> Dict[str, Any]:
    """Switch current back to previous (verified on the board first); check mode says what it would do."""
    board = session.board
    listing = call_agent(session, ["list", board.remote_dir], "listing releases", timeout_s=120)
    cur, prev = listing.get("current"), listing.get("previous")
    if not prev or prev == cur:
        raise DeployError("{}: no previous release to roll back to (current: {})".format(board.label, cur))
    signer = check_release_signature(session, listing, prev, signature or SignaturePolicy(), board.label)
    if check_mode:
        return {"changed": True, "current": cur, "previous": prev, "signed_by": signer,
                "msg": "would switch current from {} back to {}".format(cur, prev)}
    answer = call_agent(session, ["rollback", board.remote_dir, str(prev)], "rolling back", timeout_s=300)
    if not answer.get("ok"):
        bad = answer.get("bad") or []
        raise VerifyError("{}: previous release {} is damaged on the board ({}); nothing was switched".format(
            board.label, answer.get("release"), "; ".join("{}: {}".format(r, p) for r, p in bad[:3])))
    return {"changed": True, "current": answer["current"], "previous": answer.get("previous"), "signed_by": signer,
            "msg": "current {} -> {}".format(cur, answer["current"])}


def list_task(session: LinkSession) -> Dict[str, Any]:
    listing = call_agent(session, ["list", session.board.remote_dir], "listing releases", timeout_s=120)
    return {"changed": False, "current": listing.get("current"), "previous": listing.get("previous"),
            "releases": listing.get("releases", []), "remote_dir": listing.get("remote_dir"),
            "msg": "current {}".format(listing.get("current") or "none")}


ARGS = ("state", "bundle", "keep", "force", "remote_dir", "remote_python", "target", "require_signature",
        "trusted_keys")


def run_task(host_name: str, args: Dict[str, Any], link: Link, check_mode: bool = False) -> Dict[str, Any]:
    """Check the task's arguments, then flash, roll back or list on one host."""
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise ConfigError("edgekit_release: unknown argument(s) {}; allowed: {}".format(
            ", ".join(unknown), ", ".join(ARGS)))
    state = args.get("state") or "flashed"
    if state not in STATES:
        raise ConfigError("edgekit_release: state {!r}; allowed: {}".format(state, ", ".join(STATES)))
    target = args.get("target")
    if target is not None and not isinstance(target, str):
        raise ConfigError("edgekit_release: target: expected a target name, got {!r}".format(target))
    board = Board(host=HostSpec(user="", host=host_name), name=host_name, target=target or None,
                  remote_dir=check_remote_dir(args.get("remote_dir") or DEFAULT_REMOTE_DIR, "edgekit_release: remote_dir"),
                  remote_python=check_remote_python(args.get("remote_python") or DEFAULT_REMOTE_PYTHON,
                                                    "edgekit_release: remote_python"))
    keys = args.get("trusted_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    policy = SignaturePolicy(require=_flag(args.get("require_signature"), "require_signature"),
                             trusted_keys=tuple(os.path.abspath(os.path.expanduser(str(k))) for k in keys))
    session = LinkSession(board, link)
    if state == "listed":
        return list_task(session)
    if state == "rolled_back":
        return rollback_task(session, check_mode, policy)
    bundle = args.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise ConfigError("edgekit_release: state=flashed needs bundle (a directory with manifest.json), got "
                          "{!r}".format(bundle))
    return flash_task(session, os.path.abspath(os.path.expanduser(bundle)), keep=_int(args.get("keep", DEFAULT_KEEP)),
                      force=_flag(args.get("force"), "force"), check_mode=check_mode, signature=policy)


def _flag(value: Any, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ConfigError("edgekit_release: {}: expected true or false, got {!r}".format(name, value))


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value
