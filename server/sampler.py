"""Which devices a round samples: a pure function of the run's seed, the round, the
attempt and the set of device ids, never of the order in which devices joined.

Each (round, attempt) draws from its own generator, seeded from a SHA-256 of the run's
seed, the round and the attempt. The sampler therefore has no state to lose: a run
resumed from its last commit samples exactly as the uninterrupted run would have, with
nothing to checkpoint beside the model, and a retried round does not shift the samples
of every round after it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

from fedge.server.registry import Device

D = TypeVar("D", bound=Device)


def round_rng(seed: int, round_: int, attempt: int) -> random.Random:
    """The generator of one attempt at one round."""
    digest = hashlib.sha256(f"fedge-sample/{seed}/{round_}/{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def sample(devices: Sequence[D], size: int, seed: int, round_: int, attempt: int = 0,
           ) -> list[D]:
    """size of devices, drawn from their ids in sorted order (the canonical order)."""
    ordered = sorted(devices, key=lambda d: d.device_id)
    return round_rng(seed, round_, attempt).sample(ordered, min(size, len(ordered)))
