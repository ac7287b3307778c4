"""Signed bundles: an Ed25519 signature over manifest.json, which holds every stage file's sha256.

Files
  BUNDLE/manifest.sig   JSON {"format": "edgekit-signature-v1", "algorithm": "ed25519", "key_id": ...,
                        "manifest_sha256": ..., "signature": <base64>}; the signed message is
                        b"edgekit-signature-v1\\n" + the exact bytes of manifest.json.
  NAME.pub              public key, one line: "edgekit-ed25519 <base64 of the 32 raw bytes> [comment]";
                        a key file may hold several such lines, '#' starts a comment.
  NAME.key              private key, PKCS#8 PEM (encrypted when a passphrase is given), mode 0600.
  key id                the first 16 hex digits of sha256(raw public key).

Where the runtime finds trusted keys (EarlyExitRunner, python -m edgekit.runtime):
  trusted_keys=... / --trusted-key PATH   given by the caller (files, or directories of *.pub files);
  the device's setting                     EDGEKIT_TRUSTED_KEYS, and <remote_dir>/trusted_keys/ of the remote
                                           dirs recorded in the device config (edgekit/device_keys.py).
Each source that is present must trust the bundle's key (the device's setting cannot be overridden by a
caller's keys); require_signature=True / --require-signature refuses unsigned bundles even when no device
setting exists, and then needs keys from one of the sources.

Python 3.8 syntax, standard library only: a signature is checked with `cryptography` when it is installed,
else with edgekit/ed25519.py (pure Python), so a board verifies without third-party packages; making keys and
signatures (the owner's laptop) needs `cryptography`.
"""
import base64
import binascii
import hashlib
import importlib
import json
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from edgekit.atomic import write_atomic
from edgekit.device_keys import DEVICE_KEYS_DIR, ENV_TRUSTED_KEYS, device_key_paths
from edgekit.errors import BundleError, ConfigError, first_line

SIGNATURE_NAME = "manifest.sig"
FORMAT = "edgekit-signature-v1"
KEY_TYPE = "edgekit-ed25519"
MAX_SIG_BYTES = 4096
MAX_KEY_FILE_BYTES = 1 << 16
_PREFIX = (FORMAT + "\n").encode("ascii")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class PublicKey(NamedTuple):
    key_id: str
    raw: bytes
    comment: str
    source: str


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _crypto(module: str) -> Any:
    """cryptography.<module>, or a ConfigError saying it is needed (imported by name: optional on boards)."""
    try:
        return importlib.import_module("cryptography." + module)
    except ImportError as exc:
        raise ConfigError("signed bundles need the 'cryptography' package, which is not installed here ({}); "
                          "pip install cryptography".format(exc))


def signature_valid(raw_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification: with `cryptography` when it is installed, else in pure Python (edgekit/ed25519.py),
    so that a board without third-party packages still verifies what it runs."""
    try:
        ed = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
        invalid = importlib.import_module("cryptography.exceptions").InvalidSignature
    except ImportError:
        from edgekit.ed25519 import verify

        return verify(raw_key, message, signature)
    try:
        ed.Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, message)
    except (invalid, ValueError):
        return False
    return True


def format_public_key(raw: bytes, comment: str = "") -> str:
    line = "{} {}".format(KEY_TYPE, base64.b64encode(raw).decode("ascii"))
    return (line + " " + comment if comment else line) + "\n"


def parse_public_keys(text: str, source: str) -> List[PublicKey]:
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        raw = b""
        if len(parts) >= 2 and parts[0] == KEY_TYPE:
            try:
                raw = base64.b64decode(parts[1].encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raw = b""
        if len(raw) != 32:
            raise ConfigError("{}:{}: not an edgekit public key; expected '{} <base64 of 32 bytes> [comment]'".format(
                source, n, KEY_TYPE))
        keys.append(PublicKey(key_id(raw), raw, parts[2] if len(parts) > 2 else "", "{}:{}".format(source, n)))
    return keys


def _read_key_file(path: str) -> List[PublicKey]:
    try:
        if os.path.getsize(path) > MAX_KEY_FILE_BYTES:
            raise ConfigError("trusted key file {} is larger than {} bytes".format(path, MAX_KEY_FILE_BYTES))
        with open(path, "r", encoding="utf-8") as f:
            return parse_public_keys(f.read(), path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("trusted key file {} cannot be read: {}".format(path, exc))


def load_trusted_keys(paths: Sequence[str]) -> Dict[str, PublicKey]:
    """key id -> key, from key files and directories of *.pub files. A path that does not exist is an error."""
    keys = {}   # type: Dict[str, PublicKey]
    for path in paths:
        if os.path.isdir(path):
            files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".pub"))
        elif os.path.isfile(path):
            files = [path]
        else:
            raise ConfigError("trusted key {} not found; allowed: a public key file or a directory of *.pub "
                              "files".format(path))
        for f in files:
            for k in _read_key_file(f):
                keys.setdefault(k.key_id, k)
    return keys


def read_signature(bundle_dir: str) -> Optional[Dict[str, str]]:
    """The bundle's manifest.sig, checked for form; None when the bundle is unsigned."""
    path = os.path.join(bundle_dir, SIGNATURE_NAME)
    if not os.path.lexists(path):
        return None
    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > MAX_SIG_BYTES:
        raise BundleError("{}: expected a regular file of at most {} bytes".format(path, MAX_SIG_BYTES))
    try:
        with open(path, "r", encoding="utf-8") as f:
            sig = json.load(f)
    except (OSError, ValueError) as exc:
        raise BundleError("{} is not a readable signature: {}".format(path, exc))
    if not isinstance(sig, dict) or sig.get("format") != FORMAT or sig.get("algorithm") != "ed25519" or \
            not isinstance(sig.get("key_id"), str) or not _KEY_ID_RE.match(sig["key_id"]) or \
            not isinstance(sig.get("signature"), str) or not isinstance(sig.get("manifest_sha256"), str):
        raise BundleError("{}: not an {} signature (format, algorithm 'ed25519', key_id, manifest_sha256, "
                          "signature)".format(path, FORMAT))
    return sig


def verify_manifest(bundle_dir: str, manifest_bytes: bytes, trusted: Dict[str, PublicKey], why: str) -> str:
    """Check manifest.sig over manifest_bytes against the trusted keys; return the signer's key id."""
    sig = read_signature(bundle_dir)
    if sig is None:
        raise BundleError("bundle {} is not signed ({} missing) and {} requires a signature; sign it with "
                          "`edgekit sign BUNDLE --key KEY`".format(bundle_dir, SIGNATURE_NAME, why))
    kid = sig["key_id"]
    key = trusted.get(kid)
    if key is None:
        raise BundleError("bundle {} is signed by key {}, which {} does not trust (trusted: {})".format(
            bundle_dir, kid, why, ", ".join(sorted(trusted)) or "none"))
    if sig["manifest_sha256"] != hashlib.sha256(manifest_bytes).hexdigest():
        raise BundleError("bundle {}: manifest.json was altered after it was signed (its sha256 is not the "
                          "signed one)".format(bundle_dir))
    try:
        blob = base64.b64decode(sig["signature"].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        blob = b""
    if not signature_valid(key.raw, _PREFIX + manifest_bytes, blob):
        raise BundleError("bundle {}: the signature by key {} does not verify (manifest or signature "
                          "altered)".format(bundle_dir, kid))
    return kid


def check_bundle_signature(bundle_dir: str, manifest_bytes: bytes, trusted_keys: Optional[Sequence[str]] = None,
                           require: bool = False) -> Optional[str]:
    """Apply every signature setting in force (the caller's keys, the device's settings, `require`): return
    the signer's key id, or None when no setting asks for a signature."""
    policies = [(name, load_trusted_keys(paths)) for name, paths in device_key_paths(bundle_dir)]
    if trusted_keys:
        given = [trusted_keys] if isinstance(trusted_keys, str) else list(trusted_keys)
        policies.append(("the trusted keys given ({})".format(", ".join(given)), load_trusted_keys(given)))
    if not policies:
        if require:
            raise ConfigError("a signature is required but no trusted key is configured: pass trusted keys "
                              "(--trusted-key), set {} or put *.pub files in <remote_dir>/{}/".format(
                                  ENV_TRUSTED_KEYS, DEVICE_KEYS_DIR))
        return None
    signer = None
    for name, keys in policies:
        signer = verify_manifest(bundle_dir, manifest_bytes, keys, name)
    return signer


# -- the owner's side (laptop): make a key pair, sign a bundle ----------------------------------------------------
class SignResult(NamedTuple):
    bundle_dir: str
    signature_path: str
    key_id: str
    manifest_sha256: str


def _make_key_dir(parent: str, prefix: str) -> None:
    """Create a missing key directory (e.g. ~/.edgekit on a fresh machine) readable by its owner only."""
    if os.path.isdir(parent):
        return
    try:
        os.makedirs(parent, mode=0o700)
    except OSError as exc:
        raise ConfigError("cannot create directory {} for --out {}: {}; allowed: a path whose parent is or can be "
                          "a directory".format(parent, prefix, exc.strerror or exc))


def generate_key(prefix: str, comment: str = "", passphrase: Optional[bytes] = None,
                 force: bool = False) -> Tuple[str, str, str]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub; return (key path, pub path, key id)."""
    key_path, pub_path = prefix + ".key", prefix + ".pub"
    for p in (key_path, pub_path):
        if os.path.exists(p) and not force:
            raise ConfigError("{} exists; choose another --out or pass --force to replace it".format(p))
    ed = _crypto("hazmat.primitives.asymmetric.ed25519")
    ser = _crypto("hazmat.primitives.serialization")
    _make_key_dir(os.path.dirname(os.path.abspath(prefix)), prefix)
    private = ed.Ed25519PrivateKey.generate()
    enc = ser.BestAvailableEncryption(passphrase) if passphrase else ser.NoEncryption()
    pem = private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc)
    raw = private.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    write_atomic(key_path, pem, 0o600)
    write_atomic(pub_path, format_public_key(raw, comment).encode("ascii"), 0o644)
    return key_path, pub_path, key_id(raw)


def load_private_key(path: str, passphrase: Optional[bytes] = None) -> Any:
    ser = _crypto("hazmat.primitives.serialization")
    ed = _crypto("hazmat.primitives.asymmetric.ed25519")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("private key {} cannot be read: {}".format(path, exc))
    try:
        key = ser.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise ConfigError("private key {} is encrypted: give its passphrase (--passphrase-env VAR)".format(path)
                          if passphrase is None else "private key {} is not encrypted; drop the passphrase".format(path))
    except ValueError as exc:
        raise ConfigError("private key {} cannot be loaded (wrong passphrase, or not a PEM private key): {}".format(
            path, first_line(exc, default="invalid")))
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise ConfigError("private key {} is a {}, edgekit signs with Ed25519 keys (edgekit keygen)".format(
            path, type(key).__name__))
    return key


def sign_bundle(bundle_dir: str, key_path: str, passphrase: Optional[bytes] = None) -> SignResult:
    """Check the bundle (every stage file against its sha256 in the manifest), then write BUNDLE/manifest.sig."""
    from edgekit.manifest import MANIFEST_NAME, Manifest, verify_files

    path = os.path.join(bundle_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise BundleError("{} has no {}; sign a bundle directory made by `edgekit convert`".format(
            bundle_dir, MANIFEST_NAME))
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("{} is not UTF-8 text".format(path))
    verify_files(bundle_dir, Manifest.from_json(text))
    key = load_private_key(key_path, passphrase)
    ser = _crypto("hazmat.primitives.serialization")
    raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    digest = hashlib.sha256(data).hexdigest()
    sig = {"format": FORMAT, "algorithm": "ed25519", "key_id": key_id(raw), "manifest_sha256": digest,
           "signature": base64.b64encode(key.sign(_PREFIX + data)).decode("ascii")}
    out = os.path.join(bundle_dir, SIGNATURE_NAME)
    write_atomic(out, (json.dumps(sig, indent=1) + "\n").encode("ascii"), 0o644)
    return SignResult(bundle_dir, out, key_id(raw), digest)
