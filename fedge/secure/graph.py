"""The SecAgg+ neighbour graph: whom each device shares its secrets with and masks
against.

Bell, Bonawitz, Gascón, Lepoint, Raykova. "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead". CCS 2020. https://eprint.iacr.org/2020/704

Instead of every pair (SecAgg, O(n) per device), each device pairs with k others, k on
the order of log n. The graph is a Harary-style ring: the round's devices, in an order
drawn from the round's seed, sit on a circle and each is joined to the k/2 nearest on
either side, so it is exactly k-regular, and both the server and every device derive
it alike from the seed and the *sorted* ids (no one can choose their neighbours by the
order they joined). With k >= n - 1 it is the complete graph: plain SecAgg.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np


def default_degree(devices: int) -> int:
    """k for a round of n devices: 4 * ceil(log2 n), at least 8, at most n - 1.

    With a threshold just over k/2 (what keeps a lying server from collecting both
    kinds of share of one device), a neighbourhood survives dropouts as long as fewer
    than half of it vanish; 4 log2 n keeps that likely at a 30% dropout rate (at 100
    devices k = 28: a neighbourhood loses 14 with probability under 1%).
    """
    if devices <= 1:
        return 0
    return min(devices - 1, max(8, 4 * math.ceil(math.log2(devices))))


def neighbours(device_ids: Iterable[str], degree: int, seed: bytes) -> dict[str, list[str]]:
    """Each device's neighbours, sorted, for a k-regular ring drawn from seed.

    degree: k (rounded up to even below n - 1; k >= n - 1 gives everyone everyone).
    """
    ids = sorted(set(device_ids))
    if degree >= len(ids) - 1:
        return {d: [e for e in ids if e != d] for d in ids}
    ring = _ring(ids, seed)
    return {d: _around(ring, position, degree) for position, d in enumerate(ring)}


def neighbours_of(device_ids: Iterable[str], degree: int, seed: bytes, device: str
                  ) -> list[str]:
    """neighbours(device_ids, degree, seed)[device], without the rest of the graph (what
    one device needs: O(n) instead of the whole graph's sets)."""
    ids = sorted(set(device_ids))
    if device not in ids:
        raise KeyError(device)
    if degree >= len(ids) - 1:
        return [e for e in ids if e != device]
    ring = _ring(ids, seed)
    return _around(ring, ring.index(device), degree)


def _ring(ids: list[str], seed: bytes) -> list[str]:
    """The sorted ids in the circle's order drawn from seed."""
    digest = hashlib.sha256(b"fedge-secagg-graph/" + seed).digest()
    order = np.random.default_rng(int.from_bytes(digest[:8], "big")).permutation(len(ids))
    return [ids[i] for i in order]


def _around(ring: list[str], position: int, degree: int) -> list[str]:
    """The ceil(k/2) devices on either side of ring[position], sorted (the edges are
    symmetric: each device is joined to those after it and, by them, to those before)."""
    n, half = len(ring), (degree + 1) // 2
    return sorted({ring[(position + step) % n] for step in range(1, half + 1)}
                  | {ring[(position - step) % n] for step in range(1, half + 1)})
