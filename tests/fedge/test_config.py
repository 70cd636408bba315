"""Config files and options: defaults work, errors name the key and what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.config import ClientConfig, ServerConfig, SimulateConfig, load
from fedge.errors import ConfigError


def test_file_then_options_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('rounds = 7\nmin_clients = 3\ninsecure = true\ntask = "digits-cnn"\n')
    config = load(ServerConfig, path, {"rounds": 9, "port": None})
    assert (config.rounds, config.min_clients, config.task, config.port) == (9, 3,
                                                                             "digits-cnn", 50051)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roundz = 3\ninsecure = true", "unknown key 'roundz'"),
        ('rounds = "ten"\ninsecure = true', "rounds must be an integer"),
        ("rounds = 0\ninsecure = true", "rounds must be >= 1"),
        ("fraction = 1.5\ninsecure = true", "fraction must be in"),
        ("insecure = 1", "insecure must be true or false"),
        ("rounds = 3", "needs TLS"),
        ("[server]\nrounds = 3", "unexpected table"),
        ("rounds = = 3", "not valid TOML"),
        ('insecure = true\ntls_client_ca = "ca.pem"', "mTLS\\) needs TLS"),
        ("insecure = true\nquorum_fraction = 1.5", "quorum_fraction must be in"),
        ('insecure = true\nnorm_action = "scale"', "norm_action must be one of"),
        ("insecure = true\nmax_uploads = 0", "max_uploads must be >= 1"),
        ("insecure = true\nrate_limit = -1", "rate_limit must be >= 0"),
    ],
)
def test_bad_server_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load(ServerConfig, path, {})
    assert str(path) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(ServerConfig, "/nonexistent/server.toml", {})


def test_client_data_accepts_a_string_or_a_list(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text('data = "parts/client-0"\ninsecure = true\n')
    assert load(ClientConfig, path, {}).data == ("parts/client-0",)
    assert load(ClientConfig, None, {"data": ["a", "b"], "insecure": True}).data == ("a", "b")
    with pytest.raises(ConfigError, match="server must be HOST:PORT"):
        load(ClientConfig, None, {"server": "localhost", "insecure": True})


def test_client_certificate_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load(ClientConfig, None, {"tls_ca": "ca.pem", "tls_cert": "dev.crt"})
    with pytest.raises(ConfigError, match="needs TLS"):
        load(ClientConfig, None, {"insecure": True, "tls_cert": "d.crt", "tls_key": "d.key"})


def test_simulate_defaults_and_partition_check() -> None:
    assert load(SimulateConfig, None, {}).clients == 5
    with pytest.raises(ConfigError, match="partition must be one of"):
        load(SimulateConfig, None, {"partition": "pathological"})
    with pytest.raises(ConfigError, match="alpha"):
        load(SimulateConfig, None, {"alpha": 0.0})
