"""`edgekit keygen` and `edgekit sign`: the owner's Ed25519 key pair and the signature of a bundle.

The library side is edgekit/signing.py (which also says where boards look for trusted keys).
"""
import os
from typing import Optional

import click

from edgekit.cli.app import command
from edgekit.cli.output import echo_json
from edgekit.errors import ConfigError


def _passphrase(env_name: Optional[str]) -> Optional[bytes]:
    """The passphrase from the named environment variable (never from the command line, which others can see)."""
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError("--passphrase-env {}: that environment variable is not set or empty".format(env_name))
    return value.encode("utf-8")


_PASS_HELP = "Name of an environment variable that holds the private key's passphrase."


@command("keygen", "edgekit keygen --out ~/.edgekit/owner --comment owner@laptop")
@click.option("--out", "-o", "prefix", required=True, metavar="PREFIX",
              help="Write PREFIX.key (private, mode 0600) and PREFIX.pub (public: copy it to the boards).")
@click.option("--comment", default="", help="A note stored in the .pub line (e.g. owner@laptop).")
@click.option("--passphrase-env", "passphrase_env", metavar="VAR", default=None, help=_PASS_HELP)
@click.option("--force", is_flag=True, help="Replace existing PREFIX.key / PREFIX.pub.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def keygen(prefix: str, comment: str, passphrase_env: Optional[str], force: bool, as_json: bool) -> None:
    """Make an Ed25519 key pair for signing bundles."""
    from edgekit.signing import generate_key

    if any(c in comment for c in "\r\n#"):
        raise ConfigError("--comment {!r}: allowed: one line without '#'".format(comment))
    key_path, pub_path, kid = generate_key(prefix, comment.strip(), _passphrase(passphrase_env), force)
    if as_json:
        echo_json({"private_key": key_path, "public_key": pub_path, "key_id": kid})
        return
    click.echo("key {}: private {} (keep it secret), public {}".format(kid, key_path, pub_path))
    click.echo("boards trust it when {} is in <remote_dir>/trusted_keys/ or in EDGEKIT_TRUSTED_KEYS".format(
        os.path.basename(pub_path)))


@command("sign", "edgekit sign out/raspberry-pi-5 --key ~/.edgekit/owner.key")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--key", "-k", "key_path", required=True, type=click.Path(dir_okay=False),
              help="The private key (PREFIX.key from `edgekit keygen`).")
@click.option("--passphrase-env", "passphrase_env", metavar="VAR", default=None, help=_PASS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sign(bundle: str, key_path: str, passphrase_env: Optional[str], as_json: bool) -> None:
    """Sign BUNDLE's manifest (which holds every stage file's sha256): writes BUNDLE/manifest.sig."""
    from edgekit.signing import sign_bundle

    res = sign_bundle(bundle, key_path, _passphrase(passphrase_env))
    if as_json:
        echo_json(res._asdict())
        return
    click.echo("signed {} with key {} -> {}".format(bundle, res.key_id, res.signature_path))
