"""Which devices a round samples, and the seed each shuffles with, follow from the run's
seed alone: not from the order devices joined in, nor from a restart in between."""

from __future__ import annotations

import time

from fedge.config import ServerConfig
from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from fedge.server.round_state import shuffle_seed
from tests.faults.rawdevice import RawDevice, digits_weights
from tests.fleet import Fleet

IDS = [f"dev-{k:02d}" for k in range(10)]


def _devices(fleet: Fleet, server: FedgeServer, order: list[str]) -> dict[str, RawDevice]:
    """Devices joined in the given order (over gRPC, as daemons join)."""
    devices = {}
    for device_id in order:
        device = RawDevice(server.port, device_id, server.tokens.create(device_id))
        device.join()
        devices[device_id] = device
    return devices


def _play(server: FedgeServer, devices: dict[str, RawDevice], first: int, last: int,
          ) -> list[tuple[str, ...]]:
    """Runs rounds first..last: each sampled device sends an update; returns each round's
    sampled device ids."""
    weights = digits_weights()
    samples = []
    for number in range(first, last + 1):
        deadline = time.monotonic() + 60
        tasks: dict[str, fedge_pb2.Task] = {}
        while not tasks:
            assert time.monotonic() < deadline, f"round {number} never opened"
            tasks = {i: t for i, d in devices.items()
                     if (t := d.poll(0.001)).kind == fedge_pb2.TRAIN and t.round == number}
        # The round opened at once for its whole sample: one more pass sees all of it.
        tasks.update({i: t for i, d in devices.items() if i not in tasks
                      and (t := d.poll(0.001)).kind == fedge_pb2.TRAIN})
        for device_id, task in sorted(tasks.items()):
            devices[device_id].submit(devices[device_id].stream(task, weights))
        while server.rounds.model_version < number:
            assert time.monotonic() < deadline, f"round {number} never committed"
            time.sleep(0.01)
        samples.append(tuple(sorted(tasks)))
    return samples


def _run(fleet: Fleet, state: str, rounds: int, order: list[str],
         first: int = 1) -> list[tuple[str, ...]]:
    server = fleet.server(rounds=rounds, min_clients=2, fraction=0.3, seed=7, linger_s=0.0,
                          state_dir=str(fleet.tmp / state))
    server.start()
    devices = _devices(fleet, server, order)
    try:
        samples = _play(server, devices, first, rounds)
        server.wait(timeout=30)
    finally:
        for device in devices.values():
            device.close()
    return samples


def test_the_same_seed_samples_the_same_devices_whatever_the_join_order(
        fleet: Fleet) -> None:
    forward = _run(fleet, "forward", 40, IDS)
    backward = _run(fleet, "backward", 40, IDS[::-1])
    assert forward == backward
    assert len(set(forward)) > 10  # and the samples do change from round to round


def test_a_resumed_run_samples_as_an_uninterrupted_one(fleet: Fleet) -> None:
    whole = _run(fleet, "whole", 30, IDS)
    before = _run(fleet, "resumed", 15, IDS)
    after = _run(fleet, "resumed", 30, IDS[::-1], first=16)
    assert before + after == whole


def test_each_device_shuffles_with_its_own_seed_the_same_after_a_restart(
        fleet: Fleet) -> None:
    seeds = []
    for _ in range(2):  # the second server restarts the same uncommitted round 1
        server = fleet.server(rounds=1, min_clients=2, fraction=1.0, seed=3, linger_s=0.0)
        server.start()
        devices = _devices(fleet, server, ["a", "b"])
        tasks = {i: d.poll_train() for i, d in devices.items()}
        seeds.append({i: t.train.seed for i, t in tasks.items()})
        assert {t.round for t in tasks.values()} == {1}
        for device in devices.values():
            device.close()
        server.stop()
        server.wait(timeout=30)
    assert seeds[0] == seeds[1] == {i: shuffle_seed(3, i, 1) for i in ("a", "b")}
    assert seeds[0]["a"] != seeds[0]["b"]
    assert shuffle_seed(3, "a", 1) != shuffle_seed(3, "a", 2)


def test_a_simulation_s_first_round_waits_for_its_whole_fleet(fleet: Fleet) -> None:
    config = ServerConfig(task="digits-mlp", host="127.0.0.1", port=0, rounds=1,
                          min_clients=2, fraction=1.0, state_dir=str(fleet.tmp / "state"),
                          insecure=True, round_timeout_s=60.0, linger_s=0.0, edge=False)
    server = FedgeServer(config, start_clients=5)
    fleet.servers.append(server)
    server.start()
    early = _devices(fleet, server, IDS[:2])
    time.sleep(1.5)  # min_clients are here, but the fleet is not
    assert server.rounds.progress().phase == "waiting"
    late = _devices(fleet, server, IDS[2:5])
    tasks = {i: d.poll_train() for i, d in {**early, **late}.items()}
    assert len(tasks) == 5 and server.rounds.progress().selected == 5
    for device in (*early.values(), *late.values()):
        device.close()
