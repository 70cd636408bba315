"""What does not go through a relay is refused at its Join, in one line that says why."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fedge.server.app import FedgeServer
from fedge.server.relays import relay_refusal
from fedge.server.round_state import RoundSettings
from fedge.server.strategies.catalog import build_strategy
from fedge.server.strategies.dp import CentralDP
from tests.cli.test_mistakes import one_line
from tests.processes import FEDGE

SETTINGS = RoundSettings(rounds=1, min_clients=1, fraction=1.0, round_timeout_s=1.0,
                         retry_backoff_s=0.0, epochs=1, lr=0.1, batch_size=8, seed=0,
                         linger_s=0.0)


@pytest.mark.parametrize("name", ["median", "trimmed-mean", "krum", "multikrum"])
def test_strategies_that_need_each_update_refuse_relays(name: str) -> None:
    why = relay_refusal(build_strategy(name), SETTINGS)
    assert f"strategy {name} needs each device's update" in why


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi"])
def test_mean_based_strategies_take_relays(name: str) -> None:
    assert relay_refusal(build_strategy(name), SETTINGS) == ""


def test_secure_aggregation_and_central_dp_refuse_relays() -> None:
    secure = SETTINGS.__class__(**{**SETTINGS.__dict__, "secure": True})
    assert "secure aggregation" in relay_refusal(build_strategy("fedavg"), secure)
    central = CentralDP(build_strategy("fedavg"), noise_multiplier=1.0, clip=1.0)
    assert "central DP" in relay_refusal(central, SETTINGS)


@pytest.mark.slow  # a whole `fedge relay` process: about 25 s on a loaded machine
def test_a_relay_under_a_median_server_stops_in_one_line(
        tmp_path: Path, make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(strategy="median", min_clients=3)
    port = server.start()
    token = server.tokens.create("relay-a")
    config = tmp_path / "relay.toml"
    config.write_text("join_wait_s = 0.0\n")  # join at once: no device will come
    run = subprocess.run(
        [*FEDGE, "relay", "--config", str(config), "--upstream", f"127.0.0.1:{port}",
         "--upstream-insecure", "--insecure", "--port", "0", "--relay-id", "relay-a",
         "--upstream-token", token, "--state-dir", str(tmp_path / "relay"), "--no-edge"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90)
    line = one_line(run)
    assert "relays are refused: strategy median needs each device's update" in line, line
