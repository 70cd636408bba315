"""The mask generator: a 32-byte seed expanded into a vector of Z_{2^32}.

ChaCha20 (RFC 8439, from ``cryptography``) keyed by the seed, run over zeros: the
keystream read as little-endian uint32 is computationally indistinguishable from
uniform, which is all a one-time pad mod 2^32 needs. Each seed masks one vector once (it
is derived per round and per pair), so the fixed nonce is never reused under a key.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_NONCE = bytes(16)  # ChaCha20 in cryptography: 4-byte counter + 12-byte nonce, all zero


def expand(seed: bytes, size: int) -> np.ndarray:
    """size uint32 values from the seed's ChaCha20 keystream."""
    if len(seed) != 32:
        raise ValueError("a mask seed is 32 bytes")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
