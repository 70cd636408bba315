"""An in-process secure round: the device and server state machines wired directly,
with a chosen set of devices vanishing after each stage, and every message the server
receives recorded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fedge.secure import graph, quantize
from fedge.secure.device import MaskingDevice
from fedge.secure.masked_sum import MaskedSum
from fedge.secure.masks import Params


@dataclass
class Outcome:
    """What the round produced and everything the server saw."""

    params: Params
    survivors: list[str]
    total: np.ndarray | None  # unmasked sum mod 2^32 (None when unmasking failed)
    masked: dict[str, np.ndarray] = field(default_factory=dict)  # what the server received
    error: str = ""
    prg: str = ""  # the mask generator the round used


def params_for(n: int, size: int, *, clip: float = 1.0, cap: int = 100,
               threshold: int = 0, degree: int = 0) -> Params:
    """Default round parameters for n devices."""
    k = degree or graph.default_degree(n)
    t = threshold or k // 2 + 1
    return Params(round=1, threshold=t, degree=k, seed=os.urandom(16), size=size,
                  clip=clip, weight_cap=cap, scale=quantize.round_scale(clip, cap, n))


def run(inputs: dict[str, np.ndarray], params: Params,
        drop: dict[int, set[str]] | None = None, premask: bool = False,
        prefers: dict[str, str] | None = None) -> Outcome:
    """One secure round of already-encoded (uint32) inputs; drop[s]: devices that
    vanish after stage s (1 advertise, 2 share, 3 masked input); premask: every device
    that shared computes its masks before the share stage closes (as a daemon does);
    prefers: the mask generator a device advertises (default: the faster here)."""
    drop = drop or {}
    prefers = prefers or {}
    devices = {d: MaskingDevice(d, params, prefers.get(d)) for d in inputs}
    server = MaskedSum(params)
    alive = set(devices)
    for d in sorted(alive):
        server.add_advert(devices[d].advertise())
    server.close_adverts()
    alive -= drop.get(1, set())
    roster = sorted(server.adverts)
    for d in sorted(alive):  # each knows its neighbourhood's keys only, as over gRPC
        known = {p: server.adverts[p] for p in [d, *server.neighbours(d)]}
        server.add_shares(d, devices[d].share(known, roster, server.prg))
        if premask:  # before anyone is known to have dropped at stage 2
            devices[d].premask()
    alive -= drop.get(2, set())
    outcome = Outcome(params, [], None)
    for d in sorted(alive):
        masked = devices[d].mask(inputs[d], server.messages_for(d))
        outcome.masked[d] = masked.copy()
        server.add_masked(d, masked, 1.0)
    alive -= drop.get(3, set())
    for d in sorted(alive):
        server.add_reveal(d, *devices[d].reveal(*server.request(d)))
    outcome.survivors = sorted(server.weights)
    outcome.prg = server.prg
    assert all(devices[d].prg == server.prg for d in server.shared)
    try:
        outcome.total = server.unmask()
    except Exception as exc:
        outcome.error = str(exc)
    return outcome
