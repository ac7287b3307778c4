"""`edgekit flash --require-signature / --trusted-key`: check a bundle's signature before anything is uploaded.

Sources of trust, each enforced when present (edgekit/signing.py has the formats):
- --trusted-key FILE|DIR on the laptop: checked once, before any board is touched;
- each of the board's own key settings (edgekit/device_keys.py: EDGEKIT_TRUSTED_KEYS in the board's
  environment, the trusted_keys/ of every remote dir its device config records and of this remote dir), as
  reported by the agent's probe: the board runs only bundles every one of them trusts, so flash refuses an
  unsigned or foreign-signed bundle there before uploading it, with or without --require-signature. A
  malformed setting refuses every bundle (it fails closed on the board too).
--require-signature refuses a board when no source exists for it.
"""
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from edgekit.deploy.probe import KeySource
from edgekit.errors import ConfigError
from edgekit.manifest import MANIFEST_NAME
from edgekit.signing import DEVICE_KEYS_DIR, PublicKey, load_trusted_keys, parse_public_keys, verify_manifest


@dataclass(frozen=True)
class SignaturePolicy:
    require: bool = False
    trusted_keys: Tuple[str, ...] = ()

    def check_local(self, bundle_dir: str) -> Optional[str]:
        """The signer's key id when --trusted-key was given (BundleError if it does not verify), else None."""
        if not self.trusted_keys:
            return None
        return verify_manifest(bundle_dir, _manifest_bytes(bundle_dir), load_trusted_keys(self.trusted_keys),
                               "--trusted-key {}".format(", ".join(self.trusted_keys)))

    def check_board(self, bundle_dir: str, board_keys: Tuple[KeySource, ...], label: str) -> Optional[str]:
        """Apply every source for one board; board_keys is the probe's list of the board's key settings."""
        signer = self.check_local(bundle_dir)
        for src in board_keys:
            if src.error is not None:
                raise ConfigError("{}: the board's key setting is malformed: {}; the board runs nothing until it "
                                  "is fixed, so nothing is flashed".format(label, src.error))
            keys = {}   # type: Dict[str, PublicKey]
            for name, text in src.keys:
                where = "{}:{}".format(label, name)
                if text is None:
                    raise ConfigError("{}: unreadable or larger than 64 KiB on the board".format(where))
                for k in parse_public_keys(text, where):
                    keys.setdefault(k.key_id, k)
            signer = verify_manifest(bundle_dir, _manifest_bytes(bundle_dir), keys,
                                     "the board {} ({})".format(label, src.source))
        if not board_keys and self.require and not self.trusted_keys:
            raise ConfigError("--require-signature: {} has no {}/ directory and no --trusted-key was given, so "
                              "there is no key to check the signature against".format(label, DEVICE_KEYS_DIR))
        return signer


def _manifest_bytes(bundle_dir: str) -> bytes:
    with open(os.path.join(bundle_dir, MANIFEST_NAME), "rb") as f:
        return f.read()
