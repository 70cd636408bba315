"""Real servers on 127.0.0.1 and real client daemons, started and cleaned up per test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.daemon import Daemon, DaemonStats
from client.data import load_local_data
from client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig
from fedge.tasks import load_task
from server.app import FedgeServer
from simulations.partition import iid, write_partitions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ClientThread:
    daemon: Daemon
    thread: threading.Thread
    stats: list[DaemonStats] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


@dataclass
class Fleet:
    """Starts servers and client daemon threads; stops them all at teardown."""

    tmp: Path
    servers: list[FedgeServer] = field(default_factory=list)
    clients: list[ClientThread] = field(default_factory=list)

    def partitions(self, task: str, count: int) -> list[Path]:
        splits = load_task(task).load_data()
        parts = iid(len(splits.train_y), count, seed=0)
        return write_partitions(splits.train_x, splits.train_y, parts, self.tmp / "data")

    def server(self, **overrides: object) -> FedgeServer:
        settings: dict[str, object] = dict(
            task="digits-mlp", host="127.0.0.1", port=0, rounds=2, min_clients=2,
            state_dir=str(self.tmp / "state"), insecure=True, round_timeout_s=60.0,
            linger_s=3.0, poll_seconds=2.0, edge=False)  # edge tests turn it on
        settings.update(overrides)
        server = FedgeServer(ServerConfig(**settings))  # type: ignore[arg-type]
        self.servers.append(server)
        return server

    def client(self, port: int, data: Path, device_id: str,
               task: str = "digits-mlp", **extra: str) -> ClientThread:
        config = ClientConfig(server=f"127.0.0.1:{port}", task=task, data=(str(data),),
                              device_id=device_id, insecure=True, backoff_initial_s=0.05,
                              backoff_max_s=0.5, poll_seconds=2.0, **extra)
        loaded = load_task(task)
        x, y = load_local_data(config.data, loaded.schema)
        daemon = Daemon(config, loaded, Trainer(loaded, x, y, "cpu"))
        handle = ClientThread(daemon, threading.Thread(target=lambda: None))

        def run() -> None:
            try:
                handle.stats.append(daemon.run())
            except BaseException as exc:
                handle.errors.append(exc)

        handle.thread = threading.Thread(target=run, name=device_id, daemon=True)
        handle.thread.start()
        self.clients.append(handle)
        return handle

    def join_clients(self, timeout: float = 30.0) -> None:
        for client in self.clients:
            client.thread.join(timeout)
            assert not client.thread.is_alive(), f"{client.daemon.config.device_id} hangs"
            assert not client.errors, client.errors

    def close(self) -> None:
        for client in self.clients:
            client.daemon.stop()
        for server in self.servers:
            server.shutdown(grace=0.1)
        for client in self.clients:
            client.thread.join(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    yield fleet
    fleet.close()
