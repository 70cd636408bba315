"""The client daemon's loop: join, long-poll, fetch, train, submit, until told STOP.

While the server is away (not started yet, restarting, a flaky link) the daemon retries
with capped exponential backoff and jitter; when the server no longer knows its session
it joins again. A set stop event ends the loop at the next step, cancelling a poll in
flight, so SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import logging
import platform
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from client.trainer import Trainer, describe
from fedge import __version__
from fedge.config import ClientConfig
from fedge.errors import FedgeError
from fedge.tasks import Task
from fedge.tasks.training import weights_of
from fedge.tensors import (
    CHUNK_BYTES,
    TensorError,
    fingerprint,
    from_blob,
    iter_chunks,
    sha256_hex,
    specs_to_proto,
)
from protos import fedge_pb2, fedge_pb2_grpc

log = logging.getLogger(__name__)

# Statuses after which the daemon reconnects and joins again instead of giving up.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
                   ("grpc.max_send_message_length", 4 * CHUNK_BYTES)]


class Stopped(Exception):
    """The stop event was set while the daemon was waiting."""


@dataclass
class DaemonStats:
    """What the daemon did, for logs and tests."""

    rounds_trained: int = 0
    joins: int = 0
    stopped_by_server: bool = False
    edge_installed: int = 0  # edge artifacts verified and installed
    edge_refused: int = 0    # edge artifacts refused (the previous model kept serving)


class Backoff:
    """Capped exponential backoff with jitter (between half and all of the cap)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial, self.maximum, self._rng = initial, maximum, rng
        self._attempt = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * 2**self._attempt)
        self._attempt += 1
        return cap * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def open_channel(config: ClientConfig) -> grpc.Channel:
    """A channel to config.server, over TLS unless config.insecure."""
    if config.insecure:
        return grpc.insecure_channel(config.server, options=CHANNEL_OPTIONS)
    try:
        root = Path(config.tls_ca).read_bytes()
    except OSError as exc:
        raise FedgeError(f"cannot read the TLS CA certificate: {exc}") from exc
    return grpc.secure_channel(config.server, grpc.ssl_channel_credentials(root),
                               options=CHANNEL_OPTIONS)


class Daemon:
    """One device taking part in a federated run."""

    def __init__(self, config: ClientConfig, task: Task, trainer: Trainer) -> None:
        self.config = config
        self.task = task
        self.trainer = trainer
        self.stats = DaemonStats()
        self._specs = fingerprint(weights_of(trainer.model))
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s,
                                random.Random(hash(config.device_id)))
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ends run() at its next step (safe to call from a signal handler)."""
        self._stop.set()

    def run(self) -> DaemonStats:
        """Takes part in rounds until the server says STOP or stop() is called."""
        with open_channel(self.config) as channel:
            stub = fedge_pb2_grpc.FederationStub(channel)
            while not self._stop.is_set():
                try:
                    session = self._join(stub)
                    self._serve(stub, session)
                    break  # the server said STOP
                except Stopped:
                    break
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code not in RETRYABLE:
                        raise FedgeError(f"server {self.config.server} refused "
                                         f"{self.config.device_id}: {code.name}: "
                                         f"{exc.details()}") from exc
                    delay = self._backoff.next_delay()
                    log.warning("%s: server %s %s (%s); retrying in %.1f s",
                                self.config.device_id, self.config.server,
                                "is unavailable" if code is grpc.StatusCode.UNAVAILABLE
                                else "failed the request", exc.details(), delay)
                    if self._stop.wait(delay):
                        break
        log.info("%s: stopped after %d round(s)", self.config.device_id,
                 self.stats.rounds_trained)
        return self.stats

    def _call(self, future: grpc.Future) -> Any:
        """Waits for an RPC future, cancelling it if the daemon is stopped meanwhile."""
        while not future.done():
            if self._stop.wait(0.05):
                future.cancel()
                raise Stopped()
        return future.result()

    def _join(self, stub: fedge_pb2_grpc.FederationStub) -> str:
        request = fedge_pb2.JoinRequest(
            device_id=self.config.device_id, task=self.task.name,
            fingerprint=specs_to_proto(self._specs),
            capabilities=fedge_pb2.Capabilities(
                accelerator=describe(self.trainer.device), platform=platform.platform(),
                runtime=f"fedge {__version__}"),
            num_examples=self.trainer.num_examples)
        reply: fedge_pb2.JoinReply = self._call(stub.Join.future(request, timeout=30))
        self.stats.joins += 1
        self._backoff.reset()
        log.info("%s: joined %s (round %d)", self.config.device_id, self.config.server,
                 reply.round)
        return reply.session_id

    def _serve(self, stub: fedge_pb2_grpc.FederationStub, session: str) -> None:
        while not self._stop.is_set():
            poll = fedge_pb2.PollRequest(session_id=session,
                                         wait_seconds=self.config.poll_seconds)
            task: fedge_pb2.Task = self._call(
                stub.PollTask.future(poll, timeout=self.config.poll_seconds + 30))
            if task.kind == fedge_pb2.STOP:
                log.info("%s: server says the run is over: %s", self.config.device_id,
                         task.message)
                self.stats.stopped_by_server = True
                return
            if task.kind == fedge_pb2.TRAIN:
                self._train(stub, session, task)
            elif task.kind == fedge_pb2.DEPLOY:
                self._deploy(stub, session, task)
            elif task.retry_after_seconds > 0 and self._stop.wait(task.retry_after_seconds):
                return

    def _train(self, stub: fedge_pb2_grpc.FederationStub, session: str,
               task: fedge_pb2.Task) -> None:
        weights = self._fetch(stub, session, task.model_version)
        cfg = task.train
        new_weights, metrics = self.trainer.train(
            weights, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
        header = fedge_pb2.UpdateHeader(
            session_id=session, task_id=task.task_id, round=task.round,
            kind=fedge_pb2.WEIGHTS, encoding=fedge_pb2.F32,
            num_examples=self.trainer.num_examples, metrics=metrics,
            num_tensors=len(new_weights))
        try:
            reply = stub.SubmitUpdate(self._update_stream(header, new_weights), timeout=600)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.FAILED_PRECONDITION:
                raise
            log.warning("%s: round %d update refused: %s", self.config.device_id,
                        task.round, exc.details())
            return
        self.stats.rounds_trained += 1
        log.info("%s: round %d update sent (%s, loss %.4f)", self.config.device_id,
                 task.round, reply.message, metrics["train_loss"])

    @staticmethod
    def _update_stream(header: fedge_pb2.UpdateHeader,
                       weights: dict[str, np.ndarray]) -> Iterator[fedge_pb2.UpdateChunk]:
        yield fedge_pb2.UpdateChunk(header=header)
        for chunk in iter_chunks(weights):
            yield fedge_pb2.UpdateChunk(tensor=chunk)

    def _deploy(self, stub: fedge_pb2_grpc.FederationStub, session: str,
                task: fedge_pb2.Task) -> None:
        """Fetches, verifies and installs an edge artifact, and reports how it does on
        this device's data; a refused artifact is reported and the old model kept."""
        from client.deploy import install_and_evaluate

        try:
            blob = self._download(stub, session, task.model_version, artifact=True)
            if task.artifact_sha256 and sha256_hex(blob) != task.artifact_sha256:
                raise FedgeError("the artifact is not the one the DEPLOY task named")
            metrics = install_and_evaluate(blob, self.config, self.trainer.x.cpu().numpy(),
                                           self.trainer.y.cpu().numpy())
            self.stats.edge_installed += 1
        except (FedgeError, ImportError) as exc:
            log.error("%s: refused the edge artifact of round %d, keeping the installed "
                      "model: %s", self.config.device_id, task.model_version, exc)
            self.stats.edge_refused += 1
            metrics = {"edge_refused": 1.0}
        report = fedge_pb2.MetricsReport(session_id=session, round=task.model_version,
                                         model_version=task.model_version, metrics=metrics)
        self._call(stub.ReportMetrics.future(report, timeout=30))

    def _fetch(self, stub: fedge_pb2_grpc.FederationStub, session: str,
               version: int) -> dict[str, np.ndarray]:
        """Downloads and decodes a model version's weights."""
        blob = self._download(stub, session, version)
        try:
            arrays, _ = from_blob(blob)
        except TensorError as exc:
            raise FedgeError(f"model version {version} does not decode: {exc}") from exc
        if fingerprint(arrays) != self._specs:
            raise FedgeError(f"model version {version} does not fit task {self.task.name}")
        return arrays

    def _download(self, stub: fedge_pb2_grpc.FederationStub, session: str, version: int,
                  artifact: bool = False) -> bytes:
        """Downloads a model version's blob (or the edge artifact built from it),
        resuming from the last byte on a broken stream."""
        parts: list[bytes] = []
        received, total, sha = 0, -1, ""
        for attempt in range(5):
            request = fedge_pb2.FetchRequest(session_id=session, model_version=version,
                                             offset=received, artifact=artifact)
            try:
                for chunk in stub.FetchModel(request, timeout=300):
                    if chunk.offset != received:
                        raise FedgeError(f"model stream jumped to byte {chunk.offset}, "
                                         f"expected {received}")
                    parts.append(chunk.data)
                    received += len(chunk.data)
                    total, sha = chunk.total_size, chunk.sha256
                break
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or attempt == 4:
                    raise
                log.warning("%s: model download broke at byte %d; resuming",
                            self.config.device_id, received)
                if self._stop.wait(self._backoff.next_delay()):
                    raise Stopped() from exc
        blob = b"".join(parts)
        if len(blob) != total or sha256_hex(blob) != sha:
            raise FedgeError(f"model version {version} arrived damaged: {len(blob)} of "
                             f"{total} bytes, SHA-256 mismatch")
        return blob
