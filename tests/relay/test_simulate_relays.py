"""``fedge simulate --relays R``: the clients train under R real relays, the server
receives R updates a round, and the report says what each relay did."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.config import SimulateConfig
from fedge.errors import ConfigError
from fedge.simulations.relays import blocks
from fedge.simulations.runner import simulate
from fedge.tasks import load_task
from fedge.tasks.training import weights_of


def test_clients_are_spread_in_blocks_that_differ_by_one() -> None:
    spread = blocks(10, 3)
    assert [list(b) for b in spread] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert sorted(k for b in blocks(7, 7) for k in b) == list(range(7))


def test_more_relays_than_clients_and_late_joiners_are_refused() -> None:
    with pytest.raises(ConfigError, match="relays"):
        SimulateConfig(clients=2, relays=3)
    with pytest.raises(ConfigError, match="late_joiners"):
        SimulateConfig(clients=6, relays=2, late_joiners=0.2, rounds=4)


@pytest.mark.slow  # a simulation of 6 clients under 2 relays: about 30 s on a loaded machine
def test_a_simulation_under_relays_sends_one_update_per_relay(tmp_path: Path) -> None:
    config = SimulateConfig(clients=6, relays=2, rounds=2, edge=False, out=str(tmp_path),
                            backend="threads", round_timeout_s=60.0)
    report = simulate(config)
    relays = report["relays"]
    assert relays["clients"] == [[0, 1, 2], [3, 4, 5]]
    assert relays["partials_sent"] == [2, 2]
    assert relays["model_downloads"] == [2, 2]  # one per version, for three clients each
    assert relays["upstream_updates_per_round"] == [2, 2]
    assert [c["rounds_trained"] for c in report["client_data"]] == [2] * 6
    # The server received two model-sized updates a round (and small messages), where
    # a flat run receives six.
    model = sum(a.nbytes for a in weights_of(load_task("digits-mlp").build_model()).values())
    for sent in relays["upstream_bytes_per_round"]:
        assert 2 * model < sent < 2.5 * model, (sent, model)
    assert report["final"]["accuracy"] > report["rounds"][0]["accuracy"] - 0.2
