"""A relay that restarts loses its partial round; its devices reconnect by themselves,
and the upstream round closes on its quorum (or deadline) as for any device, or takes
the restarted relay's update if it rejoins in time."""

from __future__ import annotations

import pytest

from fedge.config.relay import RelayConfig
from fedge.relay.app import Relay
from tests.fleet import Fleet, free_port


def _relay(fleet: Fleet, root_port: int, token: str, name: str, port: int) -> Relay:
    return Relay(RelayConfig(
        task="digits-mlp", host="127.0.0.1", port=port, state_dir=str(fleet.tmp / name),
        insecure=True, upstream=f"127.0.0.1:{root_port}", relay_id=name,
        upstream_token=token, upstream_insecure=True, min_clients=2, poll_seconds=1.0,
        edge=False, upstream_margin_s=1.0, examples_factor=0.0, norm_factor=0.0))


@pytest.mark.slow  # a round that waits out its deadline: about 30 s
def test_a_restarted_relay_rejoins_and_its_devices_follow(fleet: Fleet) -> None:
    parts = fleet.partitions("digits-mlp", 4)
    # The old relay's session expires after 2 s: the restarted one may then join again.
    root = fleet.server(rounds=3, min_clients=1, quorum_fraction=0.5, round_timeout_s=12.0,
                        device_timeout_s=2.0, examples_factor=0.0, norm_factor=0.0)
    root.start()
    ports = [free_port(), free_port()]
    tokens = [root.tokens.create(f"relay-{i}") for i in range(2)]
    relays = [_relay(fleet, root.port, tokens[i], f"relay-{i}", ports[i]) for i in range(2)]
    restarted: list[Relay] = []

    try:
        for i, relay in enumerate(relays):
            relay.start()
            for k in (2 * i, 2 * i + 1):
                fleet.client(relay.port, parts[k], f"client-{k}",
                             token=relay.server.tokens.create(f"client-{k}"))
        # relay-0 goes away as soon as its devices are training in round 1
        victim = relays[0]
        with victim.rounds.cond:
            victim.rounds.cond.wait_for(lambda: victim.rounds.progress().selected > 0, 60)
        victim.stop()
        victim.wait(30)
        again = _relay(fleet, root.port, tokens[0], "relay-0", ports[0])
        restarted.append(again)
        again.start()
        records = root.wait(120)
        again.wait(60)
        relays[1].wait(60)
        fleet.join_clients(60)
    finally:
        for relay in relays + restarted:
            relay.stop()
    committed = [r for r in records if r.round > 0]
    assert len(committed) == 3
    assert relays[0].uplink.partials == 0  # its partial round was lost with it
    # Round 1 closed on relay-1's partial alone at its deadline, or, when the restarted
    # relay rejoined in time, with it too (the root keeps a rejoining device's task).
    assert committed[0].clients in (1, 2)
    assert restarted[0].uplink.partials >= 2  # the restarted relay took part again
    assert committed[-1].clients == 2
    assert all(not r.errors for r in fleet.clients)
