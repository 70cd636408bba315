"""The device's side of SecAgg+: four steps, one object per device and round.

1. ``advertise()``: fresh key pairs; the public halves go to the server. Over gRPC they
   travel with the device's polls before the round (:class:`KeyRing`), and the round's
   TRAIN task brings the roster.
2. ``share(adverts)``: the round's roster fixes the neighbour graph; the device draws
   its self-mask seed b, splits b and its mask private key into Shamir shares among its
   neighbours and seals each neighbour's pair of shares under their pairwise key.
3. ``mask(vector, messages)``: the neighbours whose share messages arrived are the ones
   it masks against: y = x + PRG(b) + sum_j ±PRG(s_ij) (mod 2^32). ``premask()`` may
   compute the masks of all neighbours beforehand (they need no input and no share
   message), while the share stage is still open; mask() then takes back the pair masks
   of the neighbours whose messages did not arrive.
4. ``reveal(survivors, dropped)``: for each neighbour the server says survived, its
   share of that neighbour's b; for each it says dropped, its share of that neighbour's
   mask key. Never both for one neighbour, across all requests: a server that claims a
   device both dropped and survived would learn both its masks and so its input. That
   request is refused (:class:`UnmaskRefused`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping

import numpy as np

from fedge.errors import FedgeError
from fedge.secure import graph, keys, masks, prg, shamir
from fedge.secure.masks import Advert, Params


class UnmaskRefused(FedgeError):
    """The server asked for shares that would reveal a device's input."""


class ProtocolError(FedgeError):
    """A step arrived out of order or with messages this device cannot accept."""


class MaskingDevice:
    """One device's secrets and state for one secure round."""

    def __init__(self, device_id: str, params: Params, mask_prg: str | None = None,
                 pairs: tuple[keys.KeyPair, keys.KeyPair] | None = None) -> None:
        """mask_prg: the mask generator this device advertises as its preference
        (default: the faster here, prg.preferred()); pairs: the (encryption, mask) key
        pairs it advertised already (KeyRing.take), instead of fresh ones."""
        self.device_id = device_id
        self.params = params
        self._prefers = mask_prg or prg.preferred()
        if self._prefers not in prg.NAMES:
            raise ValueError(f"unknown mask generator {self._prefers!r}")
        self.prg = prg.DEFAULT  # the round's, fixed by the roster in share()
        self._encrypt, self._mask = pairs or (keys.generate(), keys.generate())
        self._seed = os.urandom(masks.SEED_BYTES)
        self._roster: list[str] = []
        self._adverts: dict[str, Advert] = {}
        self._neighbours: list[str] = []
        self._masked_with: list[str] = []  # neighbours whose share messages arrived
        self._held: dict[str, tuple[bytes, bytes]] = {}  # peer -> (seed share, key share)
        self._sealing: dict[str, bytes] = {}  # peer -> the pair's AES-GCM key (share())
        self._given: dict[str, str] = {}  # peer -> "seed" or "key", once revealed
        self._premask: np.ndarray | None = None  # premask(): every neighbour's, until mask()

    def advertise(self) -> Advert:
        """Stage 1: this round's public keys."""
        return Advert(self.device_id, self._encrypt.public, self._mask.public,
                      self._prefers)

    def share(self, adverts: Mapping[str, Advert], roster: Iterable[str] | None = None,
              mask_prg: str | None = None) -> dict[str, bytes]:
        """Stage 2: a sealed share message for each neighbour, by neighbour id.

        adverts: by device id, at least this device's and its neighbours'; roster: every
        device of the round (U1), from which the graph and the share points follow, and
        mask_prg: the round's generator, both as the server's task names them (a TRAIN
        task carries the keys of the device's neighbourhood only: O(k) of them, not
        O(n)). Without them adverts must be the whole roster's, and the generator
        follows from them (masks.round_prg)."""
        mine = adverts.get(self.device_id)
        if mine is None:
            raise ProtocolError("the roster does not list this device")
        if (mine.encrypt_public, mine.mask_public) != (self._encrypt.public, self._mask.public):
            raise ProtocolError("the roster lists other keys for this device")
        for device_id, advert in adverts.items():
            if advert.device_id != device_id:
                raise ProtocolError(f"advert of {advert.device_id!r} listed as {device_id!r}")
        if (roster is None) != (mask_prg is None):
            raise ValueError("roster and mask_prg go together")
        self._roster = sorted(adverts) if roster is None else sorted(set(roster))
        if not set(adverts) <= set(self._roster):
            raise ProtocolError("adverts of devices that are not in the round")
        if mask_prg is not None and mask_prg not in prg.NAMES:
            raise ProtocolError(f"unknown mask generator {mask_prg!r}")
        self._adverts = dict(adverts)
        self.prg = masks.round_prg(adverts) if mask_prg is None else mask_prg
        self._neighbours = graph.neighbours_of(self._roster, self.params.degree,
                                               self.params.seed, self.device_id)
        missing = [p for p in self._neighbours if p not in adverts]
        if missing:
            raise ProtocolError(f"the round's task lacks the keys of neighbours {missing[:3]}")
        if len(self._neighbours) < self.params.threshold:
            raise ProtocolError(f"{len(self._neighbours)} neighbours cannot hold a "
                                f"{self.params.threshold}-of-n sharing")
        points = [masks.point(self._roster, peer) for peer in self._neighbours]
        seed_shares = shamir.split_bytes(self._seed, self.params.threshold, points)
        key_shares = shamir.split_bytes(self._mask.private, self.params.threshold, points)
        out = {}
        nonces = os.urandom(keys.NONCE_BYTES * len(points))  # one read for all k messages
        for i, (peer, x) in enumerate(zip(self._neighbours, points, strict=True)):
            key = masks.encryption_key(self._encrypt, adverts[peer].encrypt_public,
                                       self.params.round, self.device_id, peer)
            self._sealing[peer] = key  # the same key opens what peer sends back
            out[peer] = keys.seal(key, masks.pack_shares(seed_shares[x], key_shares[x]),
                                  masks.associated_data(self.params.round, self.device_id,
                                                        peer),
                                  nonces[i * keys.NONCE_BYTES:(i + 1) * keys.NONCE_BYTES])
        return out

    def mask(self, vector: np.ndarray, messages: Mapping[str, bytes]) -> np.ndarray:
        """Stage 3: the encoded input plus the self mask and the pair masks of the
        neighbours whose share messages (by sender id) arrived."""
        if not self._roster:
            raise ProtocolError("mask() before share()")
        if vector.dtype != np.uint32 or vector.shape != (self.params.size,):
            raise ProtocolError(f"the input must be {self.params.size} uint32 values")
        for sender, sealed in messages.items():
            if sender not in self._neighbours:
                raise ProtocolError(f"a share message from {sender!r}, not a neighbour")
            key = self._sealing[sender]
            plaintext = keys.open_sealed(key, sealed, masks.associated_data(
                self.params.round, sender, self.device_id))
            self._held[sender] = masks.unpack_shares(plaintext)
        self._masked_with = sorted(messages)
        out, self._premask = self._premask, None
        if out is None:
            out = self._masks(self._masked_with)
        else:  # premask() added every neighbour's: take back those that did not share
            silent = sorted(set(self._neighbours) - set(messages))
            prg.accumulate(out, [(seed, -sign) for seed, sign in self._pair_terms(silent)],
                           self.prg)
        np.add(out, vector, out=out)
        return out

    def premask(self) -> None:
        """Stage 3's masks before the input and the share messages: the self mask plus
        every neighbour's pair mask. They need only this device's secrets and the
        adverts, so a device computes them while the share stage is still open, and
        mask() is left an addition (and, for a neighbour that did not share, a
        subtraction) when the stage closes."""
        if not self._roster:
            raise ProtocolError("premask() before share()")
        self._premask = self._masks(self._neighbours)

    def _masks(self, peers: list[str]) -> np.ndarray:
        """The self mask plus the pair masks (with this device's signs) of peers."""
        return prg.accumulate(np.empty(self.params.size, np.uint32),
                              [(self._seed, 1), *self._pair_terms(peers)], self.prg,
                              fresh=True)

    def _pair_terms(self, peers: list[str]) -> list[tuple[bytes, int]]:
        """(seed, this device's sign) of the pair mask with each of peers."""
        return [(masks.pair_seed(self._mask, self._adverts[peer].mask_public,
                                 self.params.round, self.device_id, peer),
                 masks.pair_sign(self.device_id, peer)) for peer in peers]

    def reveal(self, survivors: Iterable[str], dropped: Iterable[str]
               ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Stage 4: (seed shares of survivors, key shares of dropped), by peer id."""
        alive, gone = set(survivors), set(dropped)
        both = alive & gone | {p for p in alive if self._given.get(p) == "key"} | {
            p for p in gone if self._given.get(p) == "seed"}
        if both:
            raise UnmaskRefused(f"asked for both the self-mask share and the mask-key "
                                f"share of {sorted(both)}: refusing to unmask")
        if self.device_id in gone:
            raise UnmaskRefused("asked to reveal this device's own mask key")
        unknown = (alive | gone) - set(self._held) - {self.device_id}
        if unknown:
            raise ProtocolError(f"holds no shares of {sorted(unknown)}")
        alive.discard(self.device_id)
        for peer in alive:
            self._given[peer] = "seed"
        for peer in gone:
            self._given[peer] = "key"
        return ({p: self._held[p][0] for p in sorted(alive)},
                {p: self._held[p][1] for p in sorted(gone)})


class KeyRing:
    """The key pairs a device advertised on its latest polls: every poll of a secure run
    carries fresh ones (:meth:`fresh`), and a secure round's roster names the pair the
    server took, which :meth:`take` hands out once. The older pairs go with it: the
    server keeps a device's latest advert only, so no later roster can name them."""

    KEEP = 4  # pairs kept: the poll in flight's, and those of a few polls before it

    def __init__(self, device_id: str, mask_prg: str | None = None) -> None:
        self.device_id = device_id
        self._prefers = mask_prg or prg.preferred()
        self._pairs: dict[tuple[bytes, bytes], tuple[keys.KeyPair, keys.KeyPair]] = {}
        self._lock = threading.Lock()

    def fresh(self) -> Advert:
        """A new advert, its key pairs kept for the round that may take it."""
        pairs = keys.generate(), keys.generate()
        with self._lock:
            self._pairs[pairs[0].public, pairs[1].public] = pairs
            while len(self._pairs) > self.KEEP:
                del self._pairs[next(iter(self._pairs))]
        return Advert(self.device_id, pairs[0].public, pairs[1].public, self._prefers)

    def take(self, advert: Advert) -> tuple[keys.KeyPair, keys.KeyPair]:
        """The (encryption, mask) key pairs of advert, which can serve no other round."""
        wanted = advert.encrypt_public, advert.mask_public
        with self._lock:
            if wanted not in self._pairs:
                raise ProtocolError("the round's roster lists keys this device does not "
                                    "hold (used already, or advertised before a restart)")
            while True:  # oldest first, up to the one taken
                key = next(iter(self._pairs))
                pairs = self._pairs.pop(key)
                if key == wanted:
                    return pairs
