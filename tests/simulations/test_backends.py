"""Backends: the same simulation with clients in Ray actors, still one real gRPC server
in this process and a channel and session per client (the processes backend runs in
test_scenarios.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.config import SimulateConfig
from fedge.errors import ConfigError, FedgeError
from fedge.simulations.backends import import_ray, split_groups
from fedge.simulations.device import ClientSpec
from fedge.simulations.runner import simulate


def _spec(k: int) -> ClientSpec:
    return ClientSpec(index=k, device_id=f"client-{k}", server="127.0.0.1:1", task="t",
                      data="d", token="x")


def test_specs_travel_as_json_and_are_dealt_to_hosts() -> None:
    spec = _spec(3)
    assert ClientSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(FedgeError, match="unknown key 'bogus'"):
        ClientSpec.from_json({**spec.to_json(), "bogus": 1})
    groups = split_groups([_spec(k) for k in range(5)], 2)
    assert [[s.index for s in g] for g in groups] == [[0, 2, 4], [1, 3]]
    assert len(split_groups([_spec(0)], 4)) == 1


def test_backend_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        SimulateConfig(backend="mpi")
    with pytest.raises(ConfigError, match="ray_address applies to backend 'ray'"):
        SimulateConfig(ray_address="10.0.0.1:6379")


@pytest.mark.slow
def test_the_ray_backend_meets_the_default_bar_on_a_local_ray(tmp_path: Path) -> None:
    try:
        import_ray()
    except FedgeError as exc:  # the dev extra installs it; say so rather than skip quietly
        pytest.fail(str(exc))
    # The default run (5 clients x 10 rounds) without its edge step, which the threads
    # default test covers: what differs here is only where the clients run.
    report = simulate(SimulateConfig(backend="ray", workers=2, edge=False,
                                     out=str(tmp_path)))
    assert report["backend"] == "ray" and report["hosts"] == 2
    assert report["final"]["accuracy"] >= 0.93
    assert len(report["rounds"]) == 10
    assert all(p["reported"] == 5 for p in report["participation"])
    assert sorted(c["rounds_trained"] for c in report["client_data"]) == [10] * 5
