"""What the device and the server must compute alike: labels, pair seeds, mask signs,
share points and the layout of one share message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedge.secure import keys, prg, shamir

SEED_BYTES = 32


@dataclass(frozen=True)
class Advert:
    """A device's public keys for one round (stage 1)."""

    device_id: str
    encrypt_public: bytes  # keys the share messages sent to it
    mask_public: bytes  # agrees the pairwise mask seeds
    mask_prg: str = prg.DEFAULT  # the mask generator the device prefers (fedge.secure.prg)


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


def pair_seed(private: Private, peer_public: bytes, round_: int, me: str, peer: str
              ) -> bytes:
    """The seed of the pair's mask vector in this round (the same for both)."""
    return keys.agree(private, peer_public, _label("mask", round_, *pair_ids(me, peer)))


def pair_sign(me: str, peer: str) -> int:
    """The sign with which me applies the pair's mask: +1 if me < peer, -1 otherwise, so
    that the pair's two masks cancel in the sum."""
    return 1 if me < peer else -1


def round_prg(adverts: Mapping[str, Advert]) -> str:
    """The mask generator of a round with these adverts: AES-CTR only when every device
    prefers it, ChaCha20 otherwise (also for devices that name none or one unknown
    here). The server and each device compute it alike from the roster they share."""
    kinds = {a.mask_prg for a in adverts.values()}
    return prg.AES_CTR if kinds == {prg.AES_CTR} else prg.DEFAULT


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
