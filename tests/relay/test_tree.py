"""A tree of relays over real gRPC gives the flat run's model, with fewer upstream bytes.

1 server, 3 relays and 12 devices against 1 server and the same 12 devices (the same
partitions, device ids and seed): FedAvg is associative, so every round's global model
matches to float32 rounding, while the root receives 3 updates a round instead of 12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.config.relay import RelayConfig
from fedge.relay.app import Relay
from fedge.simulations.partition import split, write_partitions
from fedge.tasks import load_task
from fedge.tensors import from_blob
from tests.fleet import Fleet

ROUNDS = 2
RELAYS = 3
PER_RELAY = 4
# Plain FedAvg weights, as `fedge simulate` aggregates: the fleet-relative bounds would
# see a relay's mean where the flat run sees each device.
TRUSTED: dict[str, float] = dict(examples_factor=0.0, norm_factor=0.0)


def _models(server: object) -> list[dict[str, np.ndarray]]:
    store = server.store  # type: ignore[attr-defined]
    return [from_blob(store.blob(r))[0] for r in range(ROUNDS + 1)]


def _run_flat(fleet: Fleet, parts: list[Path]) -> tuple[list, list[int]]:
    server = fleet.server(rounds=ROUNDS, min_clients=len(parts),
                          state_dir=str(fleet.tmp / "flat"), **TRUSTED)
    server.start()
    for k, data in enumerate(parts):
        fleet.client(server.port, data, f"client-{k}")
    records = server.wait(120)
    fleet.join_clients()
    return _models(server), [r.bytes_up for r in records[1:]]


def _relay(fleet: Fleet, root_port: int, token: str, i: int,
           min_clients: int = PER_RELAY) -> Relay:
    return Relay(RelayConfig(
        task="digits-mlp", host="127.0.0.1", port=0, state_dir=str(fleet.tmp / f"relay-{i}"),
        insecure=True, upstream=f"127.0.0.1:{root_port}", relay_id=f"relay-{i}",
        upstream_token=token, upstream_insecure=True, min_clients=min_clients,
        poll_seconds=2.0, edge=False, upstream_margin_s=2.0,
        examples_factor=TRUSTED["examples_factor"], norm_factor=TRUSTED["norm_factor"]))


def _same_models(flat: list[dict[str, np.ndarray]], tree: list[dict[str, np.ndarray]]
                 ) -> None:
    """Every round's model of the tree is the flat run's, to float32 rounding."""
    for r in range(1, ROUNDS + 1):
        for name, w in flat[r].items():
            moved = np.abs(w - flat[r - 1][name]).max()
            assert moved > 1e-4  # the round trained: the comparison means something
            diff = np.abs(tree[r][name] - w).max()
            # float32 rounding of the sums, relative to the weights' size
            assert diff <= 8 * np.finfo(np.float32).eps * max(1.0, np.abs(w).max()), \
                (r, name, diff)


def _shares(fleet: Fleet, count: int) -> tuple[list[Path], list[int]]:
    """Uneven partitions of digits (quantity skew), written for the daemons."""
    splits = load_task("digits-mlp").load_data()
    shares = split(splits.train_y, count, "quantity", 0.5, seed=0)
    parts = write_partitions(splits.train_x, splits.train_y, shares, fleet.tmp / "data")
    return parts, [len(s) for s in shares]


@pytest.mark.slow  # two runs of 12 devices: about 20 s
def test_a_tree_of_relays_gives_the_flat_model(fleet: Fleet) -> None:
    # Uneven shares (and uneven sums per relay): a relay that weighed its mean wrongly,
    # or declared the wrong example count, would move the model.
    parts, sizes = _shares(fleet, RELAYS * PER_RELAY)
    sums = [sum(sizes[i * PER_RELAY:(i + 1) * PER_RELAY]) for i in range(RELAYS)]
    assert len(set(sums)) == RELAYS
    flat, flat_bytes = _run_flat(fleet, parts)
    fleet.clients.clear()

    root = fleet.server(rounds=ROUNDS, min_clients=RELAYS, state_dir=str(fleet.tmp / "root"),
                        **TRUSTED)
    root.start()
    relays = [_relay(fleet, root.port, root.tokens.create(f"relay-{i}"), i)
              for i in range(RELAYS)]
    try:
        for i, relay in enumerate(relays):
            relay.start()
            for k in range(i * PER_RELAY, (i + 1) * PER_RELAY):
                fleet.client(relay.port, parts[k], f"client-{k}",
                             token=relay.server.tokens.create(f"client-{k}"))
        records = root.wait(120)
        for relay in relays:
            relay.wait(60)
        fleet.join_clients()
    finally:
        for relay in relays:
            relay.stop()
    tree, tree_bytes = _models(root), [r.bytes_up for r in records[1:]]
    assert [r.clients for r in records[1:]] == [RELAYS] * ROUNDS
    assert [r.examples for r in records[1:]] == [sum(sums)] * ROUNDS
    assert all(not relay.error for relay in relays)
    # Each relay fetched each model version once for its four devices.
    assert [relay.uplink.downloads for relay in relays] == [ROUNDS] * RELAYS
    _same_models(flat, tree)
    # The root receives a relay's update where it received four devices' updates.
    for flat_up, tree_up in zip(flat_bytes, tree_bytes, strict=True):
        assert flat_up / tree_up > 0.8 * PER_RELAY, (flat_bytes, tree_bytes)


def test_a_relay_under_a_relay_gives_the_flat_model(fleet: Fleet) -> None:
    # root <- relay-0 <- (client-0, client-1, relay-1 <- (client-2, client-3))
    parts, sizes = _shares(fleet, 4)
    flat, _ = _run_flat(fleet, parts)
    fleet.clients.clear()
    root = fleet.server(rounds=ROUNDS, min_clients=1, state_dir=str(fleet.tmp / "root"),
                        **TRUSTED)
    root.start()
    top = _relay(fleet, root.port, root.tokens.create("relay-0"), 0, min_clients=3)
    top.start()
    below = _relay(fleet, top.port, top.server.tokens.create("relay-1"), 1, min_clients=2)
    relays = [top, below]
    try:
        below.start()
        for k, relay in enumerate([top, top, below, below]):
            fleet.client(relay.port, parts[k], f"client-{k}",
                         token=relay.server.tokens.create(f"client-{k}"))
        records = root.wait(120)
        for relay in relays:
            relay.wait(60)
        fleet.join_clients()
    finally:
        for relay in relays:
            relay.stop()
    assert [(r.clients, r.examples) for r in records[1:]] == [(1, sum(sizes))] * ROUNDS
    assert [relay.uplink.partials for relay in relays] == [ROUNDS, ROUNDS]
    _same_models(flat, _models(root))
