"""The pure-Python Ed25519 verifier against RFC 8032's vectors and `cryptography`."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.edge.runtime import ed25519

# RFC 8032, section 7.1, TEST 2 (a one-byte message).
RFC_KEY = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_MESSAGE = bytes.fromhex("72")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def test_the_rfc_8032_vector_verifies_and_a_changed_message_does_not() -> None:
    assert ed25519.verify(RFC_KEY, RFC_MESSAGE, RFC_SIGNATURE)
    assert not ed25519.verify(RFC_KEY, b"\x73", RFC_SIGNATURE)


def test_agrees_with_cryptography_on_real_signatures_and_rejects_bad_ones() -> None:
    for n in range(8):
        key = Ed25519PrivateKey.generate()
        public = _raw(key)
        message = os.urandom(n * 37)
        signature = key.sign(message)
        assert ed25519.verify(public, message, signature)
        bad_sig = bytearray(signature)
        bad_sig[n % 64] ^= 0x01
        assert not ed25519.verify(public, message, bytes(bad_sig))
        assert not ed25519.verify(public, message + b"x", signature)
        assert not ed25519.verify(_raw(Ed25519PrivateKey.generate()), message, signature)


def test_malformed_inputs_are_rejected_not_raised() -> None:
    key = Ed25519PrivateKey.generate()
    signature = key.sign(b"m")
    public = _raw(key)
    assert not ed25519.verify(public[:31], b"m", signature)
    assert not ed25519.verify(public, b"m", signature[:63])
    # S >= L (the group order) is malleable and must be refused.
    s = int.from_bytes(signature[32:], "little") + ed25519.L
    assert not ed25519.verify(public, b"m", signature[:32] + s.to_bytes(32, "little"))
    # A y coordinate >= p does not decode.
    assert not ed25519.verify(b"\xff" * 32, b"m", signature)
