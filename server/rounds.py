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
from typing import TYPE_CHECKING

import numpy as np

from fedge.tensors import Spec, sha256_hex, to_blob
from server.errors import InvalidRequest, StaleRequest
from server.registry import Device, Registry
from server.store import RoundRecord, StateStore
from server.strategies.fedavg import FedAvgFold

if TYPE_CHECKING:
    from server.deploy import Deployments

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


@dataclass
class Assignment:
    """A TRAIN task handed to one device for one round."""

    task_id: str
    device_id: str  # a device that rejoins with a new session keeps its task
    round: int
    deadline: float  # time.time()
    submitted: bool = False


class Phase(Enum):
    WAITING = "waiting"    # for devices, or between rounds
    TRAINING = "training"  # a round is open
    DONE = "done"          # all rounds committed


@dataclass(frozen=True)
class TaskView:
    """What PollTask answers, independent of the wire types."""

    kind: str  # "TRAIN", "WAIT", "STOP" or "DEPLOY"
    assignment: Assignment | None = None
    model_version: int = 0  # for DEPLOY: the round the artifact was built from
    retry_after_s: float = 1.0
    message: str = ""
    artifact_sha256: str = ""  # for DEPLOY


@dataclass
class _RoundState:
    number: int
    started: float = field(default_factory=time.monotonic)
    assignments: dict[str, Assignment] = field(default_factory=dict)  # by device id
    fold: FedAvgFold = field(default_factory=FedAvgFold)
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
        deployments: Deployments | None = None,
    ) -> None:
        self.settings = settings
        self.specs = specs
        self._registry = registry
        self._store = store
        self._evaluate = evaluate
        self._task_name = task_name
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._rng = random.Random(settings.seed)
        self._stopped: set[str] = set()
        self._stop = threading.Event()
        self._deploy = deployments
        if deployments is not None:
            deployments.on_ready = self._wake

        latest = store.latest()
        if latest is None:
            metrics = evaluate(initial)
            blob = self._blob(initial, 0)
            record = store.commit(RoundRecord(0, metrics["accuracy"], metrics["loss"],
                                              0, 0, 0, 0, 0.0), blob)
            log.info("round 0 (initial model): accuracy %.4f", record.accuracy)
        else:
            record, blob = latest
            log.info("resuming from committed round %d (accuracy %.4f)", record.round,
                     record.accuracy)
        self.model_version = record.round
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
                                    message="training is complete")
                assignment = self._round.assignments.get(device.device_id)
                if (self.phase is Phase.TRAINING and assignment is not None
                        and not assignment.submitted):
                    return TaskView("TRAIN", assignment, self.model_version)
                deploy = self._deploy_view(device)
                if deploy is not None:
                    return deploy
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return TaskView("WAIT", retry_after_s=0.0,
                                    message=f"waiting ({self.phase.value})")
                self._cond.wait(remaining)

    # ------------------------------------------------------------------ edge

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

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
                         num_examples: int) -> Assignment:
        """Refuses an update that does not answer the device's open TRAIN task."""
        with self._cond:
            assignment = self._round.assignments.get(device.device_id)
            if self.phase is not Phase.TRAINING or assignment is None:
                raise StaleRequest(f"round {round_} is not open for this device")
            if assignment.round != round_ or assignment.task_id != task_id:
                raise StaleRequest(f"task {task_id!r} of round {round_} is not this device's "
                                   f"open task (round {assignment.round})")
            if assignment.submitted:
                raise StaleRequest(f"an update for round {round_} was already accepted")
            if not 0 < num_examples <= self.settings.max_examples:
                raise InvalidRequest(f"num_examples must be in 1..{self.settings.max_examples}"
                                     f", got {num_examples}")
            return assignment

    def accept(self, assignment: Assignment, arrays: dict[str, np.ndarray],
               num_examples: int) -> None:
        """Folds a complete, decoded update into the round (the caller gives up arrays)."""
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidRequest(f"tensor {name!r} holds NaN or infinite values")
        with self._cond:
            if (self._round.assignments.get(assignment.device_id) is not assignment
                    or assignment.submitted or self.phase is not Phase.TRAINING):
                raise StaleRequest(f"round {assignment.round} closed before the update "
                                   "was complete")
            self._round.fold.add(arrays, float(num_examples))
            self._round.examples += num_examples
            assignment.submitted = True
            self._cond.notify_all()
        log.debug("round %d: accepted update from %s (%d examples)", assignment.round,
                  assignment.device_id, num_examples)

    def count_bytes(self, up: int = 0, down: int = 0) -> None:
        """Attributes wire bytes to the round in progress."""
        with self._cond:
            self._round.bytes_up += up
            self._round.bytes_down += down

    # ------------------------------------------------------------------ driver

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        """Drives rounds until all are committed (or stop() is called), then lingers
        while devices collect their STOP."""
        while self.phase is not Phase.DONE and not self._stop.is_set():
            sample = self._wait_for_devices()
            if sample is None:
                break
            self._open_round(sample)
            if self._wait_for_updates():
                self._commit()
            elif not self._stop.is_set():
                self._stop.wait(self.settings.retry_backoff_s)
        self._wait_for_edge()
        self._linger()

    def _wait_for_devices(self) -> list[Device] | None:
        announced = False
        with self._cond:
            while not self._stop.is_set():
                live = self._registry.live()
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
                                      bytes_down=self._round.bytes_down)
            for device in sample:
                self._round.assignments[device.device_id] = Assignment(
                    secrets.token_hex(8), device.device_id, number, deadline)
            self.phase = Phase.TRAINING
            self._cond.notify_all()
        log.info("round %d: training on %d device(s)", number, len(sample))

    def _wait_for_updates(self) -> bool:
        """Waits for every sampled device or the deadline; True if the round has quorum."""
        end = time.monotonic() + self.settings.round_timeout_s
        with self._cond:
            while not self._stop.is_set():
                done = sum(a.submitted for a in self._round.assignments.values())
                if done == len(self._round.assignments):
                    break
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            done = sum(a.submitted for a in self._round.assignments.values())
            self.phase = Phase.WAITING  # late updates are now stale
            self._cond.notify_all()
        if self._stop.is_set():
            return False
        if done >= self.settings.min_clients:
            if done < len(self._round.assignments):
                log.warning("round %d: deadline passed with %d of %d updates; committing "
                            "on quorum", self._round.number, done,
                            len(self._round.assignments))
            return True
        log.warning("round %d: only %d of %d required updates before the deadline; retrying "
                    "with a new sample", self._round.number, done, self.settings.min_clients)
        with self._cond:
            self._round.assignments.clear()
        return False

    def _blob(self, arrays: Mapping[str, np.ndarray], round_: int) -> bytes:
        return to_blob(arrays, {"task": self._task_name, "round": str(round_)})

    def _commit(self) -> None:
        state = self._round
        weights = state.fold.result()
        metrics = self._evaluate(weights)
        blob = self._blob(weights, state.number)
        with self._cond:
            record = RoundRecord(
                round=state.number, accuracy=metrics["accuracy"], loss=metrics["loss"],
                clients=state.fold.count, examples=state.examples, bytes_up=state.bytes_up,
                bytes_down=state.bytes_down, seconds=time.monotonic() - state.started)
        record = self._store.commit(record, blob)
        last = state.number >= self.settings.rounds
        if self._deploy is not None and self._deploy.due(state.number, last):
            self._deploy.request(state.number, weights)  # before DONE: polls wait for it
        with self._cond:
            self.model_version = state.number
            self._blob_bytes, self._blob_sha = blob, record.sha256
            # Bytes that arrive between rounds count toward the next one.
            self._round = _RoundState(state.number + 1)
            if state.number >= self.settings.rounds:
                self.phase = Phase.DONE
            self._cond.notify_all()
        log.info("round %d committed: accuracy %.4f, loss %.4f, %d client(s), %.2f s",
                 record.round, record.accuracy, record.loss, record.clients, record.seconds)
        if self._on_commit is not None:
            self._on_commit(record)

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
