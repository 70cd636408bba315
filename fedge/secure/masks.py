"""What the device and the server must compute alike: labels, pair seeds, mask signs,
share points and the layout of one share message."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedge.secure import keys, prg, shamir

SEED_BYTES = 32


@dataclass(frozen=True)
class Advert:
    """A device's public keys for one round (stage 1)."""

    device_id: str
    encrypt_public: bytes  # keys the share messages sent to it
    mask_public: bytes  # agrees the pairwise mask seeds


@dataclass(frozen=True)
class Params:
    """A secure round's public parameters, the same for the server and every device.

    threshold: shares (of a neighbourhood's k) that reconstruct a secret.
    degree: k, the neighbours each device pairs with (see fedge.secure.graph).
    seed: the round's public randomness (the neighbour graph).
    noise_std: distributed DP, the std of the noise each device adds before masking.
    """

    round: int
    threshold: int
    degree: int
    seed: bytes
    size: int  # entries of the flattened model
    clip: float
    weight_cap: int
    scale: float
    noise_std: float = 0.0


def _label(kind: str, round_: int, *ids: str) -> bytes:
    return "\x00".join(["fedge-secagg", kind, str(round_), *ids]).encode()


def pair_ids(a: str, b: str) -> tuple[str, str]:
    """A pair of ids in sorted order (labels must not depend on who computes them)."""
    return (a, b) if a < b else (b, a)


Private = bytes | keys.KeyPair | X25519PrivateKey  # what keys.agree takes


def encryption_key(private: Private, peer_public: bytes, round_: int, me: str, peer: str
                   ) -> bytes:
    """The AES-GCM key of the pair's share messages in this round."""
    return keys.agree(private, peer_public, _label("encrypt", round_, *pair_ids(me, peer)))


def associated_data(round_: int, sender: str, recipient: str) -> bytes:
    """What a share message is bound to: the round and who sent it to whom."""
    return _label("share", round_, sender, recipient)


def pair_mask(private: Private, peer_public: bytes, round_: int, me: str, peer: str,
              size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The pair's mask vector; me adds it if me < peer, subtracts it otherwise. out: a
    buffer to write it into (prg.expand)."""
    seed = keys.agree(private, peer_public, _label("mask", round_, *pair_ids(me, peer)))
    return prg.expand(seed, size, out)


def signed_pair_mask(private: Private, peer_public: bytes, round_: int, me: str, peer: str,
                     size: int) -> np.ndarray:
    """The pair mask with the sign me applies to its input (mod 2^32)."""
    mask = pair_mask(private, peer_public, round_, me, peer, size)
    return mask if me < peer else (np.uint32(0) - mask).astype(np.uint32)


def apply_pair_mask(out: np.ndarray, private: Private, peer_public: bytes, round_: int,
                    me: str, peer: str, sign: int = 1, scratch: np.ndarray | None = None
                    ) -> None:
    """out += sign * (the pair mask with me's sign), in place, mod 2^32 (no negated
    copy of a model-sized vector). scratch: a uint32 buffer of out's size for the mask,
    reused across calls."""
    mask = pair_mask(private, peer_public, round_, me, peer, out.size, scratch)
    if (me < peer) == (sign > 0):
        np.add(out, mask, out=out)
    else:
        np.subtract(out, mask, out=out)


def point(roster: list[str], device_id: str) -> int:
    """A device's Shamir share point: 1 + its index among the round's sorted ids."""
    return 1 + roster.index(device_id)


def pack_shares(seed_share: bytes, key_share: bytes) -> bytes:
    """A share message's plaintext: the self-mask seed's share, then the mask key's."""
    return seed_share + key_share


def unpack_shares(plaintext: bytes) -> tuple[bytes, bytes]:
    """(seed share, key share) of a share message's plaintext."""
    if len(plaintext) != 2 * shamir.SHARE_BYTES:
        raise ValueError("a share message holds two shares")
    return plaintext[:shamir.SHARE_BYTES], plaintext[shamir.SHARE_BYTES:]
