"""Strategy settings: validated, with errors that name the key, in TOML and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedge.cli import main
from fedge.config import ServerConfig, SimulateConfig, load
from fedge.errors import ConfigError

SERVER: dict[str, Any] = {"insecure": True}


@pytest.mark.parametrize(("values", "message"), [
    ({"strategy": "fedsgd"}, "strategy must be one of"),
    ({"update": "sign"}, "update must be one of"),
    ({"encoding": "int4"}, "encoding must be one of"),
    ({"server_lr": 0.0}, "server_lr must be > 0"),
    ({"strategy": "fedavgm", "server_momentum": 1.0}, "server_momentum must be in"),
    ({"mu": 0.1}, "mu applies to strategy fedprox, not 'fedavg'"),
    ({"trim": 0.1, "strategy": "median"}, "trim applies to strategy trimmed-mean"),
    ({"byzantine_f": 1}, "byzantine_f applies to strategy krum or multikrum"),
    ({"strategy": "trimmed-mean", "trim": 0.5}, "trim must be in"),
    ({"encoding": "topk"}, "needs update 'delta' or 'gradient'"),
    ({"encoding": "topk", "update": "delta", "topk_fraction": 0.0}, "topk_fraction"),
    ({"strategy": "fedprox", "update": "gradient"}, "takes no local step"),
    ({"strategy": "krum", "min_clients": 4}, "needs at least 5 updates per round"),
    ({"strategy": "krum", "byzantine_f": 2, "min_clients": 6}, "at least 7"),
])
def test_bad_strategy_settings_are_refused_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**SERVER, **values)


def test_good_combinations_are_accepted_in_toml_and_simulate(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('strategy = "krum"\nbyzantine_f = 2\nmin_clients = 7\nupdate = "delta"\n'
                    'encoding = "int8"\ninsecure = true\n')
    config = load(ServerConfig, path, {})
    assert (config.strategy, config.byzantine_f, config.encoding) == ("krum", 2, "int8")
    sim = SimulateConfig(clients=10, strategy="multikrum", byzantine_f=3)
    assert sim.byzantine_f == 3
    with pytest.raises(ConfigError, match="at least 9"):
        SimulateConfig(clients=10, fraction=0.5, strategy="krum", byzantine_f=3)
    path.write_text('strategy = "fedadam"\nserver_lr = "fast"\ninsecure = true\n')
    with pytest.raises(ConfigError, match="server_lr must be"):
        load(ServerConfig, path, {})


def test_the_cli_reports_an_incompatible_combination_as_a_usage_error(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["simulate", "--encoding", "topk", "--out", str(tmp_path)])
    assert code == 2
    assert "needs update 'delta' or 'gradient'" in capsys.readouterr().err
