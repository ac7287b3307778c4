"""flash / rollback / list on one board: probe, upload, verify on the board, switch DIR/current atomically."""
import datetime
import os
import posixpath
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import edgekit
from edgekit.deploy.errors import BoardMismatchError, DeployError, VerifyError
from edgekit.deploy.hosts import Board
from edgekit.deploy.package import Payload, build_payload
from edgekit.deploy.probe import BoardInfo, board_keys, check_board
from edgekit.deploy.signature import SignaturePolicy
from edgekit.deploy.ssh import Session
from edgekit.deploy.upload import EventHook, Uploader, UploadStats, call_agent, where_current
from edgekit.errors import BundleError
from edgekit.manifest import MANIFEST_NAME
from edgekit.signing import SIGNATURE_NAME
from edgekit.targets import Target, get_target

DEFAULT_KEEP = 3
MAX_MANIFEST_BYTES = 4 << 20      # a release's manifest.json / manifest.sig read back for a signature check


@dataclass(frozen=True)
class FlashResult:
    host: str
    bundle_id: str
    model_name: str
    target: str
    remote_dir: str
    current: str
    previous: Optional[str]
    uploaded_files: int
    uploaded_bytes: int
    bundle_bytes: int
    transfer_s: float
    total_s: float
    warnings: Tuple[str, ...]
    removed: Tuple[str, ...]
    board: Dict[str, Any]
    signed_by: Optional[str] = None       # the key id that signed the bundle, when a signature was checked

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "bundle_id": self.bundle_id, "model_name": self.model_name, "target": self.target,
                "signed_by": self.signed_by,
                "remote_dir": self.remote_dir, "current": self.current, "previous": self.previous,
                "uploaded_files": self.uploaded_files, "uploaded_bytes": self.uploaded_bytes,
                "bundle_bytes": self.bundle_bytes, "transfer_s": round(self.transfer_s, 3),
                "total_s": round(self.total_s, 3), "warnings": list(self.warnings), "removed": list(self.removed),
                "board": dict(self.board)}


@dataclass(frozen=True)
class Release:
    id: str
    complete: bool
    model_name: str
    target: str
    flashed_at: str
    flashed_from: str
    size_bytes: int


@dataclass(frozen=True)
class ReleaseList:
    host: str
    remote_dir: str
    releases: Tuple[Release, ...]
    current: Optional[str]
    previous: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "remote_dir": self.remote_dir, "current": self.current, "previous": self.previous,
                "releases": [r.__dict__.copy() for r in self.releases]}


@dataclass(frozen=True)
class SwitchResult:
    host: str
    remote_dir: str
    current: str
    previous: Optional[str]
    signed_by: Optional[str] = None       # the key id that signed the release switched to, when one was checked

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "remote_dir": self.remote_dir, "current": self.current, "previous": self.previous,
                "signed_by": self.signed_by}


def resolve_target(board: Board, bundle_target: str) -> Target:
    """The profile to check the board against: the board's declared target, else the bundle's."""
    built_for = get_target(bundle_target)
    if board.target is None or board.target == bundle_target:
        return built_for
    declared = get_target(board.target)
    if declared.arch != built_for.arch:
        raise BoardMismatchError("{}: the board is declared as {} ({}), the bundle was built for {} ({}); "
                                 "convert the model for {}".format(board.label, declared.name, declared.arch,
                                                                   built_for.name, built_for.arch, declared.name))
    return declared


def probe(session: Session, payload: Payload) -> BoardInfo:
    board = session.board
    answer = call_agent(session, ["probe", board.remote_dir, payload.bundle_id], "probing the board",
                        stdin={"files": payload.expected()}, timeout_s=120)
    return BoardInfo.from_dict(answer, board.label)


def flash(bundle_dir: str, board: Board, force: bool = False, keep: int = DEFAULT_KEEP,
          on_event: EventHook = None, payload: Optional[Payload] = None,
          signature: Optional[SignaturePolicy] = None) -> FlashResult:
    """Upload a bundle and the runtime to board:DIR/releases/<bundle-id>/, verify, switch DIR/current.

    `payload` (from build_payload(bundle_dir)) saves re-hashing the bundle when flashing many boards.
    `signature`: --require-signature / --trusted-key; a board with DIR/trusted_keys/ is checked in any case,
    before anything is uploaded (deploy/signature.py).
    """
    t0 = time.monotonic()
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise DeployError("--keep: expected at least 2 (the current and the previous release), got {!r}".format(keep))
    payload = payload or build_payload(bundle_dir)
    target = resolve_target(board, payload.manifest.target)
    hook = on_event or (lambda event, detail: None)
    with Session(board) as session:
        hook("connected", board.label)
        info = probe(session, payload)
        hook("probed", info.remote_dir)
        signer = (signature or SignaturePolicy()).check_board(payload.bundle_dir, info.device_keys, board.label)
        need = payload.total_bytes if info.release_state == "absent" else bytes_of(payload, info.release_bad)
        warnings = check_board(info, target, payload.manifest.target, need, force, board.label)
        up = Uploader(session, info.remote_dir, payload, info.current, hook)
        stats = UploadStats(0, 0, 0.0)
        if info.release_state == "absent":
            stats = up.upload_new()
        elif info.release_state == "damaged":
            stats = up.repair(info.release_bad)
        hook("verify", info.remote_dir)
        answer = install_release(session, up, info, keep)
    hook("switched", payload.bundle_id)
    return FlashResult(host=board.label, bundle_id=payload.bundle_id, model_name=payload.manifest.model_name,
                       target=target.name, remote_dir=info.remote_dir, current=str(answer["current"]),
                       previous=answer.get("previous"), uploaded_files=stats.files, uploaded_bytes=stats.bytes,
                       bundle_bytes=payload.total_bytes, transfer_s=stats.seconds, total_s=time.monotonic() - t0,
                       warnings=tuple(warnings), removed=tuple(answer.get("removed", ())), board=info.to_dict(),
                       signed_by=signer)


def bytes_of(payload: Payload, rels: Tuple[str, ...]) -> int:
    """The bytes of the payload files at `rels` (what a damaged release on the board needs uploaded again)."""
    wanted = set(rels)
    return sum(f.size for f in payload.files if f.rel in wanted)


def _marker(payload: Payload) -> Dict[str, Any]:
    m = payload.manifest
    return {"bundle_id": payload.bundle_id, "model_name": m.model_name, "target": m.target,
            "files": payload.expected(), "edgekit_version": edgekit.__version__,
            "flashed_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "flashed_from": socket.gethostname()}


def install_release(session: Session, up: Uploader, info: BoardInfo, keep: int) -> Dict[str, Any]:
    """Verify on the board, write the release marker, move the release into place, switch, prune."""
    label = session.board.label
    src = up.staging or "-"
    try:
        answer = call_agent(session, ["install", info.remote_dir, up.payload.bundle_id, src, str(keep)],
                            "verifying and switching", stdin=_marker(up.payload), timeout_s=600)
    except DeployError as exc:
        if not session.is_alive():
            raise DeployError("{}; current points at {} or at the new, verified release".format(
                exc, info.current or "nothing"))
        raise
    if not answer.get("ok"):
        bad = answer.get("bad") or []
        shown = "; ".join("{}: {}".format(rel, problem) for rel, problem in bad[:3])
        more = "" if len(bad) <= 3 else " (and {} more)".format(len(bad) - 3)
        raise VerifyError("{}: checksum mismatch on the board after upload: {}{}; the upload was discarded and "
                          "{}".format(label, shown, more, where_current(info.current, answer)))
    return answer


def rollback(board: Board, signature: Optional[SignaturePolicy] = None) -> SwitchResult:
    """Switch DIR/current back to DIR/previous; previous becomes the release just left. The board verifies the
    previous release's files first. Its signature is checked here first when the board has DIR/trusted_keys/
    or `signature` asks (--require-signature / --trusted-key), as flash does: a board that requires signatures
    would refuse to run an unsigned release, so rolling back to one is refused before anything is switched."""
    label = board.label
    with Session(board) as session:
        listing = call_agent(session, ["list", board.remote_dir], "listing releases", timeout_s=120)
        prev = listing.get("previous")
        signer = check_release_signature(session, listing, prev, signature or SignaturePolicy(), label) \
            if prev else None
        answer = call_agent(session, ["rollback", board.remote_dir] + ([str(prev)] if prev else []), "rolling back",
                            timeout_s=300)
        if not answer.get("ok"):
            bad = answer.get("bad") or []
            raise VerifyError("{}: previous release {} is damaged on the board ({}); nothing was switched".format(
                label, answer.get("release"), "; ".join("{}: {}".format(r, p) for r, p in bad[:3])))
        listing = call_agent(session, ["list", board.remote_dir], "listing releases", timeout_s=120)
    return SwitchResult(host=label, remote_dir=_remote_dir(board, listing), current=str(answer["current"]),
                        previous=answer.get("previous"), signed_by=signer)


def check_release_signature(session: Session, listing: Dict[str, Any], release: str, policy: SignaturePolicy,
                            label: str) -> Optional[str]:
    """Fetch a release's manifest.json and manifest.sig from the board and apply the signature policy to them."""
    try:
        keys = board_keys(listing.get("device_keys"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DeployError("{}: the board's list answer is malformed ({}: {})".format(label, type(exc).__name__, exc))
    if not keys and not policy.require and not policy.trusted_keys:
        return None
    remote = posixpath.join(str(listing.get("remote_dir") or ""), "releases", release)
    with tempfile.TemporaryDirectory(prefix="edgekit-rollback-") as tmp:
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            try:
                size = session.sftp.stat(posixpath.join(remote, name)).st_size
                if size is None or size > MAX_MANIFEST_BYTES:
                    raise DeployError("{}: {}/{} is {} bytes; allowed: at most {}".format(
                        label, remote, name, size, MAX_MANIFEST_BYTES))
                session.sftp.get(posixpath.join(remote, name), os.path.join(tmp, name))
            except FileNotFoundError:
                if name == MANIFEST_NAME:
                    raise DeployError("{}: previous release {} has no {}; nothing was switched".format(
                        label, release, MANIFEST_NAME))
            except (IOError, OSError, EOFError) as exc:
                raise session.lost("reading {}/{}".format(remote, name), exc)
        try:
            return policy.check_board(tmp, keys, label)
        except BundleError as exc:           # name the release on the board, not the local copy
            raise BundleError(str(exc).replace(tmp, "{}:{}".format(label, remote))) from None


def list_releases(board: Board) -> ReleaseList:
    with Session(board) as session:
        answer = call_agent(session, ["list", board.remote_dir], "listing releases", timeout_s=120)
    rels: List[Release] = []
    for r in answer.get("releases", []):
        rels.append(Release(id=str(r["id"]), complete=bool(r["complete"]), model_name=str(r["model_name"]),
                            target=str(r["target"]), flashed_at=str(r["flashed_at"]),
                            flashed_from=str(r["flashed_from"]), size_bytes=int(r["size_bytes"])))
    rels.sort(key=lambda r: r.flashed_at, reverse=True)
    return ReleaseList(host=board.label, remote_dir=_remote_dir(board, answer), releases=tuple(rels),
                       current=answer.get("current"), previous=answer.get("previous"))


def _remote_dir(board: Board, answer: Dict[str, Any]) -> str:
    return str(answer.get("remote_dir") or board.remote_dir)
