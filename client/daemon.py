"""The client daemon's loop: join, long-poll, fetch, train, submit, until told STOP.

While the server is away (not started yet, restarting, a flaky link) the daemon retries
with capped exponential backoff and jitter; when the server no longer knows its session
it joins again. A set stop event ends the loop at the next step, cancelling a poll in
flight, so SIGTERM and SIGINT stop it cleanly.

Without a trainer the daemon runs inference-only: it joins as a device that cannot
train, installs the edge artifacts it is shipped and reports how they do on its local
labelled data. This module imports no torch; the trainer's modules load only when a
trainer is made (see client/inference.py).
"""

from __future__ import annotations

import logging
import platform
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from fedge import __version__
from fedge.client.data import LocalData
from fedge.client.update import UpdatePlan, compute_update, encode_update
from fedge.config import ClientConfig
from fedge.encodings import ErrorFeedback
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.tasks import Task
from fedge.tensors import (
    CHUNK_BYTES,
    Spec,
    TensorError,
    fingerprint,
    from_blob,
    iter_chunks,
    sha256_hex,
    specs_to_proto,
    stream_sha256,
)

if TYPE_CHECKING:
    from fedge.client.trainer import Trainer

log = logging.getLogger(__name__)

# Statuses after which the daemon reconnects and joins again instead of giving up.
# ALREADY_EXISTS: the device id's previous session (a crashed run of this daemon) is
# still live on the server; it expires, and the join then succeeds.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED,
             grpc.StatusCode.ALREADY_EXISTS}
# What the server answers an update it will not fold: a closed round
# (FAILED_PRECONDITION), content it refuses (INVALID_ARGUMENT: NaN, too long, wrong
# shape), bytes that arrived damaged (DATA_LOSS), over a size limit or still busy at the
# round's deadline (RESOURCE_EXHAUSTED).
REFUSED_UPDATE = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                  grpc.StatusCode.DATA_LOSS, grpc.StatusCode.RESOURCE_EXHAUSTED}
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
    last_round: int = 0
    train_seconds: float = 0.0
    bytes_up: int = 0     # update payloads sent
    bytes_down: int = 0   # model payloads received
    edge_installed: int = 0  # edge artifacts verified and installed
    edge_refused: int = 0    # edge artifacts refused (the previous model kept serving)
    edge_version: int = 0    # the round of the edge model installed last (0: none yet)
    updates_refused: int = 0  # updates the server would not fold (logged with its reason)

    def metrics(self) -> dict[str, tuple[float, str]]:
        """The daemon's Prometheus values (see fedge.metrics.ValuesCollector)."""
        return {
            "fedge_client_rounds_trained_total": (self.rounds_trained, "Updates accepted."),
            "fedge_client_joins_total": (self.joins, "Sessions opened with the server."),
            "fedge_client_last_round": (self.last_round, "The last round trained."),
            "fedge_client_train_seconds_total": (self.train_seconds, "Local training time."),
            "fedge_client_bytes_sent_total": (self.bytes_up, "Update bytes sent."),
            "fedge_client_bytes_received_total": (self.bytes_down, "Model bytes received."),
            "fedge_client_edge_installed_total": (self.edge_installed,
                                                  "Edge artifacts verified and installed."),
            "fedge_client_edge_refused_total": (self.edge_refused, "Edge artifacts refused."),
            "fedge_client_updates_refused_total": (self.updates_refused,
                                                   "Updates the server refused."),
            "fedge_client_edge_model_version": (self.edge_version,
                                                "Round of the edge model installed last."),
        }


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


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the device token to every call, so no call site can forget it."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


def open_channel(config: ClientConfig) -> grpc.Channel:
    """A channel to config.server, over TLS unless config.insecure, carrying the device
    token (if any) on every call."""
    if config.insecure:
        channel = grpc.insecure_channel(config.server, options=CHANNEL_OPTIONS)
    else:
        try:
            root = Path(config.tls_ca).read_bytes()
            key = Path(config.tls_key).read_bytes() if config.tls_key else None
            cert = Path(config.tls_cert).read_bytes() if config.tls_cert else None
        except OSError as exc:
            raise FedgeError(f"cannot read the TLS CA or client certificate: {exc}") from exc
        credentials = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(config.server, credentials, options=CHANNEL_OPTIONS)
    if config.token:
        # grpc's interceptor classes use tuple-based call details; ours only add metadata.
        channel = grpc.intercept_channel(channel, _TokenMetadata(config.token))
    return channel


class Daemon:
    """One device taking part in a federated run."""

    def __init__(self, config: ClientConfig, task: Task, trainer: Trainer | None,
                 data: LocalData | None = None) -> None:
        """trainer: None runs the daemon inference-only (it never trains).
        data: the sources to rescan before each TRAIN or DEPLOY task (None: use the
        trainer's examples as they are; inference-only, measure on no data)."""
        self.config = config
        self.task = task
        self._trainer = trainer
        self.inference_only = trainer is None
        self.data = data
        self.stats = DaemonStats()
        self._specs = [] if trainer is None else _model_specs(trainer)
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s,
                                random.Random(hash(config.device_id)))
        self._stop = threading.Event()
        self._inflight: grpc.Future | None = None  # the RPC stop() cancels
        self._session = ""  # the last session joined, offered back when rejoining
        # Top-k's dropped entries, carried into this device's next update.
        self._feedback = ErrorFeedback()

    @property
    def trainer(self) -> Trainer:
        """The local trainer; an inference-only daemon has none."""
        if self._trainer is None:
            raise FedgeError(f"{self.config.device_id} runs inference-only: it has no trainer")
        return self._trainer

    def stop(self) -> None:
        """Ends run() at its next step, cancelling the RPC in flight (safe to call
        from a signal handler)."""
        self._stop.set()
        inflight = self._inflight
        if inflight is not None:
            inflight.cancel()

    def run(self) -> DaemonStats:
        """Takes part in rounds until the server says STOP or stop() is called."""
        with self._open_channel() as channel:
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

    def _open_channel(self) -> grpc.Channel:
        """The channel run() talks over (a hook for simulated links)."""
        return open_channel(self.config)

    def _call(self, future: grpc.Future) -> Any:
        """Waits for an RPC future; stop() cancels it.

        The wait sleeps until the RPC ends: no timed polling, since a thousand
        simulated daemons waking every few milliseconds would starve the process.
        SimpleQueue.put may be called from a signal handler, Event.set may not.
        """
        done: queue.SimpleQueue[grpc.Future] = queue.SimpleQueue()
        future.add_done_callback(done.put)
        self._inflight = future
        try:
            if self._stop.is_set():  # stop() ran before _inflight was set
                future.cancel()
            done.get()
        finally:
            self._inflight = None
        if future.cancelled():  # only stop() cancels
            raise Stopped()
        return future.result()

    def _join(self, stub: fedge_pb2_grpc.FederationStub) -> str:
        request = fedge_pb2.JoinRequest(
            device_id=self.config.device_id, task=self.task.name,
            fingerprint=specs_to_proto(self._specs),
            capabilities=self._capabilities(),
            num_examples=self._num_examples(), previous_session=self._session,
            inference_only=self.inference_only)
        reply: fedge_pb2.JoinReply = self._call(stub.Join.future(request, timeout=30))
        self._session = reply.session_id
        self.stats.joins += 1
        self._backoff.reset()
        log.info("%s: joined %s (round %d)%s", self.config.device_id, self.config.server,
                 reply.round, " inference-only" if self.inference_only else "")
        return reply.session_id

    def _capabilities(self) -> fedge_pb2.Capabilities:
        if self.inference_only:
            from fedge.client.inference import runtime_description

            return fedge_pb2.Capabilities(accelerator="none (inference only)",
                                          platform=platform.platform(),
                                          runtime=runtime_description())
        from fedge.client.trainer import describe

        return fedge_pb2.Capabilities(accelerator=describe(self.trainer.device),
                                      platform=platform.platform(),
                                      runtime=f"fedge {__version__}")

    def _num_examples(self) -> int:
        """Local labelled examples: to train on, or (inference-only) to measure on."""
        if self._trainer is not None:
            return self._trainer.num_examples
        return 0 if self.data is None else len(self.data.arrays(by_content=False)[1])

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
        if self.inference_only:  # the server never samples such a device; be safe
            log.warning("%s: round %d: handed a TRAIN task, but this device runs "
                        "inference-only; ignored", self.config.device_id, task.round)
            if self._stop.wait(1.0):
                raise Stopped()
            return
        data_metrics = self._rescan()
        if self.trainer.num_examples == 0:
            log.warning("%s: round %d: no usable local examples; not taking part",
                        self.config.device_id, task.round)
            return
        weights = self._fetch(stub, session, task.model_version)
        cfg = task.train
        plan = UpdatePlan.from_proto(cfg)
        started = time.perf_counter()
        update, metrics = compute_update(self.trainer, weights, plan)
        self.stats.train_seconds += time.perf_counter() - started
        metrics.update(data_metrics)
        carried = self._feedback.residual
        new_weights = encode_update(update, plan, self._feedback)
        header = fedge_pb2.UpdateHeader(
            session_id=session, task_id=task.task_id, round=task.round,
            kind=cfg.update_kind or fedge_pb2.WEIGHTS, encoding=cfg.encoding or fedge_pb2.F32,
            num_examples=self.trainer.num_examples, metrics=metrics,
            num_tensors=len(new_weights), sha256=stream_sha256(new_weights))
        try:
            reply = self._submit(stub, header, new_weights, task.deadline_unix)
        except grpc.RpcError as exc:
            if exc.code() not in REFUSED_UPDATE:
                raise
            # One round's update, not the device: log it and take the next task. (A
            # refused update is not resent; the server closes the round without it.)
            stale = exc.code() is grpc.StatusCode.FAILED_PRECONDITION
            log.log(logging.WARNING if stale else logging.ERROR,
                    "%s: round %d update refused (%s): %s", self.config.device_id,
                    task.round, exc.code().name, exc.details())
            self.stats.updates_refused += 1
            self._feedback.residual = carried  # nothing was applied: carry the old one
            return
        self.stats.rounds_trained += 1
        self.stats.last_round = task.round
        self.stats.bytes_up += sum(a.nbytes for a in new_weights.values())
        log.info("%s: round %d update sent (%s, loss %.4f)", self.config.device_id,
                 task.round, reply.message, metrics["train_loss"])

    def _submit(self, stub: fedge_pb2_grpc.FederationStub, header: fedge_pb2.UpdateHeader,
                weights: dict[str, np.ndarray], deadline: float) -> fedge_pb2.SubmitReply:
        """Sends the update, waiting and resending while the server is at its upload cap
        (a resent copy of an accepted update is answered, not folded twice)."""
        while True:
            try:
                reply: fedge_pb2.SubmitReply = stub.SubmitUpdate(
                    self._update_stream(header, weights), timeout=600)
                return reply
            except grpc.RpcError as exc:
                delay = self._backoff.next_delay()
                if (exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED
                        or time.time() + delay > deadline):
                    raise
                log.info("%s: server busy (%s); resending in %.1f s", self.config.device_id,
                         exc.details(), delay)
                if self._stop.wait(delay):
                    raise Stopped() from exc

    def _rescan(self) -> dict[str, float]:
        """Picks up data that appeared, changed or went since the last round; returns
        the counts to report (never records, and file names only when debugging)."""
        if self.data is None:
            return {}
        try:
            if self.data.rescan():
                if self._trainer is not None:
                    self._trainer.set_data(*self.data.arrays())
                log.info("%s: local data changed: now %d examples", self.config.device_id,
                         self._num_examples())
        except Exception:  # a scan must never end the daemon: train on what we had
            log.exception("%s: rescanning local data failed", self.config.device_id)
        return self.data.inventory().metrics(file_names=self.config.debug_report_files)

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
        from fedge.client.deploy import install_and_evaluate

        try:
            blob = self._download(stub, session, task.model_version, artifact=True)
            if task.artifact_sha256 and sha256_hex(blob) != task.artifact_sha256:
                raise FedgeError("the artifact is not the one the DEPLOY task named")
            x, y = self._labelled_examples()
            metrics = install_and_evaluate(blob, self.config, x, y)
            self.stats.edge_installed += 1
            self.stats.edge_version = task.model_version
        except (FedgeError, ImportError) as exc:
            log.error("%s: refused the edge artifact of round %d, keeping the installed "
                      "model: %s", self.config.device_id, task.model_version, exc)
            self.stats.edge_refused += 1
            metrics = {"edge_refused": 1.0}
        report = fedge_pb2.MetricsReport(session_id=session, round=task.model_version,
                                         model_version=task.model_version, metrics=metrics)
        self._call(stub.ReportMetrics.future(report, timeout=30))

    def _labelled_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The examples a shipped model is measured on: the trainer's, or (inference-
        only) the local data as it is now."""
        if self._trainer is not None:
            return self._trainer.x.cpu().numpy(), self._trainer.y.cpu().numpy()
        if self.data is None:
            return np.zeros((0, *self.task.schema.input_shape), np.float32), np.zeros(0, int)
        self._rescan()
        return self.data.arrays()

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
        self.stats.bytes_down += len(blob)
        if len(blob) != total or sha256_hex(blob) != sha:
            raise FedgeError(f"model version {version} arrived damaged: {len(blob)} of "
                             f"{total} bytes, SHA-256 mismatch")
        return blob


def _model_specs(trainer: Trainer) -> list[Spec]:
    """The fingerprint of the trainer's model (torch is loaded by then)."""
    from fedge.tasks.training import weights_of

    return fingerprint(weights_of(trainer.model))
