"""The mask generator: a 32-byte seed expanded into a vector of Z_{2^32}.

ChaCha20 (RFC 8439, from ``cryptography``) keyed by the seed, run over zeros: the
keystream read as little-endian uint32 is computationally indistinguishable from
uniform, which is all a one-time pad mod 2^32 needs. Each seed masks one vector once (it
is derived per round and per pair), so the fixed nonce is never reused under a key.
"""

from __future__ import annotations

import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

LITTLE = sys.byteorder == "little"
_NONCE = bytes(16)  # ChaCha20 in cryptography: 4-byte counter + 12-byte nonce, all zero
_PIECE = 1 << 20  # bytes of keystream written at a time
_ZEROS = memoryview(bytes(_PIECE))


def expand(seed: bytes, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """size uint32 values from the seed's ChaCha20 keystream.

    out: a uint32 vector of size to write them into (a caller that expands many seeds
    reuses one buffer). The keystream is written in place, a MiB at a time: update()
    would allocate it as bytes first, which costs more than the cipher itself for a
    large model.
    """
    if len(seed) != 32:
        raise ValueError("a mask seed is 32 bytes")
    if out is None:
        out = np.empty(size, np.uint32)
    elif out.dtype != np.uint32 or out.shape != (size,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous vector of {size} uint32 values")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    raw = memoryview(out.view(np.uint8).data)
    for offset in range(0, len(raw), _PIECE):
        n = min(_PIECE, len(raw) - offset)
        encryptor.update_into(_ZEROS[:n], raw[offset:offset + n])
    if not LITTLE:  # the keystream is read as little-endian words
        out.byteswap(inplace=True)
    return out
