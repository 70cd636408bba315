"""Assembles and runs the server: task, state store, round driver and gRPC service."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedge.config import ServerConfig
from fedge.errors import FedgeError
from fedge.tasks import Task, load_task
from fedge.tasks.training import weights_of
from fedge.tensors import CHUNK_BYTES, fingerprint, from_blob
from protos import fedge_pb2_grpc
from server.deploy import Deployments
from server.evaluate import Evaluator
from server.registry import Registry
from server.rounds import Phase, Rounds, RoundSettings
from server.service import FederationService
from server.store import RoundRecord, StateStore

log = logging.getLogger(__name__)

SERVICE_NAME = "fedge.v1.Federation"
# Long polls hold a worker each; the pool bounds how many devices can wait at once.
MAX_WORKERS = 256
# Every transfer is chunked, so messages stay far below this.
MAX_MESSAGE_BYTES = 4 * CHUNK_BYTES


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.insecure:
        return None
    try:
        key = Path(config.tls_key).read_bytes()
        cert = Path(config.tls_cert).read_bytes()
    except OSError as exc:
        raise FedgeError(f"cannot read the TLS key or certificate: {exc}") from exc
    return grpc.ssl_server_credentials([(key, cert)])


def _deployments(config: ServerConfig, task: Task) -> Deployments | None:
    """The edge deployments of the run, unless turned off or the task has no student."""
    if not config.edge:
        return None
    if task.build_student is None:
        log.info("task %s names no student model: no edge artifacts", task.name)
        return None
    deployments = Deployments(task, config.state_dir, every=config.edge_every)
    log.info("edge artifacts are signed with key %s; devices trust %s",
             deployments.key.key_id, deployments.public_key_path)
    return deployments


def _resume_edge(rounds: Rounds, store: StateStore, deployments: Deployments | None) -> None:
    """A run restarted after its last round builds the final artifact if it is missing."""
    if deployments is None or rounds.phase is not Phase.DONE:
        return
    if deployments.due(rounds.model_version, last=True):
        latest = store.latest()
        if latest is not None:
            deployments.request(latest[0].round, from_blob(latest[1])[0])


class FedgeServer:
    """One federated run: start() binds and begins, wait() blocks until it is over."""

    def __init__(self, config: ServerConfig,
                 on_round: Callable[[RoundRecord], None] | None = None) -> None:
        self.config = config
        self.task = load_task(config.task)
        torch.manual_seed(config.seed)
        initial = weights_of(self.task.build_model())
        specs = fingerprint(initial)
        self.store = StateStore(config.state_dir)
        self.store.check_task(self.task.name, [str(s) for s in specs])
        defaults = self.task.defaults
        settings = RoundSettings(
            rounds=config.rounds, min_clients=config.min_clients, fraction=config.fraction,
            round_timeout_s=config.round_timeout_s, retry_backoff_s=config.retry_backoff_s,
            epochs=config.epochs or defaults.epochs, lr=config.lr or defaults.lr,
            batch_size=config.batch_size or defaults.batch_size, seed=config.seed,
            linger_s=config.linger_s)
        self.registry = Registry(config.device_timeout_s)
        self.deployments = _deployments(config, self.task)
        self.rounds = Rounds(settings, specs, self.registry, self.store,
                             Evaluator(self.task), initial, self.task.name, on_round,
                             self.deployments)
        _resume_edge(self.rounds, self.store, self.deployments)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        fedge_pb2_grpc.add_FederationServicer_to_server(
            FederationService(self.task.name, specs, self.registry, self.rounds, self.store,
                              config.poll_seconds, config.max_update_bytes), self._grpc)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        self._driver = threading.Thread(target=self.rounds.run, name="rounds", daemon=True)
        self.port = 0

    def start(self) -> int:
        """Binds the port (0 picks a free one), starts serving and the round driver."""
        address = f"{self.config.host}:{self.config.port}"
        credentials = _credentials(self.config)
        try:
            if credentials is None:
                self.port = self._grpc.add_insecure_port(address)
            else:
                self.port = self._grpc.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise FedgeError(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise FedgeError(f"cannot listen on {address} (in use?)")
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if credentials is None and self.config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("serving WITHOUT TLS on %s: use --tls-cert/--tls-key outside "
                        "loopback development", address)
        log.info("serving task %s on port %d (%d rounds, state in %s)", self.task.name,
                 self.port, self.config.rounds, self.config.state_dir)
        self._driver.start()
        return self.port

    def wait(self, timeout: float | None = None) -> list[RoundRecord]:
        """Blocks until every round is committed (or stop()), then shuts down."""
        self._driver.join(timeout)
        if self._driver.is_alive():
            raise TimeoutError(f"the run did not finish within {timeout} s")
        records = self.store.rounds()
        self.shutdown()
        return records

    def stop(self) -> None:
        """Asks the round driver to stop; wait() then returns."""
        self.rounds.stop()

    def shutdown(self, grace: float = 1.0) -> None:
        """Stops serving and closes the state store (idempotent)."""
        self.rounds.stop()
        self._health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self.store.close()
