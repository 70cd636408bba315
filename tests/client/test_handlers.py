"""The daemon's public extension points, on a real server: a channel factory and task
handlers registered per kind, wrapping the daemon's own (what simulations build on)."""

from __future__ import annotations

import threading

import grpc
import pytest

from fedge.client.channel import open_channel
from fedge.client.daemon import Daemon
from fedge.client.data import load_local_data
from fedge.client.session import Session
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig
from fedge.protos import fedge_pb2
from fedge.tasks import load_task
from tests.fleet import Fleet


def test_a_wrapped_train_handler_and_channel_factory_run_a_real_round(fleet: Fleet) -> None:
    (data,) = fleet.partitions("digits-mlp", 1)
    server = fleet.server(rounds=2, min_clients=1)
    port = server.start()
    channels: list[str] = []
    trained: list[int] = []

    def channel(config: ClientConfig) -> grpc.Channel:
        channels.append(config.server)
        return open_channel(config)

    task = load_task("digits-mlp")
    config = ClientConfig(server=f"127.0.0.1:{port}", data=(str(data),), device_id="dev",
                          insecure=True, backoff_initial_s=0.05, backoff_max_s=0.5,
                          poll_seconds=2.0, token=server.tokens.create("dev"))
    daemon = Daemon(config, task, Trainer(task, *load_local_data(config.data, task.schema),
                                          "cpu"), channel_factory=channel)
    own = daemon.train

    def train(session: Session, task: fedge_pb2.Task) -> None:
        trained.append(task.round)
        own(session, task)

    assert daemon.handle(fedge_pb2.TRAIN, train) == own  # the replaced one, to call through
    with pytest.raises(ValueError, match="STOP"):
        daemon.handle(fedge_pb2.STOP, lambda s, t: None)

    def no_deploy(session: Session, task: fedge_pb2.Task) -> None:
        raise AssertionError("the server builds no edge artifact: no DEPLOY expected")

    daemon.handle(fedge_pb2.DEPLOY, no_deploy)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    try:
        records = server.wait(timeout=60)
        thread.join(20)
    finally:
        daemon.stop()
        thread.join(10)
    assert [r.round for r in records] == [0, 1, 2]
    assert trained == [1, 2] and channels == [config.server]
    assert result and daemon.stats.rounds_trained == 2 and daemon.stats.stopped_by_server
