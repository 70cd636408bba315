"""The server's side of SecAgg+: relays, a running masked sum, and the unmasking.

The server sees public keys, sealed share messages it cannot open, masked inputs it
adds up as they arrive (uint32 addition wraps: arithmetic mod 2^32, one model-sized
vector of memory), and in the last step the shares that remove the masks: the self-mask
seeds of the devices whose input it holds, and the mask keys of the devices that shared
keys but sent no input (their pair masks sit uncancelled in their neighbours' inputs).
From these it learns the sum of the survivors' inputs, and nothing it could not compute
from that sum.

The stages, with the sets of the paper: U1 advertised keys, U2 shared keys, U3 sent a
masked input, U4 answered the unmasking. Each ``add_*`` takes one device's message of
one stage; the round's driver decides when a stage closes (all in, or its deadline).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.errors import FedgeError
from fedge.secure import graph, keys, masks, prg, shamir
from fedge.secure.masks import Advert, Params


class UnmaskFailed(FedgeError):
    """Too few shares to remove some device's masks: the round cannot commit."""


class MaskedSum:
    """One secure round's relay and running sum on the server."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.adverts: dict[str, Advert] = {}  # U1
        self.prg = prg.DEFAULT  # the mask generator, fixed with U1 (masks.round_prg)
        self._neighbours: dict[str, list[str]] = {}
        self._senders: set[str] = set()  # U2: devices whose share messages arrived
        self._inbox: dict[str, dict[str, bytes]] = {}  # recipient -> sender -> sealed
        self.total = np.zeros(params.size, np.uint32)
        self.weights: dict[str, float] = {}  # U3, with each input's weight
        self._seed_shares: dict[str, dict[int, bytes]] = {}  # owner -> point -> share
        self._key_shares: dict[str, dict[int, bytes]] = {}
        self.answered: set[str] = set()  # U4

    # stage 1
    def add_advert(self, advert: Advert) -> None:
        """Takes a device's public keys."""
        if advert.device_id in self.adverts:
            raise ValueError(f"{advert.device_id!r} already advertised")
        self.adverts[advert.device_id] = advert

    def close_adverts(self) -> dict[str, list[str]]:
        """Fixes U1 and the neighbour graph over it."""
        self._neighbours = graph.neighbours(self.adverts, self.params.degree,
                                            self.params.seed)
        self.prg = masks.round_prg(self.adverts)
        return self._neighbours

    def neighbours(self, device_id: str) -> list[str]:
        """A device's neighbours in this round's graph (after close_adverts)."""
        return self._neighbours.get(device_id, [])

    # stage 2
    def add_shares(self, sender: str, sealed: Mapping[str, bytes]) -> None:
        """Takes a device's share messages: exactly one for each of its neighbours."""
        if sender not in self._neighbours:
            raise ValueError(f"{sender!r} did not advertise keys this round")
        if sorted(sealed) != self._neighbours[sender]:
            raise ValueError(f"{sender!r} must send one share message per neighbour")
        self._senders.add(sender)
        for recipient, message in sealed.items():
            self._inbox.setdefault(recipient, {})[sender] = message

    @property
    def shared(self) -> set[str]:
        """U2: devices whose share messages arrived."""
        return set(self._senders)

    @property
    def shared_count(self) -> int:
        """|U2|, without building the set."""
        return len(self._senders)

    def messages_for(self, recipient: str) -> dict[str, bytes]:
        """The sealed messages addressed to recipient, by sender (after U2 closes): k of
        them, kept by recipient as they arrive, not looked up in all n senders'."""
        return dict(self._inbox.get(recipient, {}))

    # stage 3
    def add_masked(self, device_id: str, masked: np.ndarray, weight: float) -> None:
        """Adds a masked input to the running sum (mod 2^32)."""
        if device_id not in self._senders:
            raise ValueError(f"{device_id!r} shared no keys this round")
        if device_id in self.weights:
            raise ValueError(f"{device_id!r} already sent its input")
        if masked.dtype != np.uint32 or masked.shape != (self.params.size,):
            raise ValueError(f"a masked input is {self.params.size} uint32 values")
        np.add(self.total, masked, out=self.total)
        self.weights[device_id] = weight

    # stage 4
    def request(self, device_id: str) -> tuple[list[str], list[str]]:
        """What a survivor is asked for: (its neighbours that sent inputs, its
        neighbours that shared keys but sent none); only those it holds shares of."""
        peers = [p for p in self.neighbours(device_id) if p in self._senders]
        return ([p for p in peers if p in self.weights],
                [p for p in peers if p not in self.weights])

    def add_reveal(self, device_id: str, seed_shares: Mapping[str, bytes],
                   key_shares: Mapping[str, bytes]) -> None:
        """Takes a survivor's shares (checked against what it was asked)."""
        if device_id not in self.weights or device_id in self.answered:
            raise ValueError(f"{device_id!r} is not a survivor waiting to unmask")
        alive, gone = self.request(device_id)
        if not set(seed_shares) <= set(alive) or not set(key_shares) <= set(gone):
            raise ValueError(f"{device_id!r} sent shares it was not asked for")
        x = masks.point(sorted(self.adverts), device_id)
        for owner, share in seed_shares.items():
            self._seed_shares.setdefault(owner, {})[x] = share
        for owner, share in key_shares.items():
            self._key_shares.setdefault(owner, {})[x] = share
        self.answered.add(device_id)

    def unmask(self) -> np.ndarray:
        """The survivors' (U3) input sum mod 2^32, masks removed; raises UnmaskFailed
        when some secret has fewer than threshold shares."""
        round_ = self.params.round
        terms = [(self._reconstruct(self._seed_shares, owner, masks.SEED_BYTES, "seed"), -1)
                 for owner in sorted(self.weights)]
        for owner in sorted(self.shared - set(self.weights)):
            private = keys.private_key(
                self._reconstruct(self._key_shares, owner, 32, "mask key"))
            # each surviving neighbour added its signed pair mask with owner: remove it
            terms += [(masks.pair_seed(private, self.adverts[peer].mask_public, round_,
                                       owner, peer), -masks.pair_sign(peer, owner))
                      for peer in self.neighbours(owner) if peer in self.weights]
        return prg.accumulate(self.total.copy(), terms, self.prg)

    def _reconstruct(self, table: dict[str, dict[int, bytes]], owner: str, length: int,
                     what: str) -> bytes:
        shares = table.get(owner, {})
        if len(shares) < self.params.threshold:
            raise UnmaskFailed(f"{len(shares)} of {self.params.threshold} shares of "
                               f"{owner!r}'s {what} arrived")
        chosen = dict(sorted(shares.items())[:self.params.threshold])
        return shamir.combine_bytes(chosen, length)
