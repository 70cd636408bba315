"""The client daemon's task loop: join, long-poll, hand each task to its handler, until
told STOP.

The loop's rooms: ``channel.py`` (the gRPC channel, TLS, the token, what a refusal
means), ``session.py`` (a joined session, stop and backoff), ``transfers.py``
(downloads, the update upload). The daemon owns the rest: joining, polling and the
default task handlers.

Extension points, public so that nothing needs to override a private method:

- ``Daemon(..., channel_factory=...)`` makes the channel the daemon talks over
  (default ``open_channel``); a simulated device wraps it to cap its bandwidth.
- ``Daemon.handle(kind, handler)`` sets the handler of a task kind (``fedge_pb2.TRAIN``,
  ``DEPLOY``, ...) and returns the one it replaces, so that a wrapper can call through.
  A handler is called as ``handler(session, task)``; kinds without a handler wait the
  task's ``retry_after_seconds`` and poll again; STOP ends the loop.
- ``pause`` (raises ``Stopped``), ``wait`` (returns), ``stopping`` and ``stop`` let a
  handler sleep in a way stop() ends.

While the server is away (not started yet, restarting, a flaky link) the daemon retries
with capped exponential backoff and jitter; when the server no longer knows its session
it joins again. What a refused call means comes from one table (``fedge.refusals``):
a refusal the table lets the daemon retry is retried, any other ends the daemon with
the server's reason, except a refused update, which is logged while the daemon takes
the next task. A set stop event ends the loop at the next step, cancelling a poll in
flight, so SIGTERM and SIGINT stop it cleanly.

Without a trainer the daemon runs inference-only: it joins as a device that cannot
train, installs the edge artifacts it is shipped and reports how they do on its local
labelled data. This module imports no torch; the trainer's modules load only when a
trainer is made (see client/inference.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import numpy as np

from fedge.client.capabilities import capabilities
from fedge.client.channel import (
    TLS_FAILURES_TO_STOP,
    ChannelFactory,
    Refusal,
    open_channel,
    refusal_of,
    tls_problem,
)
from fedge.client.data import LocalData
from fedge.client.data.holdout import HOLDOUT_FRACTION
from fedge.client.evaluation import HeldOut, evaluate_task
from fedge.client.ledger import TaskLedger
from fedge.client.session import Backoff, Link, Session, Stopped
from fedge.client.stats import DaemonStats
from fedge.client.transfers import FastStub, decode_weights, download, submit
from fedge.client.update import UpdatePlan, compute_update, encode_update
from fedge.config import ClientConfig
from fedge.encodings import ErrorFeedback
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.tasks import Task
from fedge.tensors import Spec, fingerprint, specs_to_proto, stream_sha256

if TYPE_CHECKING:
    from fedge.client.trainer import Trainer
    from fedge.secure.device import KeyRing

# Names other code imports from here.
__all__ = ["Backoff", "Daemon", "DaemonStats", "Stopped", "TaskHandler", "open_channel"]

log = logging.getLogger(__name__)

TaskHandler = Callable[[Session, fedge_pb2.Task], None]
"""Does one task the server handed out: ``handler(session, task)``."""


class Daemon:
    """One device taking part in a federated run."""

    def __init__(self, config: ClientConfig, task: Task, trainer: Trainer | None,
                 data: LocalData | None = None,
                 channel_factory: ChannelFactory = open_channel) -> None:
        """trainer: None runs the daemon inference-only (it never trains).
        data: the sources to rescan before each TRAIN or DEPLOY task (None: use the
        trainer's examples as they are; inference-only, measure on no data).
        channel_factory: makes the channel run() talks over."""
        self.config = config
        self.task = task
        self._trainer = trainer
        self.inference_only = trainer is None
        self.data = data
        self.stats = DaemonStats()
        self.channel_factory = channel_factory
        self._specs = [] if trainer is None else _model_specs(trainer)
        self._link = Link(Backoff(config.backoff_initial_s, config.backoff_max_s,
                                  random.Random(hash(config.device_id))))
        self._handlers: dict[int, TaskHandler] = {fedge_pb2.TRAIN: self.train,
                                                  fedge_pb2.DEPLOY: self.deploy,
                                                  fedge_pb2.EVALUATE: self.evaluate,
                                                  fedge_pb2.ROLLBACK: self.rollback}
        # The held-out slice (client/evaluation.py), at the share the server gives at
        # Join; without local data the trainer's examples are the ones split.
        self.held_out = HeldOut()
        self._given = (None if trainer is None or data is not None else
                       (trainer.x.cpu().numpy(), trainer.y.cpu().numpy()))
        self._session = ""  # the last session joined, offered back when rejoining
        self._tls_problem: str | None = None  # the last failure's TLS problem, if any
        self._tls_failures = 0  # how many calls in a row failed with it
        # Top-k's dropped entries, carried into this device's next update.
        self._feedback = ErrorFeedback()
        self._ledger = TaskLedger()  # tasks trained, and those done with
        self._secure_missed = ""  # the secure task whose key stage closed without us
        self._keys: KeyRing | None = None  # secure runs: the keys its polls advertise
        self._last_blob: bytearray | None = None  # see _spare()
        # Set by a relay (fedge.relay): its Join says its updates are partial aggregates.
        self.relay = False
        # Personalization fine-tunes on the training part and measures on the held-out
        # slice, which it keeps even when the server asks for none.
        self.personal = config.personalize_epochs > 0 and trainer is not None
        self.after_run: Callable[[], None] | None = None
        if self.personal:
            self._handlers[fedge_pb2.PERSONALIZE] = self.personalize
            self._hold_out(0.0)

    @property
    def specs(self) -> list[Spec]:
        """The fingerprint of the task's model (empty for an inference-only daemon)."""
        return self._specs

    @property
    def trainer(self) -> Trainer:
        """The local trainer; an inference-only daemon has none."""
        if self._trainer is None:
            raise FedgeError(f"{self.config.device_id} runs inference-only: it has no trainer")
        return self._trainer

    def handle(self, kind: int, handler: TaskHandler) -> TaskHandler | None:
        """Makes handler do the tasks of kind (a fedge_pb2.TaskKind other than STOP);
        returns the handler it replaces (None if there was none)."""
        if kind == fedge_pb2.STOP:
            raise ValueError("STOP ends the loop; it takes no handler")
        previous = self._handlers.get(kind)
        self._handlers[kind] = handler
        return previous

    @property
    def stopping(self) -> bool:
        """stop() was called."""
        return self._link.stopping

    def wait(self, seconds: float) -> bool:
        """Sleeps up to seconds; True if stop() was called (at once or meanwhile)."""
        return self._link.wait(seconds)

    def pause(self, seconds: float) -> None:
        """Sleeps seconds in a task handler, raising Stopped if stop() is called
        meanwhile (the loop ends quietly on Stopped)."""
        self._link.pause(seconds)

    def stop(self) -> None:
        """Ends run() at its next step, cancelling the RPC in flight (safe to call
        from a signal handler)."""
        self._link.stop()

    def run(self) -> DaemonStats:
        """Takes part in rounds until the server says STOP or stop() is called."""
        with self.channel_factory(self.config) as channel:
            stub = FastStub(channel)
            while not self.stopping:
                try:
                    session = self._join(stub)
                    self._serve(session)
                    break  # the server said STOP
                except Stopped:
                    break
                except grpc.RpcError as exc:
                    refusal = refusal_of(exc)
                    # A server that is away, overloaded or cut a call is retried, whatever
                    # name came with it: that is the server's state, not the device's.
                    if not (refusal.rule.retry or refusal.transient):
                        raise FedgeError(f"server {self.config.server} refused "
                                         f"{self.config.device_id}: {refusal.code}: "
                                         f"{refusal.details}") from exc
                    problem = self._check_tls(refusal)
                    delay = self._link.backoff.next_delay()
                    if problem is not None:  # not the server being away: say what it is
                        log.warning("%s: %s; retrying in %.1f s", self.config.device_id,
                                    problem, delay)
                    else:
                        log.warning("%s: server %s %s (%s); retrying in %.1f s",
                                    self.config.device_id, self.config.server,
                                    "is unavailable" if refusal.code == "UNAVAILABLE"
                                    else "failed the request", refusal, delay)
                    if self._link.wait(delay):
                        break
        if self.after_run is not None:  # the device's own work once the run is over
            self.after_run()
        log.info("%s: stopped after %d round(s)", self.config.device_id,
                 self.stats.rounds_trained)
        return self.stats

    def _check_tls(self, refusal: Refusal) -> str | None:
        """The TLS problem a failed call shows, if any; raises one FedgeError after a
        few identical ones in a row: retrying a misconfigured channel helps no one."""
        problem = tls_problem(self.config, refusal, self.stats.joins > 0)
        if problem is None or problem != self._tls_problem:
            self._tls_problem, self._tls_failures = problem, 0
        if problem is not None:
            self._tls_failures += 1
            if self._tls_failures >= TLS_FAILURES_TO_STOP:
                raise FedgeError(problem)
        return problem

    def _join(self, stub: fedge_pb2_grpc.FederationStub) -> Session:
        request = fedge_pb2.JoinRequest(
            device_id=self.config.device_id, task=self.task.name,
            fingerprint=specs_to_proto(self._specs),
            capabilities=capabilities(self._trainer),
            num_examples=self._num_examples(), previous_session=self._session,
            inference_only=self.inference_only, relay=self.relay,
            device_class=self.config.device_class, personalize=self.personal)
        reply: fedge_pb2.JoinReply = self._link.call(stub.Join.future(request, timeout=30))
        self._session = reply.session_id
        self._hold_out(reply.holdout_fraction)
        if reply.secure_rounds and not self.inference_only and self._keys is None:
            from fedge.secure.device import KeyRing  # needs `cryptography`: see train()

            self._keys = KeyRing(self.config.device_id)
        self.stats.joins += 1
        self._link.backoff.reset()
        log.info("%s: joined %s (round %d)%s", self.config.device_id, self.config.server,
                 reply.round, " inference-only" if self.inference_only else "")
        return Session(stub, reply.session_id, self._link, self.config.device_id,
                       reply.update_crc_optional, self._keys)

    def _hold_out(self, fraction: float) -> None:
        """Splits the local examples at the server's held-out share (when it changed;
        a personalizing device keeps the default share when the server asks for none):
        the trainer keeps the training part only."""
        fraction = fraction or (HOLDOUT_FRACTION if self.personal else 0.0)
        if fraction == self.held_out.fraction:
            return
        self.held_out.fraction = fraction
        if self.data is not None:
            train = self.held_out.split(*self.data.arrays())
        elif self._given is not None:
            train = self.held_out.split(*self._given)
        else:
            return
        if self._trainer is not None:
            self._trainer.set_data(*train)
        log.info("%s: %d examples held out of training", self.config.device_id,
                 len(self.held_out.y))

    def _num_examples(self) -> int:
        """Local labelled examples: to train on, or (inference-only) to measure on."""
        if self._trainer is not None:
            return self._trainer.num_examples
        return 0 if self.data is None else len(self.data.arrays(by_content=False)[1])

    def _serve(self, session: Session) -> None:
        """Polls for tasks and hands each to its handler, until STOP."""
        while not self.stopping:
            poll = fedge_pb2.PollRequest(session_id=session.id, advert=session.advert(),
                                         wait_seconds=self.config.poll_seconds)
            task: fedge_pb2.Task = session.call(
                session.stub.PollTask.future(poll, timeout=self.config.poll_seconds + 30))
            if task.kind == fedge_pb2.STOP:
                log.info("%s: server says the run is over: %s", self.config.device_id,
                         task.message)
                self.stats.stopped_by_server = True
                return
            handler = self._handlers.get(task.kind)
            if handler is not None:
                handler(session, task)
            elif task.retry_after_seconds > 0:
                self.pause(task.retry_after_seconds)

    def train(self, session: Session, task: fedge_pb2.Task) -> None:
        """The TRAIN handler: fetch the model, train on the local data, submit the
        update. A refused update is logged and counted; the loop takes the next task."""
        if self.inference_only:  # the server never samples such a device; be safe
            log.warning("%s: round %d: handed a TRAIN task, but this device runs "
                        "inference-only; ignored", self.config.device_id, task.round)
            self.pause(1.0)
            return
        if not self._ledger.begin(task.task_id):
            # Done with it (or trained it too often): the server hands it out until the
            # round stops waiting for this device. Wait, do not train it again.
            log.debug("%s: round %d: task %s is settled here; waiting", self.config.device_id,
                      task.round, task.task_id)
            self.pause(max(0.5, min(self.config.poll_seconds,
                                    task.deadline_unix - time.time())))
            return
        self.stats.trainings += 1
        data_metrics = self._rescan()
        if self.trainer.num_examples == 0:
            log.warning("%s: round %d: no usable local examples; not taking part",
                        self.config.device_id, task.round)
            self._ledger.settle(task.task_id)
            return
        cfg = task.train
        secure = None
        if cfg.HasField("secure"):
            # Imported here: secure rounds need `cryptography`, which an inference-only
            # device (the edge extra) does not have and never needs.
            from fedge.client.secure import SecureTask

            if task.task_id == self._secure_missed:  # until the round settles it
                self.pause(1.0)
                return
            secure = SecureTask.start(session, task, self._keys)  # stage 2 meanwhile
            if secure is None:
                self._secure_missed = task.task_id
                return
        blob = download(session, task.model_version, into=self._spare())
        self._last_blob = blob  # the next download's buffer once nothing views it
        self.stats.bytes_down += len(blob)
        weights = decode_weights(blob, task.model_version, self._specs, self.task.name)
        plan = UpdatePlan.from_proto(cfg)
        started = time.perf_counter()
        update, metrics = compute_update(self.trainer, weights, plan)
        self.stats.train_seconds += time.perf_counter() - started
        metrics.update(data_metrics)
        if secure is not None:  # masked, never sent in the clear
            sent = secure.finish(plan.kind, weights, update, self.trainer.num_examples,
                                 metrics)
            if secure.missed:
                self._secure_missed = task.task_id  # its key stage went on without us
            elif sent is not None:
                self.stats.update_sent(task.round, sent)
            return
        carried = self._feedback.residual
        new_weights = encode_update(update, plan, self._feedback)
        header = fedge_pb2.UpdateHeader(
            session_id=session.id, task_id=task.task_id, round=task.round,
            kind=cfg.update_kind or fedge_pb2.WEIGHTS, encoding=cfg.encoding or fedge_pb2.F32,
            num_examples=self.trainer.num_examples, metrics=metrics,
            num_tensors=len(new_weights), sha256=stream_sha256(new_weights))
        try:
            reply = submit(session, header, new_weights, task.deadline_unix)
        except grpc.RpcError as exc:
            self._feedback.residual = carried  # nothing was applied: carry the old one
            refusal = refusal_of(exc)
            if refusal.needs_new_session:
                raise  # the loop joins again
            self._ledger.settle(task.task_id)  # given up or refused: not trained again
            if refusal.rule.retry:  # busy or away until the deadline: the round is over
                log.warning("%s: round %d update not taken before the round's deadline "
                            "(%s)", self.config.device_id, task.round, refusal)
                return
            # One round's update, not the device: log it and take the next task. (A
            # refused update is not resent; the server closes the round without it.)
            log.log(logging.WARNING if refusal.stale else logging.ERROR,
                    "%s: round %d update refused (%s, %s): %s", self.config.device_id,
                    task.round, refusal.name or "-", refusal.code, refusal.details)
            self.stats.updates_refused += 1
            return
        self._ledger.settle(task.task_id)
        self.stats.update_sent(task.round, sum(a.nbytes for a in new_weights.values()))
        log.info("%s: round %d update sent (%s, loss %.4f)", self.config.device_id,
                 task.round, reply.message, metrics["train_loss"])

    def _spare(self) -> bytearray | None:
        """The last training download's buffer, when no view of it is alive any more
        (the previous round's weights are views of it). A numpy array, a tensor over one
        or a memoryview holds an export of the buffer, and a bytearray with an export
        refuses to change size: growing it by a byte is the test."""
        spare, self._last_blob = self._last_blob, None
        if spare is None:
            return None
        try:
            spare.append(0)
        except BufferError:  # still viewed: the next download gets a buffer of its own
            return None
        del spare[-1]
        return spare

    def _rescan(self) -> dict[str, float]:
        """Picks up data that appeared, changed or went since the last round; returns
        the counts to report (never records, and file names only when debugging)."""
        if self.data is None:
            return {}
        try:
            if self.data.rescan():
                train = self.held_out.split(*self.data.arrays())
                if self._trainer is not None:
                    self._trainer.set_data(*train)
                log.info("%s: local data changed: now %d examples", self.config.device_id,
                         self._num_examples())
        except Exception:  # a scan must never end the daemon: train on what we had
            log.exception("%s: rescanning local data failed", self.config.device_id)
        return self.data.inventory().metrics(file_names=self.config.debug_report_files)

    def deploy(self, session: Session, task: fedge_pb2.Task) -> None:
        """The DEPLOY handler (client/deploy.py)."""
        from fedge.client.deploy import deploy_task

        deploy_task(self, session, task)

    def rollback(self, session: Session, task: fedge_pb2.Task) -> None:
        """The ROLLBACK handler (client/deploy.py)."""
        from fedge.client.deploy import rollback_task

        rollback_task(self, session, task)

    def evaluate(self, session: Session, task: fedge_pb2.Task) -> None:
        """The EVALUATE handler: measure the global and the installed edge model on the
        held-out slice and report (client/evaluation.py)."""
        self._rescan()
        evaluate_task(self, session, task)

    def personalize(self, session: Session, task: fedge_pb2.Task) -> None:
        """The PERSONALIZE handler (client/personalize.py)."""
        from fedge.client.personalize import personalize_task

        personalize_task(self, session, task)

    def report_metrics(self, session: Session, task: fedge_pb2.Task,
                       metrics: dict[str, float]) -> None:
        """Reports a side task's metrics (DEPLOY, PERSONALIZE) for the task's version."""
        report = fedge_pb2.MetricsReport(session_id=session.id, round=task.model_version,
                                         model_version=task.model_version, metrics=metrics)
        session.call(session.stub.ReportMetrics.future(report, timeout=30))

    def labelled_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The examples a shipped model is measured on: the trainer's, or (inference-
        only) the local data as it is now; the held-out slice when there is one."""
        if self.held_out.fraction > 0:
            self._rescan()
            return self.held_out.x, self.held_out.y
        if self._trainer is not None:
            return self._trainer.x.cpu().numpy(), self._trainer.y.cpu().numpy()
        if self.data is None:
            return np.zeros((0, *self.task.schema.input_shape), np.float32), np.zeros(0, int)
        self._rescan()
        return self.data.arrays()


def _model_specs(trainer: Trainer) -> list[Spec]:
    """The fingerprint of the trainer's model (torch is loaded by then)."""
    from fedge.tasks.training import weights_of

    return fingerprint(weights_of(trainer.model))
