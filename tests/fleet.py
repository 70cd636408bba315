"""Real servers on 127.0.0.1 and real client daemon threads, cleaned up per test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedge.client.daemon import Daemon, DaemonStats
from fedge.client.data import load_local_data
from fedge.client.session import Session
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig
from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from fedge.server.tokens import TokenStore
from fedge.simulations.partition import iid, write_partitions
from fedge.tasks import load_task


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

    def token(self, device_id: str, state_dir: Path | None = None) -> str:
        """Enrolls device_id in a state directory (the fleet's default one if None)."""
        store = TokenStore(state_dir or self.tmp / "state")
        try:
            return store.create(device_id)
        finally:
            store.close()

    def client(self, port: int, data: Path, device_id: str, task: str = "digits-mlp",
               token: str | None = None, train_delay_s: float = 0.0,
               **overrides: object) -> ClientThread:
        """A daemon thread; enrolled in the default state directory unless given a token
        ("" for an anonymous device). train_delay_s: a slow device, that waits this long
        before each TRAIN task. overrides are ClientConfig settings."""
        if token is None:  # enrolled with the server on that port, if the fleet runs it
            server = next((s for s in self.servers if s.port == port), None)
            token = (server.tokens.create(device_id) if server is not None
                     else self.token(device_id))
        settings: dict[str, object] = dict(
            server=f"127.0.0.1:{port}", task=task, data=(str(data),), device_id=device_id,
            insecure=True, backoff_initial_s=0.05, backoff_max_s=0.5, poll_seconds=2.0,
            token=token)
        settings.update(overrides)
        config = ClientConfig(**settings)  # type: ignore[arg-type]
        loaded = load_task(task)
        x, y = load_local_data(config.data, loaded.schema)
        daemon = Daemon(config, loaded, Trainer(loaded, x, y, "cpu"))
        if train_delay_s > 0:  # through the daemon's public hook, as simulations do
            own: list[Callable[[Session, fedge_pb2.Task], None]] = []

            def slow_train(session: Session, task: fedge_pb2.Task) -> None:
                daemon.pause(train_delay_s)
                own[0](session, task)

            previous = daemon.handle(fedge_pb2.TRAIN, slow_train)
            assert previous is not None
            own.append(previous)
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
