"""Key agreement and authenticated encryption for secure aggregation.

Each device makes two X25519 key pairs per round: one to encrypt the shares it sends its
neighbours (the server relays only ciphertexts), one whose pairwise agreements seed the
masks. A shared secret goes through HKDF-SHA256 with a label saying what it is for, so
the same agreement never keys two things; AES-256-GCM seals each share message with the
round and both device ids as associated data, so a relayed ciphertext cannot be replayed
to another device or another round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12

_RAW = serialization.Encoding.Raw


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw bytes (the private half never leaves the device,
    except as Shamir shares of the mask key)."""

    private: bytes
    public: bytes
    # The private half as cryptography's object: parsing the bytes again for each of a
    # device's ~3k agreements derives the public key each time (a scalar multiplication).
    key: X25519PrivateKey | None = field(default=None, compare=False, repr=False)


def generate() -> KeyPair:
    """A fresh X25519 key pair."""
    key = X25519PrivateKey.generate()
    private = key.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return KeyPair(private, key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
                   key)


def private_key(private: bytes | KeyPair) -> X25519PrivateKey:
    """cryptography's private key of raw bytes, or the one a KeyPair already holds."""
    if isinstance(private, KeyPair):
        if private.key is not None:
            return private.key
        private = private.private
    return X25519PrivateKey.from_private_bytes(private)


def public_of(private: bytes) -> bytes:
    """The public key of a raw X25519 private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        _RAW, serialization.PublicFormat.Raw)


def agree(private: bytes | KeyPair | X25519PrivateKey, peer_public: bytes, label: bytes
          ) -> bytes:
    """A 32-byte key both sides derive alike: HKDF-SHA256 of the X25519 secret, bound to
    label (purpose, round and the pair's ids). private: raw bytes, a KeyPair, or an
    already parsed key (what a device or the server agrees with many times)."""
    if len(peer_public) != KEY_BYTES:
        raise ValueError("a public key is 32 bytes")
    if isinstance(private, KeyPair) and private.key is not None:
        key = private.key
    elif isinstance(private, bytes | KeyPair):
        key = private_key(private)
    else:
        key = private
    shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=label).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes, nonce: bytes | None = None
         ) -> bytes:
    """AES-256-GCM encryption: a random nonce, then the ciphertext and its tag.

    nonce: NONCE_BYTES fresh random bytes (a caller sealing many messages draws them in
    one read of the system's entropy); never reused under one key.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise ValueError(f"an AES-GCM nonce is {NONCE_BYTES} bytes")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of seal(); raises cryptography's InvalidTag when tampered with."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
