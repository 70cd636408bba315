"""The gated rollout over real gRPC: a good edge artifact is promoted from its canaries to
every device; a bad one (its teacher trained for a round on labels shuffled between
classes) stops at the canary stage, the canaries roll back by themselves, no other
device ever installs it, and the server records why."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from fedge.cli import main
from fedge.client.daemon import Daemon
from fedge.client.data import LocalData
from fedge.config import ClientConfig
from fedge.edge.compiler.keys import PUBLIC_FILE
from fedge.edge.runtime import ModelDir
from fedge.server.registry import Device
from fedge.server.rollout import CANARY_ATTEMPT
from fedge.server.sampler import sample
from fedge.server.store import StateStore
from fedge.simulations.partition import iid, write_partitions
from fedge.tasks import load_task
from tests.fleet import Fleet

pytestmark = pytest.mark.slow
TRAINERS, VIEWERS = ["dev-0", "dev-1"], ["view-0", "view-1"]
GATE = dict(edge=True, edge_every=1, canary_fraction=0.5, canary_margin=0.05,
            canary_timeout_s=60.0, holdout_fraction=0.2, linger_s=10.0)


def _viewers(fleet: Fleet, port: int, token: str, dirs: list[Path]) -> list[threading.Thread]:
    """Inference-only daemons on clean data, each in its own model directory."""
    task = load_task("digits-mlp")
    threads = []
    for name, directory in zip(VIEWERS, dirs, strict=True):
        config = ClientConfig(
            server=f"127.0.0.1:{port}", task="digits-mlp", data=(str(directory),),
            device_id=name, insecure=True, poll_seconds=1.0, backoff_initial_s=0.05,
            backoff_max_s=0.5, token=fleet.servers[-1].tokens.create(name), trust_key=token,
            inference_only=True, model_dir=str(fleet.tmp / f"models-{name}"))
        local = LocalData(config.data, task.schema)
        local.rescan()
        daemon = Daemon(config, task, None, local)
        thread = threading.Thread(target=daemon.run, name=name, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _installed(fleet: Fleet, name: str) -> int:
    current = ModelDir(fleet.tmp / f"models-{name}").current()
    return 0 if current is None else int(current.name.split("-")[1])


def _run(fleet: Fleet, rounds: int, seed: int, trainer_dirs: list[Path],
         viewer_dirs: list[Path], **extra: object) -> None:
    server = fleet.server(rounds=rounds, min_clients=2, seed=seed, **GATE, **extra)
    port = server.start()
    trust = str(fleet.tmp / "state" / PUBLIC_FILE)
    threads = _viewers(fleet, port, trust, viewer_dirs)
    for name, directory in zip(TRAINERS, trainer_dirs, strict=True):
        fleet.client(port, directory, name, trust_key=trust, poll_seconds=1.0,
                     model_dir=str(fleet.tmp / f"models-{name}"))
    server.wait(timeout=300)
    fleet.join_clients(timeout=60)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    fleet.clients.clear()


def test_a_bad_artifact_stops_at_its_canaries_and_a_good_one_reaches_everyone(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    # A seed whose canaries for round 3 are the two clean inference-only devices, so
    # that the bad artifact is judged on clean held-out data (and the trainers, whose
    # data turns noisy, are the devices that must never install it).
    devices = [Device(d, "", 0) for d in TRAINERS + VIEWERS]
    seed = next(s for s in range(100) if {d.device_id for d in sample(
        devices, 2, s, 3, CANARY_ATTEMPT)} == set(VIEWERS))
    splits = load_task("digits-mlp").load_data()
    parts = iid(len(splits.train_y), 4, seed=0)
    clean = write_partitions(splits.train_x, splits.train_y, parts, fleet.tmp / "clean")
    # Labels shuffled between classes: every example of class c is labelled c + 3.
    shuffled = (splits.train_y + 3) % 10
    noisy = write_partitions(splits.train_x, shuffled, parts, fleet.tmp / "noisy")

    # Run 1: two good artifacts; the second is promoted from its canaries to everyone.
    _run(fleet, 2, seed, clean[:2], clean[2:])
    store = StateStore(fleet.tmp / "state")
    try:
        good = store.rollouts()
    finally:
        store.close()
    assert good[-1][:2] == (2, "promoted"), good
    assert {name: _installed(fleet, name) for name in TRAINERS + VIEWERS} == dict.fromkeys(
        TRAINERS + VIEWERS, 2)

    # Run 2, same state: the trainers' labels are shuffled, so round 3's model is bad.
    _run(fleet, 3, seed, noisy[:2], clean[2:], epochs=10)
    store = StateStore(fleet.tmp / "state")
    try:
        last = store.rollouts()[-1]
        installed = store.metric_values(3, "device", "edge_installed")
        rolled = store.metric_values(3, "device", "edge_rolled_back")
        new = store.metric_values(3, "device", "edge_accuracy")
        old = store.metric_values(3, "device", "edge_incumbent_accuracy")
    finally:
        store.close()
    round_, stage, reason, canaries = last
    assert (round_, stage, canaries) == (3, "halted", VIEWERS), last
    assert "rolled back by themselves" in reason and "incumbent" in reason
    assert set(installed) == set(VIEWERS) == set(rolled)  # only the canaries ever had it
    assert all(new[v] < old[v] - 0.05 for v in VIEWERS), (new, old)
    # Every device runs the good artifact: the canaries went back to it by themselves.
    assert {name: _installed(fleet, name) for name in TRAINERS + VIEWERS} == dict.fromkeys(
        TRAINERS + VIEWERS, 2)
    status = json.loads((fleet.tmp / "state" / "status.json").read_text())
    assert status["rollout"]["stage"] == "halted"
    assert sorted(status["rollout"]["rolled_back"]) == VIEWERS
    assert {d["device_id"]: d["edge_model"] for d in status["devices"]} == dict.fromkeys(
        TRAINERS + VIEWERS, "2")
    assert main(["edge", "status", "--state-dir", str(fleet.tmp / "state")]) == 0
    out = capsys.readouterr().out
    assert "artifact of round 3: halted" in out and "[canary]" in out
