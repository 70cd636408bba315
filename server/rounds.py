"""The round state machine: select devices, hand out TRAIN tasks with a deadline,
fold updates as they arrive, and commit at quorum.

One driver thread (:meth:`Rounds.run`) moves the rounds forward; gRPC handlers call
:meth:`poll`, :meth:`model_blob`, :meth:`check_submission` and :meth:`accept`. All shared
state sits behind one condition variable, and nothing slow (evaluation, disk) happens
while it is held except the fold itself, which is one pass over the model.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.refusals import AlreadySettled, InvalidUpdate, StaleRequest
from fedge.server.intake import prepare
from fedge.server.registry import Device, Registry
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.fedavg import Accumulator, FedAvg, FedAvgFold
from fedge.server.strategies.spec import Strategy
from fedge.tensors import Spec, from_blob, sha256_hex, to_blob

if TYPE_CHECKING:
    from fedge.server.deploy import Deployments

log = logging.getLogger(__name__)

Evaluate = Callable[[Mapping[str, np.ndarray]], dict[str, float]]


@dataclass(frozen=True)
class RoundSettings:
    """What the driver needs to know to run rounds (see ServerConfig for meanings)."""

    rounds: int
    min_clients: int
    fraction: float
    round_timeout_s: float
    retry_backoff_s: float
    epochs: int
    lr: float
    batch_size: int
    seed: int
    linger_s: float
    max_examples: int = 1 << 40
    quorum_fraction: float = 0.0  # 0: min_clients updates commit a round
    max_update_norm: float = 0.0  # 0: no bound
    norm_action: str = "refuse"
    max_round_attempts: int = 5  # failed attempts in a row that end the run; 0: never

    def quorum(self, sampled: int) -> int:
        """Updates needed to commit a round of sampled devices at its deadline."""
        if self.quorum_fraction > 0:
            return max(1, math.ceil(self.quorum_fraction * sampled))
        return self.min_clients
    update_kind: str = "weights"  # announced in each TRAIN task, required of updates
    encoding: str = "f32"
    topk_fraction: float = 0.1


@dataclass
class Assignment:
    """A TRAIN task handed to one device for one round."""

    task_id: str
    device_id: str  # a device that rejoins with a new session keeps its task
    round: int
    deadline: float  # time.time()
    submitted: bool = False
    digest: str = ""  # SHA-256 of the accepted update's stream
    refused: str = ""  # why its update was refused (the device does not resend it)

    @property
    def settled(self) -> bool:
        return self.submitted or bool(self.refused)


class AlreadyAccepted(Exception):
    """A resent copy of an update that was already accepted: answer it, fold nothing."""


class Phase(Enum):
    WAITING = "waiting"    # for devices, or between rounds
    TRAINING = "training"  # a round is open
    DONE = "done"          # all rounds committed, or the run failed (Rounds.failure)


@dataclass(frozen=True)
class TaskView:
    """What PollTask answers, independent of the wire types."""

    kind: str  # "TRAIN", "WAIT", "STOP" or "DEPLOY"
    assignment: Assignment | None = None
    model_version: int = 0  # for DEPLOY: the round the artifact was built from
    retry_after_s: float = 1.0
    message: str = ""
    artifact_sha256: str = ""  # for DEPLOY


@dataclass(frozen=True)
class Progress:
    """A consistent snapshot of the round in progress."""

    phase: str
    round: int
    model_version: int
    selected: int  # devices handed this round's TRAIN task
    reported: int  # of them, those whose update was accepted


@dataclass
class Totals:
    """Counts since the server started (for metrics)."""

    bytes_up: int = 0
    bytes_down: int = 0
    updates_accepted: int = 0
    aggregation_seconds: float = 0.0


@dataclass
class _RoundState:
    number: int
    started: float = field(default_factory=time.monotonic)
    assignments: dict[str, Assignment] = field(default_factory=dict)  # by device id
    fold: Accumulator = field(default_factory=FedAvgFold)
    examples: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class Rounds:
    """Runs settings.rounds rounds of FedAvg over the devices in registry."""

    def __init__(
        self,
        settings: RoundSettings,
        specs: list[Spec],
        registry: Registry,
        store: StateStore,
        evaluate: Evaluate,
        initial: Mapping[str, np.ndarray],
        task_name: str,
        on_commit: Callable[[RoundRecord], None] | None = None,
        strategy: Strategy[Any] | None = None,
        deployments: Deployments | None = None,
    ) -> None:
        self.settings = settings
        self.strategy: Strategy[Any] = strategy if strategy is not None else FedAvg()
        self.specs = specs
        self._registry = registry
        self._store = store
        self._evaluate = evaluate
        self._task_name = task_name
        self._on_commit = on_commit
        # One lock, two conditions: the driver waits on _cond (woken by every accepted
        # update), long polls on _tasks (woken only when what a poll answers can change:
        # a round opens, a model commits, an artifact is ready, the run stops). With a
        # thousand parked polls, waking them per update would cost a million wakeups.
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._tasks = threading.Condition(lock)
        self._rng = random.Random(settings.seed)
        self._stopped: set[str] = set()
        self._stop = threading.Event()
        # Why the run ended early: a round failed max_round_attempts times in a row.
        self.failure = ""
        self.totals = Totals()
        self._deploy = deployments
        if deployments is not None:
            deployments.on_ready = self._wake

        latest = store.latest()
        if latest is None:
            metrics = evaluate(initial)
            blob = self._blob(initial, 0)
            record = store.commit(RoundRecord(0, metrics["accuracy"], metrics["loss"],
                                              0, 0, 0, 0, 0.0), blob)
            log.info("round 0 (initial model): accuracy %.4f", record.accuracy,
                     extra={"event": "round.initial", "accuracy": record.accuracy})
        else:
            record, blob = latest
            log.info("resuming from committed round %d (accuracy %.4f)", record.round,
                     record.accuracy, extra={"event": "run.resumed", "round": record.round})
        self.model_version = record.round
        self._global, _ = from_blob(blob)
        self._restore_strategy(record.round)
        log.info("strategy %s, %s updates, %s encoding%s", self.strategy.describe(),
                 settings.update_kind, settings.encoding,
                 "; it BUFFERS each round's updates (memory grows with the client count)"
                 if self.strategy.buffers else "")
        self._blob_bytes = blob
        self._blob_sha = sha256_hex(blob)
        self.phase = Phase.DONE if record.round >= settings.rounds else Phase.WAITING
        self._round = _RoundState(record.round + 1)

    # ------------------------------------------------------------------ handlers

    def poll(self, device: Device, wait_s: float) -> TaskView:
        """The device's open TRAIN task, waiting up to wait_s for one to appear."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while True:
                # After the last round, a device is told STOP only once it has been
                # handed the final edge artifact (or none is being built).
                if self.phase is Phase.DONE and not self._edge_building():
                    deploy = self._deploy_view(device)
                    if deploy is not None:
                        return deploy
                    self._stopped.add(device.session_id)
                    self._cond.notify_all()
                    return TaskView("STOP", model_version=self.model_version,
                                    message=(f"the run stopped: {self.failure}"
                                             if self.failure else "training is complete"))
                assignment = self._round.assignments.get(device.device_id)
                if (self.phase is Phase.TRAINING and assignment is not None
                        and not assignment.settled and not device.inference_only):
                    return TaskView("TRAIN", assignment, self.model_version)
                deploy = self._deploy_view(device)
                if deploy is not None:
                    return deploy
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return TaskView("WAIT", retry_after_s=0.0,
                                    message=f"waiting ({self.phase.value})")
                self._tasks.wait(remaining)

    # ------------------------------------------------------------------ edge

    def _notify_everyone(self) -> None:
        """Wakes the driver and every parked poll (the lock must be held)."""
        self._cond.notify_all()
        self._tasks.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._notify_everyone()

    def _edge_building(self) -> bool:
        return self._deploy is not None and self._deploy.busy()

    def _deploy_view(self, device: Device) -> TaskView | None:
        shipped = self._deploy.offer(device.device_id) if self._deploy is not None else None
        if shipped is None:
            return None
        return TaskView("DEPLOY", model_version=shipped.round, artifact_sha256=shipped.sha256,
                        message=f"install the edge artifact of round {shipped.round}")

    def artifact_blob(self, round_: int) -> tuple[bytes, str]:
        """The packed edge artifact built from round_ and its SHA-256."""
        if self._deploy is None:
            raise StaleRequest("this server builds no edge artifacts")
        return self._deploy.blob(round_)

    def _wait_for_edge(self) -> None:
        while self._deploy is not None and not self._stop.is_set():
            if self._deploy.wait_idle(0.5):
                return

    def model_blob(self, version: int) -> tuple[bytes, str]:
        """The blob of a committed model version and its SHA-256."""
        with self._cond:
            if version == self.model_version:
                return self._blob_bytes, self._blob_sha
            latest = self.model_version
        if not 0 <= version < latest:
            raise StaleRequest(f"model version {version} does not exist (latest {latest})")
        blob = self._store.blob(version)
        return blob, sha256_hex(blob)

    def check_submission(self, device: Device, task_id: str, round_: int,
                         num_examples: int, digest: str = "") -> Assignment:
        """Refuses an update that does not answer the device's open TRAIN task.

        Raises AlreadyAccepted for a resent copy (same digest) of the accepted update, and
        AlreadySettled for any other update of a task that has its update or had one
        refused. A refusal that settles (see fedge.refusals) settles the task here.
        """
        with self._cond:
            assignment = self._round.assignments.get(device.device_id)
            if self.phase is not Phase.TRAINING or assignment is None:
                raise StaleRequest(f"round {round_} is not open for this device")
            if assignment.round != round_ or assignment.task_id != task_id:
                raise StaleRequest(f"task {task_id!r} of round {round_} is not this device's "
                                   f"open task (round {assignment.round})")
            if assignment.submitted:
                if digest and digest == assignment.digest:
                    raise AlreadyAccepted()
                raise AlreadySettled(f"a different update for task {task_id!r} of round "
                                     f"{round_} was already accepted")
            if assignment.refused:  # final: the round stopped waiting for this task
                raise AlreadySettled(f"task {task_id!r} of round {round_} is settled: its "
                                     f"update was refused ({assignment.refused}); it takes no "
                                     "other update")
            if not 0 < num_examples <= self.settings.max_examples:
                refusal = InvalidUpdate(f"num_examples must be in 1.."
                                        f"{self.settings.max_examples}, got {num_examples}")
                self.refuse(assignment, str(refusal))
                raise refusal
            return assignment

    def accept(self, assignment: Assignment, arrays: dict[str, np.ndarray],
               num_examples: int, digest: str = "") -> None:
        """Turns a decoded update into a checked pseudo-gradient against this round's
        global model (the intake's last filters, fedge.server.intake.prepare) and hands
        it to the strategy's accumulator. The caller gives up arrays (reused in place)."""
        with self._cond:
            reference = self._global  # replaced, never mutated, at commit
        gradient = prepare(arrays, reference, self.settings.update_kind,
                           self.settings.max_update_norm, self.settings.norm_action)
        with self._cond:
            if assignment.submitted and digest and digest == assignment.digest:
                raise AlreadyAccepted()  # two copies of one update arrived together
            if assignment.settled:
                raise AlreadySettled(f"task {assignment.task_id!r} of round "
                                     f"{assignment.round} was settled while this update "
                                     "arrived")
            if (self._round.assignments.get(assignment.device_id) is not assignment
                    or self.phase is not Phase.TRAINING):
                raise StaleRequest(f"round {assignment.round} closed before the update "
                                   "was complete")
            started = time.perf_counter()
            self._round.fold.add(gradient, float(num_examples))
            self.totals.aggregation_seconds += time.perf_counter() - started
            self.totals.updates_accepted += 1
            self._round.examples += num_examples
            assignment.submitted = True
            assignment.digest = digest
            self._cond.notify_all()
        log.debug("round %d: accepted update from %s (%d examples)", assignment.round,
                  assignment.device_id, num_examples)

    def refuse(self, assignment: Assignment, reason: str) -> None:
        """Settles an assignment whose update was refused for good (its refusal's rule
        settles): the round stops waiting for it and the task takes nothing more."""
        with self._cond:
            if (self._round.assignments.get(assignment.device_id) is assignment
                    and not assignment.settled and self.phase is Phase.TRAINING):
                assignment.refused = reason
                self._cond.notify_all()

    def count_bytes(self, up: int = 0, down: int = 0) -> None:
        """Attributes wire bytes to the round in progress."""
        with self._cond:
            self._round.bytes_up += up
            self._round.bytes_down += down
            self.totals.bytes_up += up
            self.totals.bytes_down += down

    def progress(self) -> Progress:
        """Where the run stands, for status and metrics."""
        with self._cond:
            state = self._round
            return Progress(self.phase.value, state.number, self.model_version,
                            len(state.assignments),
                            sum(a.submitted for a in state.assignments.values()))

    # ------------------------------------------------------------------ driver

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._notify_everyone()

    def run(self) -> None:
        """Drives rounds until all are committed (or stop() is called), then lingers
        while devices collect their STOP."""
        failed = 0  # attempts at the current round that missed quorum, in a row
        while self.phase is not Phase.DONE and not self._stop.is_set():
            sample = self._wait_for_devices()
            if sample is None:
                break
            self._open_round(sample)
            why = self._wait_for_updates()
            if self._stop.is_set():
                break
            if not why:
                self._commit()
                failed = 0
                continue
            failed += 1
            if failed == self.settings.max_round_attempts:
                self._fail(f"round {self._round.number} missed its quorum {failed} times in "
                           f"a row (last time: {why}); the last committed model is round "
                           f"{self.model_version}")
            else:
                self._stop.wait(self.settings.retry_backoff_s)
        self._wait_for_edge()
        self._linger()

    def _wait_for_devices(self) -> list[Device] | None:
        announced = False
        with self._cond:
            while not self._stop.is_set():
                # Only devices that can train are sampled and count toward min_clients.
                live = [d for d in self._registry.live() if not d.inference_only]
                if len(live) >= self.settings.min_clients:
                    size = max(self.settings.min_clients,
                               math.ceil(self.settings.fraction * len(live)))
                    return self._rng.sample(live, min(size, len(live)))
                if not announced:
                    log.info("round %d: waiting for devices (%d of %d connected)",
                             self._round.number, len(live), self.settings.min_clients)
                    announced = True
                self._cond.wait(0.5)
        return None

    def _open_round(self, sample: list[Device]) -> None:
        deadline = time.time() + self.settings.round_timeout_s
        with self._cond:
            number = self._round.number
            self._round = _RoundState(number, bytes_up=self._round.bytes_up,
                                      bytes_down=self._round.bytes_down,
                                      fold=self.strategy.new_accumulator())
            for device in sample:
                self._round.assignments[device.device_id] = Assignment(
                    secrets.token_hex(8), device.device_id, number, deadline)
            self.phase = Phase.TRAINING
            self._notify_everyone()
        log.info("round %d: training on %d device(s)", number, len(sample),
                 extra={"event": "round.opened", "round": number, "devices": len(sample)})

    def _fail(self, failure: str) -> None:
        """Ends the run without committing more rounds; devices are told why."""
        log.error("stopping the run: %s", failure,
                  extra={"event": "run.failed", "round": self._round.number})
        with self._cond:
            self.failure = failure
            self.phase = Phase.DONE
            self._notify_everyone()

    def _wait_for_updates(self) -> str:
        """Waits until every sampled device has sent its update or had it refused, or
        the deadline; "" if the round has quorum, else why not."""
        end = time.monotonic() + self.settings.round_timeout_s
        with self._cond:
            while not self._stop.is_set():
                if all(a.settled for a in self._round.assignments.values()):
                    break
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            done = sum(a.submitted for a in self._round.assignments.values())
            self.phase = Phase.WAITING  # late updates are now stale
            self._notify_everyone()
            refusals = [a.refused for a in self._round.assignments.values() if a.refused]
        if self._stop.is_set():
            return "the server is stopping"
        quorum = self.settings.quorum(len(self._round.assignments))
        if done >= quorum:
            if done < len(self._round.assignments):
                log.warning("round %d: %d of %d updates (%d refused); committing on quorum",
                            self._round.number, done, len(self._round.assignments),
                            len(refusals),
                            extra={"event": "round.quorum", "round": self._round.number})
            return ""
        why = f"{done} of {quorum} required updates"
        if refusals:
            why += f", {len(refusals)} refused: {'; '.join(sorted(set(refusals))[:3])}"
        log.warning("round %d: %s; retrying with a new sample", self._round.number, why,
                    extra={"event": "round.retried", "round": self._round.number})
        with self._cond:
            self._round.assignments.clear()
        return why

    def _blob(self, arrays: Mapping[str, np.ndarray], round_: int) -> bytes:
        return to_blob(arrays, {"task": self._task_name, "round": str(round_)})

    def _commit(self) -> None:
        state = self._round
        # The accumulator holds pseudo-gradients already (see fedge.server.intake).
        gradient = self.strategy.aggregate(state.fold)
        weights = self.strategy.step(self._global, gradient)
        metrics = self._evaluate(weights)
        blob = self._blob(weights, state.number)
        # The optimizer's state (if it has any) goes to disk before the round's row, so
        # that a restart from this round resumes it (a state file without a row is
        # ignored).
        optimizer_state = self.strategy.state()
        if optimizer_state:
            self._store.write_server_state(state.number, to_blob(
                optimizer_state, {"strategy": self.strategy.name}))
        with self._cond:
            record = RoundRecord(
                round=state.number, accuracy=metrics["accuracy"], loss=metrics["loss"],
                clients=state.fold.count, examples=state.examples, bytes_up=state.bytes_up,
                bytes_down=state.bytes_down, seconds=time.monotonic() - state.started,
                sampled=len(state.assignments))
        record = self._store.commit(record, blob)
        last = state.number >= self.settings.rounds
        if self._deploy is not None and self._deploy.due(state.number, last):
            self._deploy.request(state.number, weights)  # before DONE: polls wait for it
        with self._cond:
            self.model_version = state.number
            self._global = weights
            self._blob_bytes, self._blob_sha = blob, record.sha256
            # Bytes that arrive between rounds count toward the next one.
            self._round = _RoundState(state.number + 1)
            if state.number >= self.settings.rounds:
                self.phase = Phase.DONE
            self._notify_everyone()
        log.info("round %d committed: accuracy %.4f, loss %.4f, %d client(s), %.2f s",
                 record.round, record.accuracy, record.loss, record.clients, record.seconds,
                 extra={"event": "round.committed", "round": record.round,
                        "accuracy": record.accuracy, "clients": record.clients})
        if self._on_commit is not None:
            self._on_commit(record)

    def _restore_strategy(self, round_: int) -> None:
        """Loads the server optimizer's state saved with round_, if this strategy's."""
        saved = self._store.read_server_state(round_)
        if saved is None:
            return
        arrays, meta = from_blob(saved)
        if meta.get("strategy") != self.strategy.name:
            log.warning("round %d was committed by strategy %r; %s starts with fresh "
                        "optimizer state", round_, meta.get("strategy"), self.strategy.name)
            return
        self.strategy.load_state(arrays)
        if arrays:
            log.info("resumed %s optimizer state from round %d", self.strategy.name, round_)

    def _linger(self) -> None:
        """After the last round, waits until every live device has been told STOP."""
        end = time.monotonic() + self.settings.linger_s
        with self._cond:
            while not self._stop.is_set():
                waiting = {d.session_id for d in self._registry.live()} - self._stopped
                remaining = end - time.monotonic()
                if not waiting or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
