"""What cannot run on masked updates is refused in one line (exit 2), by `fedge server`
and `fedge simulate` alike (they share the check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.config import ServerConfig, SimulateConfig
from fedge.errors import ConfigError
from tests.cli.test_mistakes import fails_in_one_line


@pytest.mark.parametrize("strategy", ["median", "trimmed-mean", "krum", "multikrum"])
def test_strategies_that_need_plain_updates_are_refused(strategy: str) -> None:
    with pytest.raises(ConfigError, match="in the clear"):
        ServerConfig(insecure=True, secure_aggregation=True, strategy=strategy,
                     min_clients=5)
    with pytest.raises(ConfigError, match="in the clear"):
        SimulateConfig(secure_aggregation=True, strategy=strategy, clients=5)


def test_per_update_server_checks_and_encodings_are_refused() -> None:
    with pytest.raises(ConfigError, match="per-update server check"):
        ServerConfig(insecure=True, secure_aggregation=True, norm_action="clip")
    with pytest.raises(ConfigError, match="masked in Z_2"):
        ServerConfig(insecure=True, secure_aggregation=True, encoding="int8")
    with pytest.raises(ConfigError, match="secure_threshold"):
        ServerConfig(insecure=True, secure_aggregation=True, secure_threshold=0.3)


def test_fedopt_and_fedavg_family_are_taken() -> None:
    for strategy in ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad"):
        assert ServerConfig(insecure=True, secure_aggregation=True,
                            strategy=strategy).secure_aggregation


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    line = fails_in_one_line(tmp_path, "server", "--insecure", "--secure-aggregation",
                             "--strategy", "median")
    assert "median" in line and "secure aggregation" in line
