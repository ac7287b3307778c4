"""The pure-Python Ed25519 verifier (edgekit/ed25519.py) against RFC 8032's test vectors and `cryptography`."""
import os

import pytest

from edgekit import ed25519

# RFC 8032, section 7.1: TEST 1, 2 and 3 (secret key, public key, message, signature), hex
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24"
     "655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb0"
     "0d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc0"
     "27beceea1ec40a"),
]


@pytest.mark.parametrize("secret,public,message,signature", RFC8032)
def test_rfc8032_vectors(secret, public, message, signature):
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert ed25519.verify(pk, msg, sig)
    assert not ed25519.verify(pk, msg + b"\0", sig)
    flipped = bytearray(sig)
    flipped[5] ^= 1
    assert not ed25519.verify(pk, msg, bytes(flipped))


def test_agrees_with_cryptography_on_random_keys_and_tampering():
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.exceptions import InvalidSignature

    def reference(pk, msg, sig):
        try:
            Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
            return True
        except (InvalidSignature, ValueError):
            return False

    for i in range(12):
        key = Ed25519PrivateKey.generate()
        pk = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        msg = os.urandom(i * 37)
        sig = key.sign(msg)
        cases = [(pk, msg, sig), (pk, msg + b"x", sig), (pk, msg, sig[:63] + bytes([sig[63] ^ 0x10])),
                 (pk, msg, sig[:32] + (int.from_bytes(sig[32:], "little") + ed25519._L).to_bytes(32, "little")),
                 (bytes([pk[0] ^ 1]) + pk[1:], msg, sig), (pk, msg, sig[:63]), (b"\xff" * 32, msg, sig)]
        for case in cases:
            assert ed25519.verify(*case) == reference(*case), (i, cases.index(case))
