"""Signed bundles: keygen/sign from the CLI; the runtime refuses altered, unsigned and foreign bundles when a
signature is required (by the caller or by the device's own setting); it imports without `cryptography`."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bundle_edit import copy_bundle, edit_manifest, read_stage, write_stage
from edgekit.errors import BundleError, ConfigError
from edgekit.runtime import EarlyExitRunner
from edgekit.signing import ENV_TRUSTED_KEYS, SIGNATURE_NAME, generate_key, parse_public_keys, sign_bundle

EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")


def edgekit(*args):
    return subprocess.run([EDGEKIT] + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    got = edgekit("keygen", "--out", d / "owner", "--comment", "owner@laptop", "--json")
    assert got.returncode == 0, got.stderr
    owner = json.loads(got.stdout)
    _, other_pub, other_id = generate_key(str(d / "other"))
    return {"dir": d, "key": owner["private_key"], "pub": owner["public_key"], "id": owner["key_id"],
            "other_key": str(d / "other.key"), "other_pub": other_pub, "other_id": other_id}


@pytest.fixture(scope="module")
def signed(demo_bundles, tmp_path_factory, keys):
    bundle = copy_bundle(demo_bundles("int8"), str(tmp_path_factory.mktemp("signed") / "b"))
    got = edgekit("sign", bundle, "--key", keys["key"])
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "signed {} with key {} -> {}".format(bundle, keys["id"],
                                                                       os.path.join(bundle, SIGNATURE_NAME))
    return bundle


@pytest.fixture(autouse=True)
def no_device_setting(monkeypatch):
    monkeypatch.delenv(ENV_TRUSTED_KEYS, raising=False)


def test_keygen_writes_a_private_key_only_the_owner_reads(keys):
    assert os.stat(keys["key"]).st_mode & 0o777 == 0o600
    with open(keys["pub"]) as f:
        pub = parse_public_keys(f.read(), keys["pub"])
    assert [(k.key_id, k.comment) for k in pub] == [(keys["id"], "owner@laptop")]
    again = edgekit("keygen", "--out", os.path.join(str(keys["dir"]), "owner"))
    assert again.returncode == 2 and "exists; choose another --out or pass --force" in again.stderr


def test_keygen_creates_a_missing_key_directory_for_the_owner_only(tmp_path):
    """A fresh machine has no ~/.edgekit: keygen makes it, mode 0700; a parent that is a file is refused."""
    got = edgekit("keygen", "--out", tmp_path / "home" / ".edgekit" / "owner")
    assert got.returncode == 0, got.stderr
    assert os.stat(tmp_path / "home" / ".edgekit").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "home" / ".edgekit" / "owner.key").st_mode & 0o777 == 0o600
    (tmp_path / "plain").write_text("not a directory")
    bad = edgekit("keygen", "--out", tmp_path / "plain" / "keys" / "owner")
    assert bad.returncode == 2 and bad.stderr.startswith("edgekit: error: cannot create directory "), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and (tmp_path / "plain").read_text() == "not a directory"


def test_a_correctly_signed_bundle_runs(signed, keys, test_split):
    r = EarlyExitRunner(signed, trusted_keys=[keys["pub"]], require_signature=True)
    assert r.signed_by == keys["id"]
    assert r.run(test_split.x[:8]).predictions.shape == (8,)
    r = EarlyExitRunner(signed, trusted_keys=str(keys["dir"]))      # a directory of *.pub files
    assert r.signed_by == keys["id"]


def test_an_altered_stage_file_is_refused(signed, keys, tmp_path):
    bundle = copy_bundle(signed, str(tmp_path / "b"))
    data = bytearray(read_stage(bundle, 2))
    data[len(data) // 2] ^= 1                           # one weight bit; the manifest is left as signed
    write_stage(bundle, 2, bytes(data), fix_sha=False)
    with pytest.raises(BundleError, match="stage file altered"):
        EarlyExitRunner(bundle, trusted_keys=[keys["pub"]], require_signature=True)


def test_an_altered_manifest_is_refused(signed, keys, tmp_path):
    bundle = copy_bundle(signed, str(tmp_path / "b"))
    data = bytearray(read_stage(bundle, 2))
    data[len(data) // 2] ^= 1
    write_stage(bundle, 2, bytes(data), fix_sha=True)   # a consistent bundle, but not the one that was signed
    with pytest.raises(BundleError, match="manifest.json was altered after it was signed"):
        EarlyExitRunner(bundle, trusted_keys=[keys["pub"]])
    sig_path = os.path.join(bundle, SIGNATURE_NAME)     # ... also when the attacker updates the signed sha256
    with open(sig_path) as f:
        sig = json.load(f)
    with open(os.path.join(bundle, "manifest.json"), "rb") as f:
        sig["manifest_sha256"] = hashlib.sha256(f.read()).hexdigest()
    with open(sig_path, "w") as f:
        json.dump(sig, f)
    with pytest.raises(BundleError, match="signature by key {} does not verify".format(keys["id"])):
        EarlyExitRunner(bundle, trusted_keys=[keys["pub"]])


def test_thresholds_are_covered_too(signed, keys, tmp_path):
    bundle = copy_bundle(signed, str(tmp_path / "b"))
    edit_manifest(bundle, lambda d: d["stages"][0]["exit"].update(threshold=0.0))
    with pytest.raises(BundleError, match="altered after it was signed"):
        EarlyExitRunner(bundle, trusted_keys=[keys["pub"]])


def test_an_unsigned_bundle_is_refused(demo_bundles, keys):
    with pytest.raises(BundleError, match=r"is not signed \(manifest.sig missing\)"):
        EarlyExitRunner(demo_bundles("int8"), trusted_keys=[keys["pub"]], require_signature=True)
    assert EarlyExitRunner(demo_bundles("int8")).signed_by is None      # nothing required: it runs


def test_a_bundle_signed_by_another_key_is_refused(signed, keys):
    with pytest.raises(BundleError, match="signed by key {}, which .* does not trust \\(trusted: {}\\)".format(
            keys["id"], keys["other_id"])):
        EarlyExitRunner(signed, trusted_keys=[keys["other_pub"]])


def test_a_damaged_signature_file_is_refused(signed, keys, tmp_path):
    bundle = copy_bundle(signed, str(tmp_path / "b"))
    with open(os.path.join(bundle, SIGNATURE_NAME), "w") as f:
        f.write("{}")
    with pytest.raises(BundleError, match="not an edgekit-signature-v1 signature"):
        EarlyExitRunner(bundle, trusted_keys=[keys["pub"]])


def test_require_signature_needs_keys(signed):
    with pytest.raises(ConfigError, match="no trusted key is configured"):
        EarlyExitRunner(signed, require_signature=True)
    with pytest.raises(ConfigError, match="trusted key /nope.pub not found"):
        EarlyExitRunner(signed, trusted_keys=["/nope.pub"])


def test_device_setting_by_environment(signed, demo_bundles, keys, monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, keys["pub"])
    assert EarlyExitRunner(signed).signed_by == keys["id"]
    with pytest.raises(BundleError, match="EDGEKIT_TRUSTED_KEYS requires a signature"):
        EarlyExitRunner(demo_bundles("int8"))
    monkeypatch.setenv(ENV_TRUSTED_KEYS, keys["other_pub"])      # the device trusts another key only
    with pytest.raises(BundleError, match="which EDGEKIT_TRUSTED_KEYS does not trust"):
        EarlyExitRunner(signed, trusted_keys=[keys["pub"]])      # the caller's keys do not lift the device's


def test_device_setting_by_trusted_keys_dir_of_a_flashed_release(signed, demo_bundles, keys, tmp_path):
    remote = tmp_path / "edgekit"
    for name, src in (("aaaaaaaaaaaaaaaa", signed), ("bbbbbbbbbbbbbbbb", demo_bundles("int8"))):
        copy_bundle(src, str(remote / "releases" / name))
    os.symlink("releases/aaaaaaaaaaaaaaaa", str(remote / "current"))
    assert EarlyExitRunner(str(remote / "current")).signed_by is None          # no trusted_keys/ yet
    (remote / "trusted_keys").mkdir()
    with pytest.raises(BundleError, match="signed by key {}, which .*trusted_keys does not trust .*none".format(
            keys["id"])):
        EarlyExitRunner(str(remote / "current"))                              # an empty dir trusts nobody
    (remote / "trusted_keys" / "owner.pub").write_text(open(keys["pub"]).read())
    assert EarlyExitRunner(str(remote / "current")).signed_by == keys["id"]
    with pytest.raises(BundleError, match="is not signed"):
        EarlyExitRunner(str(remote / "releases" / "bbbbbbbbbbbbbbbb"))


def test_encrypted_private_key(demo_bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_TEST_PASS", "correct horse")
    got = edgekit("keygen", "--out", tmp_path / "enc", "--passphrase-env", "EDGEKIT_TEST_PASS")
    assert got.returncode == 0, got.stderr
    assert b"ENCRYPTED" in (tmp_path / "enc.key").read_bytes()
    bundle = copy_bundle(demo_bundles("int8"), str(tmp_path / "b"))
    no_pass = edgekit("sign", bundle, "--key", tmp_path / "enc.key")
    assert no_pass.returncode == 2 and "is encrypted: give its passphrase" in no_pass.stderr
    monkeypatch.setenv("EDGEKIT_TEST_PASS", "wrong")
    wrong = edgekit("sign", bundle, "--key", tmp_path / "enc.key", "--passphrase-env", "EDGEKIT_TEST_PASS")
    assert wrong.returncode == 2 and "cannot be loaded (wrong passphrase" in wrong.stderr
    assert not os.path.exists(os.path.join(bundle, SIGNATURE_NAME))
    monkeypatch.setenv("EDGEKIT_TEST_PASS", "correct horse")
    res = sign_bundle(bundle, str(tmp_path / "enc.key"), b"correct horse")
    assert EarlyExitRunner(bundle, trusted_keys=[str(tmp_path / "enc.pub")]).signed_by == res.key_id


def test_sign_refuses_a_broken_bundle(signed, keys, tmp_path):
    bundle = copy_bundle(signed, str(tmp_path / "b"))
    os.remove(os.path.join(bundle, "stage_1.tflite"))
    got = edgekit("sign", bundle, "--key", keys["key"])
    assert got.returncode == 2 and "stage file missing" in got.stderr


_NO_CRYPTO = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("cryptography is not installed on this board")
sys.meta_path.insert(0, Block())
import numpy as np
import edgekit.runtime
from edgekit.runtime import EarlyExitRunner
from edgekit.errors import BundleError
r = EarlyExitRunner(sys.argv[1])
print(r.run(np.zeros((1, 32, 32, 1), np.float32)).predictions.shape)
print(EarlyExitRunner(sys.argv[2], trusted_keys=[sys.argv[3]], require_signature=True).signed_by)
try:
    EarlyExitRunner(sys.argv[4], trusted_keys=[sys.argv[3]])
except BundleError as exc:
    print(exc)
print("cryptography" in sys.modules, "tensorflow" in sys.modules)
"""


def test_runtime_verifies_signatures_without_cryptography(demo_bundles, signed, keys, tmp_path):
    """A board without `cryptography` checks signatures in pure Python: a signed bundle runs, a forged one
    (manifest re-signed by another key under the trusted key's id) is refused."""
    forged = copy_bundle(signed, str(tmp_path / "forged"))
    other = sign_bundle(forged, keys["other_key"])
    with open(os.path.join(forged, SIGNATURE_NAME)) as f:
        sig = json.load(f)
    sig["key_id"] = keys["id"]                                  # claims the trusted key, signed by another one
    with open(os.path.join(forged, SIGNATURE_NAME), "w") as f:
        json.dump(sig, f)
    assert other.key_id != keys["id"]
    out = subprocess.run([sys.executable, "-c", _NO_CRYPTO, demo_bundles("int8"), signed, keys["pub"], forged],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "(1,)"
    assert lines[1] == keys["id"]
    assert "the signature by key {} does not verify".format(keys["id"]) in lines[2]
    assert lines[3] == "False False"


def test_python_m_runtime_options(signed, demo_bundles, keys, tmp_path):
    data = str(tmp_path / "x.npz")
    np.savez(data, x=np.zeros((3, 32, 32, 1), np.float32))
    base = [sys.executable, "-m", "edgekit.runtime"]
    ok = subprocess.run(base + [signed, data, "--json", "--require-signature", "--trusted-key", keys["pub"]],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["predictions"]) == 3
    bad = subprocess.run(base + [demo_bundles("int8"), data, "--require-signature", "--trusted-key", keys["pub"]],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("edgekit: error: bundle ")
    assert "is not signed" in bad.stderr
