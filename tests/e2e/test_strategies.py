"""Strategies, update kinds and encodings end to end: `fedge simulate`'s own runner (a
real server and real client daemons over loopback gRPC, real torch training)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from fedge.config import SimulateConfig
from fedge.encodings import encode
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.simulations.hostile import Attack
from fedge.simulations.runner import simulate
from fedge.tasks import load_task
from fedge.tasks.training import weights_of
from fedge.tensors import fingerprint, from_blob, iter_chunks, specs_to_proto, stream_sha256
from tests.faults.rawdevice import RawDevice
from tests.fleet import Fleet

Run = Callable[..., dict[str, Any]]
BAR = 0.93  # the federated loop's accuracy bar on digits-mlp


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """simulate() with settings as keywords; runs of equal configs are shared (the
    defaults spelt out or not). No edge artifact: none of these tests reads it, and
    building one (distilling, timing, shipping) tripled a small run's time; the runs of
    tests/e2e/test_processes.py and test_edge.py check it."""
    cache: dict[str, dict[str, Any]] = {}

    def go(hostile: dict[int, Attack] | None = None, **settings: Any) -> dict[str, Any]:
        config = SimulateConfig(edge=False, **settings)
        key = repr(config) + repr(sorted((hostile or {}).items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("sim")
            report = simulate(dataclasses.replace(config, out=str(out)), hostile=hostile)
            report["out"] = out
            cache[key] = report
        return cache[key]

    yield go


# One run per strategy, small and fast, rotating update kinds and encodings so that each
# kind and each encoding crosses the wire several times. (Every strategy x kind pair the
# math allows also runs through the server's aggregation path in
# tests/server/test_aggregation_path.py.)
STRATEGY_RUNS = [
    ("fedavg", dict(update="weights", encoding="f32")),
    ("fedavgm", dict(update="delta", encoding="f16", server_momentum=0.5)),
    ("fedprox", dict(update="weights", encoding="int8", mu=0.01)),
    ("fedadam", dict(update="delta", encoding="f32")),
    ("fedyogi", dict(update="delta", encoding="int8")),
    ("fedadagrad", dict(update="gradient", encoding="f16", server_lr=0.02)),
    ("median", dict(update="weights", encoding="f16")),
    ("trimmed-mean", dict(update="delta", encoding="topk", trim=0.2)),
    ("krum", dict(update="weights", encoding="f32", byzantine_f=1)),
    ("multikrum", dict(update="gradient", encoding="int8", byzantine_f=1, server_lr=0.5)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "settings"), STRATEGY_RUNS,
                         ids=[s for s, _ in STRATEGY_RUNS])
def test_each_strategy_trains_in_simulate(run: Run, strategy: str,
                                          settings: dict[str, Any]) -> None:
    clients = 5 if strategy in ("krum", "multikrum", "trimmed-mean") else 3
    # A gradient update is one step, so those runs take more (and cheaper) rounds.
    rounds = 10 if settings["update"] == "gradient" else 2
    report = run(strategy=strategy, clients=clients, rounds=rounds, **settings)
    assert [r["round"] for r in report["rounds"]] == list(range(1, rounds + 1))
    assert all(r["clients"] == clients for r in report["rounds"])
    assert report["strategy"] == strategy and report["update"] == settings["update"]
    # Learning happened: from chance (accuracy 0.1, loss ln 10 = 2.30) to well above it.
    assert report["final"]["accuracy"] > 0.4, report["final"]
    assert report["final"]["loss"] < np.log(10) - 0.05, report["final"]


@pytest.mark.slow
@pytest.mark.parametrize("update", ["weights", "delta", "gradient"])
def test_fedavg_reaches_the_bar_with_every_update_kind(run: Run, update: str) -> None:
    if update == "gradient":
        # FedSGD takes one full-batch step a round: plain SGD on the server with
        # lr 0.5 (1.0 diverges), over more rounds: it oscillates until about round 110.
        report = run(update="gradient", server_lr=0.5, rounds=150)
    else:
        report = run(update=update)
    assert report["final"]["accuracy"] >= BAR, report["final"]


def _bytes_up(report: dict[str, Any]) -> int:
    return sum(r["bytes_up"] for r in report["rounds"])


@pytest.mark.slow
def test_int8_and_topk_cut_bytes_up_and_keep_accuracy(run: Run) -> None:
    f32 = run(update="delta", encoding="f32")
    int8 = run(update="delta", encoding="int8")
    topk = run(update="delta", encoding="topk", topk_fraction=0.1)
    assert _bytes_up(int8) <= 0.27 * _bytes_up(f32)
    assert _bytes_up(topk) <= 0.25 * _bytes_up(f32)
    assert int8["final"]["accuracy"] >= f32["final"]["accuracy"] - 0.01
    assert topk["final"]["accuracy"] >= f32["final"]["accuracy"] - 0.02


@pytest.mark.slow
def test_robust_strategies_withstand_two_hostile_clients_of_ten(run: Run) -> None:
    """Of 10 clients, one sends its honest step sign-flipped and scaled by 4, another
    scaled by 50. FedAvg's mean is wrecked; median and trimmed mean stay within 3 points
    of the honest FedAvg run, and so does Multi-Krum. Krum adopts one client's update a
    round, so even unattacked it trails FedAvg on 10 small shards (about 5 points here);
    what the attack must not do is move it: attacked Krum stays within 3 points of
    honest Krum."""
    base: dict[str, Any] = dict(clients=10, rounds=8, epochs=5)
    hostile = {3: Attack("signflip", 4.0), 7: Attack("scale", 50.0)}
    honest = run(**base)["final"]["accuracy"]
    assert honest >= BAR
    attacked = run(hostile=hostile, **base)["final"]["accuracy"]
    assert attacked < honest - 0.3, (attacked, honest)
    for strategy, extra in (("median", {}), ("trimmed-mean", {"trim": 0.2}),
                            ("multikrum", {"byzantine_f": 2})):
        robust = run(hostile=hostile, strategy=strategy, **extra, **base)
        assert robust["final"]["accuracy"] >= honest - 0.03, (strategy, robust["final"])
    krum = dict(strategy="krum", byzantine_f=2, **base)
    krum_honest = run(**krum)["final"]["accuracy"]
    krum_attacked = run(hostile=hostile, **krum)["final"]["accuracy"]
    assert krum_attacked >= krum_honest - 0.03, (krum_attacked, krum_honest)
    assert krum_attacked > attacked + 0.5


@pytest.mark.slow
def test_server_optimizer_state_is_checkpointed_and_resumed(fleet: Fleet) -> None:
    """FedAvgM's momentum is saved next to each round's checkpoint; a server stopped
    after round 2 and restarted ends round 3 with the same model as a server that ran
    the three rounds straight through (and not with the model of a forgotten momentum)."""
    dirs = fleet.partitions("digits-mlp", 2)
    settings: dict[str, Any] = dict(strategy="fedavgm", update="delta", epochs=1)

    def serve(rounds: int, state: str) -> list[Any]:
        server = fleet.server(rounds=rounds, state_dir=str(fleet.tmp / state), **settings)
        port = server.start()
        for k, d in enumerate(dirs):
            fleet.client(port, d, f"dev-{k}")
        records = server.wait(timeout=120)
        fleet.join_clients()
        fleet.clients.clear()
        return records

    serve(3, "straight")
    serve(2, "resumed")
    saved = fleet.tmp / "resumed/checkpoints/round-000002.server.safetensors"
    momentum, meta = from_blob(saved.read_bytes())
    assert meta["strategy"] == "fedavgm" and "momentum/0.weight" in momentum
    assert [r.round for r in serve(3, "resumed")] == [0, 1, 2, 3]

    def final(state: str) -> dict[str, np.ndarray]:
        path = fleet.tmp / state / "checkpoints/round-000003.safetensors"
        return from_blob(path.read_bytes())[0]

    straight, resumed = final("straight"), final("resumed")
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], atol=1e-5)


def test_the_server_refuses_updates_of_the_wrong_kind_encoding_or_shape(fleet: Fleet) -> None:
    """A run of int8 deltas refuses a WEIGHTS or F32 header with INVALID_ARGUMENT and a
    reason; a header refused before its task was named leaves the task open for a
    correct update. (A refused content settles the task: see the intake tests.)"""
    server = fleet.server(rounds=1, min_clients=1, update="delta", encoding="int8",
                          allow_anonymous=True)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = fedge_pb2_grpc.FederationStub(channel)
    weights = weights_of(load_task("digits-mlp").build_model())
    session = stub.Join(fedge_pb2.JoinRequest(
        device_id="probe", task="digits-mlp", fingerprint=specs_to_proto(fingerprint(weights)),
        num_examples=10), timeout=10).session_id
    task = stub.PollTask(fedge_pb2.PollRequest(session_id=session, wait_seconds=10))
    assert task.kind == fedge_pb2.TRAIN
    assert (task.train.update_kind, task.train.encoding) == (fedge_pb2.DELTA, fedge_pb2.INT8)

    def submit(kind: Any, encoding: Any, arrays: dict[str, np.ndarray]) -> Any:
        header = fedge_pb2.UpdateHeader(session_id=session, task_id=task.task_id,
                                        round=task.round, kind=kind, encoding=encoding,
                                        num_examples=10, sha256=stream_sha256(arrays))
        stream = [fedge_pb2.UpdateChunk(header=header),
                  *(fedge_pb2.UpdateChunk(tensor=c) for c in iter_chunks(arrays))]
        return stub.SubmitUpdate(iter(stream), timeout=10)

    delta = {k: np.zeros_like(v) for k, v in weights.items()}
    wire = encode(delta, "int8")
    for kind, encoding, arrays, reason in (
            (fedge_pb2.WEIGHTS, fedge_pb2.INT8, wire, "takes delta updates"),
            (fedge_pb2.DELTA, fedge_pb2.F32, delta, "takes int8-encoded updates")):
        with pytest.raises(grpc.RpcError) as info:
            submit(kind, encoding, arrays)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert reason in (info.value.details() or "")
    assert submit(fedge_pb2.DELTA, fedge_pb2.INT8, wire).accepted
    records = server.wait(timeout=30)
    assert records[-1].round == 1  # zero deltas: the model is unchanged
    channel.close()


def test_the_strategy_s_client_settings_reach_the_devices_tasks(fleet: Fleet) -> None:
    """The gRPC layer copies what the strategy asks of devices (FedProx's mu) into each
    TRAIN task without knowing what it means; FedAvg asks nothing."""
    for strategy, mu, expected in (("fedprox", 0.3, 0.3), ("fedavg", None, 0.0)):
        server = fleet.server(rounds=1, min_clients=1, strategy=strategy, mu=mu,
                              allow_anonymous=True, state_dir=str(fleet.tmp / strategy))
        port = server.start()
        device = RawDevice(port, "probe", None)
        device.join()
        assert device.poll_train().train.proximal_mu == pytest.approx(expected)
        device.close()
        server.shutdown(grace=0.1)


def test_the_momentum_setting_reaches_the_devices_tasks(fleet: Fleet) -> None:
    """--momentum goes out with each TRAIN task; without it, the task's default (0.9 for
    digits-mlp) does, and 0 (plain SGD) is a value, not "the default"."""
    for momentum, expected in ((0.0, 0.0), (0.5, 0.5), (None, 0.9)):
        server = fleet.server(rounds=1, min_clients=1, momentum=momentum,
                              allow_anonymous=True, state_dir=str(fleet.tmp / str(momentum)))
        port = server.start()
        device = RawDevice(port, "probe", None)
        device.join()
        train = device.poll_train().train
        assert train.HasField("momentum") and train.momentum == pytest.approx(expected)
        device.close()
        server.shutdown(grace=0.1)
