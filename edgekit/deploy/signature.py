"""`edgekit flash --require-signature / --trusted-key`: check a bundle's signature before anything is uploaded.

Two sources of trust, each enforced when present (edgekit/signing.py has the formats):
- --trusted-key FILE|DIR on the laptop: checked once, before any board is touched;
- the board's own <remote_dir>/trusted_keys/*.pub (reported by the agent's probe): a board that has them runs
  only bundles signed by one of them, so flash refuses an unsigned or foreign-signed bundle there before
  uploading it, with or without --require-signature.
--require-signature refuses a board when neither source exists for it.
"""
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

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

    def check_board(self, bundle_dir: str, board_keys: Optional[Dict[str, Optional[str]]],
                    label: str) -> Optional[str]:
        """Apply both sources for one board; board_keys is the probe's {file name: text} or None (no
        trusted_keys/ directory on the board)."""
        signer = self.check_local(bundle_dir)
        if board_keys is not None:
            keys = {}   # type: Dict[str, PublicKey]
            for name, text in sorted(board_keys.items()):
                where = "{}:{}/{}".format(label, DEVICE_KEYS_DIR, name)
                if text is None:
                    raise ConfigError("{}: unreadable or larger than 64 KiB on the board".format(where))
                for k in parse_public_keys(text, where):
                    keys.setdefault(k.key_id, k)
            signer = verify_manifest(bundle_dir, _manifest_bytes(bundle_dir), keys,
                                     "the board {} (its {}/)".format(label, DEVICE_KEYS_DIR))
        elif self.require and not self.trusted_keys:
            raise ConfigError("--require-signature: {} has no {}/ directory and no --trusted-key was given, so "
                              "there is no key to check the signature against".format(label, DEVICE_KEYS_DIR))
        return signer


def _manifest_bytes(bundle_dir: str) -> bytes:
    with open(os.path.join(bundle_dir, MANIFEST_NAME), "rb") as f:
        return f.read()
