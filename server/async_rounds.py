"""Buffered asynchronous training (FedBuff): the gRPC handlers' side.

A :class:`Rounds` whose devices are not sampled into rounds: a polling device gets a
TRAIN task whenever fewer than ``concurrency`` devices are training, from the current
model version (the task's ``model_version``; its ``round`` is that version + 1, as in a
synchronous round, so the update's header names the version it started from). Each
update is checked by the same intake, against the model version it started from, and
folded at once into the open *buffer* with weight ``w(staleness) * examples``
(fedge.server.staleness); one staler than ``max_staleness`` is refused (``too_stale``).
When ``buffer_size`` updates are in, the buffer is full: the next updates go to a new
one, and the driver (fedge.server.async_driver) commits the full one as the next model
version, through the same strategy step and commit pipeline as a round.

Locks as in Rounds: the state behind ``cond``, each buffer's accumulator behind its own
``fold_lock``, nothing slow under ``cond``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.config.asynchronous import AsyncSettings
from fedge.refusals import AlreadySettled, InvalidUpdate, StaleRequest, TooStale
from fedge.server.bounds import distance_bound, example_weight, median
from fedge.server.intake import prepare_bounded
from fedge.server.registry import Device, Registry
from fedge.server.round_state import (
    AlreadyAccepted,
    Assignment,
    Phase,
    Progress,
    RoundSettings,
    RoundState,
    TaskView,
    shuffle_seed,
)
from fedge.server.rounds import Evaluate, Rounds
from fedge.server.side_tasks import side_task
from fedge.server.staleness import staleness_weight
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.spec import Strategy
from fedge.tensors import Spec, from_blob, l2_norm

if TYPE_CHECKING:
    from fedge.server.deploy import Deployments

log = logging.getLogger(__name__)


@dataclass
class Buffer(RoundState):
    """The updates of one future model version (its number), as a round's state.

    reserved: updates admitted to this buffer (folded or folding); folding: of them,
    those still being folded; weight: the sum of w(s) * n folded (the accumulator's
    total weight); staleness: each folded update's staleness.
    """

    reserved: int = 0
    folding: int = 0
    weight: float = 0.0
    staleness: list[int] = field(default_factory=list)


class AsyncRounds(Rounds):
    """Rounds in async mode (see the module doc); asynchronous: the mode's settings."""

    def __init__(self, settings: RoundSettings, specs: list[Spec], registry: Registry,
                 store: StateStore, evaluate: Evaluate, initial: Mapping[str, np.ndarray],
                 task_name: str, asynchronous: AsyncSettings,
                 on_commit: Callable[[RoundRecord], None] | None = None,
                 strategy: Strategy[Any] | None = None,
                 deployments: Deployments | None = None) -> None:
        super().__init__(settings, specs, registry, store, evaluate, initial, task_name,
                         on_commit, strategy, deployments)
        self.asynchronous = asynchronous
        self.open_tasks: dict[str, Assignment] = {}  # by device id, settled ones too
        # The global model of each version an open task started from (its updates are
        # differences against it); pruned at each commit.
        self.bases: dict[int, Mapping[str, np.ndarray]] = {
            self.model_version: self.global_model}
        self.full: list[Buffer] = []  # full buffers, oldest first, for the driver
        self.refused_stale = 0
        self._serial = itertools.count(1)  # tasks handed out: each shuffles afresh
        self.current = self._new_buffer(self.model_version + 1)
        if self.phase is Phase.WAITING:
            self.phase = Phase.TRAINING  # async mode is always open

    def _new_buffer(self, number: int) -> Buffer:
        """An empty buffer, its bounds taken from the fleet now (the lock is held, or
        nothing else runs yet)."""
        bounds = self.bounds
        global_norm = (l2_norm(self.global_model)
                       if bounds.norm_factor > 0 and not self.reference_distance else 0.0)
        return Buffer(number, fold=self.strategy.new_accumulator(),
                      median_examples=median(d.num_examples for d in self.registry.live()
                                             if not d.inference_only),
                      distance_bound=distance_bound(self.reference_distance, global_norm,
                                                    bounds))

    # ------------------------------------------------------------------ handlers

    def training(self) -> int:
        """Devices holding an unsettled task (the lock must be held)."""
        return sum(not a.settled for a in self.open_tasks.values())

    def _expire(self) -> None:
        """Settles tasks past their deadline or whose device is gone, freeing their
        slots (the lock must be held)."""
        now = time.time()
        live: set[str] | None = None
        for a in self.open_tasks.values():
            if a.settled or a.folding:
                continue
            if a.deadline < now:
                a.refused = "its deadline passed"
                continue
            if live is None:
                live = {d.device_id for d in self.registry.live()}
            if a.device_id not in live:
                a.refused = "its device left"

    def poll(self, device: Device, wait_s: float) -> TaskView:
        """The device's TRAIN task (a new one while fewer than concurrency devices
        train), else what Rounds answers, waiting up to wait_s for a slot."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self.cond:
            while True:
                if self.phase is Phase.DONE or self._stop.is_set():
                    return super().poll(device, 0.0)
                a = self.open_tasks.get(device.device_id)
                if a is not None and not a.settled:
                    return TaskView("TRAIN", a, a.round - 1)
                if not device.inference_only:
                    if self.training() >= self.asynchronous.concurrency:
                        self._expire()
                    if self.training() < self.asynchronous.concurrency:
                        return TaskView("TRAIN", self._assign(device), self.model_version)
                deploy = side_task(self, device)  # DEPLOY (the canary gate asks first)
                if deploy is not None:
                    return deploy
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return TaskView("WAIT", retry_after_s=0.0,
                                    message=f"waiting: {self.asynchronous.concurrency} "
                                    "devices are training")
                self._tasks.wait(min(remaining, 1.0))  # deadlines pass without a wakeup

    def _assign(self, device: Device) -> Assignment:
        """A new TRAIN task from the current version (the lock must be held)."""
        version = self.model_version
        a = Assignment(secrets.token_hex(8), device.device_id, version + 1,
                       time.time() + self.settings.round_timeout_s,
                       seed=shuffle_seed(self.settings.seed, device.device_id,
                                         next(self._serial)),
                       joined_examples=device.num_examples)
        self.open_tasks[device.device_id] = a
        self.bases.setdefault(version, self.global_model)
        return a

    def check_submission(self, device: Device, task_id: str, round_: int,
                         num_examples: int, digest: str = "") -> Assignment:
        """Refuses an update that does not answer the device's open task, or that is
        staler than max_staleness (TooStale, which settles the task)."""
        with self.cond:
            a = self.open_tasks.get(device.device_id)
            if self.phase is Phase.DONE:
                raise StaleRequest(f"the run is over: version {self.model_version} was the "
                                   "last")
            if a is None:
                raise StaleRequest(f"no open task for this device (round {round_})")
            if a.round != round_ or a.task_id != task_id:
                raise StaleRequest(f"task {task_id!r} of round {round_} is not this device's "
                                   f"open task")
            if a.submitted:
                if digest and digest == a.digest:
                    raise AlreadyAccepted()
                raise AlreadySettled(f"a different update for task {task_id!r} was already "
                                     "accepted")
            if a.refused:
                raise AlreadySettled(f"task {task_id!r} is settled: {a.refused}")
            refusal: InvalidUpdate | TooStale | None = self._too_stale(a)
            if refusal is None and not 0 < num_examples <= self.settings.max_examples:
                refusal = InvalidUpdate(f"num_examples must be in 1.."
                                        f"{self.settings.max_examples}, got {num_examples}")
            if refusal is not None:
                a.refused = str(refusal)
                self._notify_everyone()
                raise refusal
            return a

    def _too_stale(self, a: Assignment) -> TooStale | None:
        """The refusal of a's update if its base is too old now (the lock must be held)."""
        staleness = self.model_version - (a.round - 1)
        if staleness <= self.asynchronous.max_staleness:
            return None
        self.refused_stale += 1
        return TooStale(f"the update started from model version {a.round - 1}, {staleness} "
                        f"versions behind the current {self.model_version} (max_staleness "
                        f"{self.asynchronous.max_staleness})")

    def accept(self, assignment: Assignment, arrays: dict[str, np.ndarray],
               num_examples: int, digest: str = "", defer: bool = False) -> None:
        """Checks an update against the version it started from and folds it into the
        open buffer, weighted by its staleness times its (bounded) example count. Never
        deferred: asynchronous rounds keep their updates in memory (no spool)."""
        base_version = assignment.round - 1
        with self.cond:
            base = self.bases.get(base_version)
            buffer = self.current
        if base is None:  # not kept (a version committed before a restart): from disk
            base = from_blob(self.store.blob(base_version))[0]
        assert isinstance(buffer, Buffer)
        prepared = prepare_bounded(arrays, base, self.settings.update_kind,
                                   self.settings.max_update_norm, self.settings.norm_action,
                                   buffer.distance_bound,
                                   measure=self.bounds.norm_factor > 0)
        examples = example_weight(num_examples, assignment.joined_examples,
                                  buffer.median_examples, self.bounds.examples_factor)
        with self.cond:
            if assignment.submitted or assignment.folding:
                if digest and digest == assignment.digest:
                    raise AlreadyAccepted()
                raise AlreadySettled(f"task {assignment.task_id!r} was settled while this "
                                     "update arrived")
            if assignment.refused or self.open_tasks.get(assignment.device_id) is not (
                    assignment) or self.phase is Phase.DONE:
                raise StaleRequest(f"task {assignment.task_id!r} was settled or the run "
                                   "ended before the update was complete")
            stale = self._too_stale(assignment)  # versions may have committed meanwhile
            if stale is not None:
                assignment.refused = str(stale)
                self._notify_everyone()
                raise stale
            staleness = self.model_version - base_version
            weight = examples * staleness_weight(self.asynchronous.staleness, staleness,
                                                 self.asynchronous.staleness_exponent)
            buffer = self.current
            assert isinstance(buffer, Buffer)
            buffer.reserved += 1
            buffer.folding += 1
            if buffer.reserved >= self.asynchronous.buffer_size:
                # Full: the driver commits it once its folds end; new updates go on.
                self.full.append(buffer)
                self.current = self._new_buffer(buffer.number + 1)
            assignment.folding = True
            assignment.digest = digest
            if self.bounds.norm_factor > 0:
                buffer.distances.append(prepared.norm)
        folded, started = False, time.perf_counter()
        try:
            with buffer.fold_lock:
                buffer.fold.add(prepared.gradient, weight)
            folded = True
        finally:
            with self.cond:
                assignment.folding = False
                buffer.folding -= 1
                if folded:
                    self.totals.aggregation_seconds += time.perf_counter() - started
                    self.totals.updates_accepted += 1
                    buffer.examples += round(examples)
                    buffer.weight += weight
                    buffer.staleness.append(staleness)
                    assignment.submitted = True
                else:
                    buffer.reserved -= 1
                    assignment.digest = ""
                self._notify_everyone()  # a slot is free; the driver may commit
        log.debug("version %d: folded %s's update (staleness %d, weight %.4g)",
                  buffer.number, assignment.device_id, staleness, weight)

    def refuse(self, assignment: Assignment, reason: str) -> None:
        """Settles an open task whose update was refused for good, freeing its slot."""
        with self.cond:
            if (self.open_tasks.get(assignment.device_id) is assignment
                    and not assignment.settled and not assignment.folding):
                assignment.refused = reason
                self._notify_everyone()

    def progress(self) -> Progress:
        """Where the run stands: the next version, devices training, updates buffered."""
        with self.cond:
            buffer = self.current
            assert isinstance(buffer, Buffer)
            number = buffer.number
            if self.phase is Phase.DONE:
                number = self.model_version
            return Progress(self.phase.value, number, self.model_version, self.training(),
                            buffer.reserved)

    # ------------------------------------------------------------------ driver's side

    def run(self) -> None:
        """Commits versions until settings.rounds are (or stop), then lingers."""
        from fedge.server.async_driver import AsyncDriver

        AsyncDriver(self).run()

    def next_full(self) -> Buffer | None:
        """The oldest full buffer once its folds have ended (None on stop or when the
        run is done)."""
        with self.cond:
            while not self._stop.is_set() and self.phase is not Phase.DONE:
                if self.full and not self.full[0].folding:
                    return self.full.pop(0)
                self.cond.wait(0.5)
        return None

    def install_version(self, record: RoundRecord, weights: dict[str, np.ndarray],
                        blob: bytes, distances: list[float]) -> None:
        """Makes a committed version the one new tasks start from, and forgets the bases
        no open task needs."""
        with self.cond:
            if distances:
                self.reference_distance = median(distances)
            self.model_version = record.round
            self.global_model = weights
            self._blob_bytes, self._blob_sha = blob, record.sha256
            self.bases[record.round] = weights
            needed = {a.round - 1 for a in self.open_tasks.values() if not a.settled}
            for version in [v for v in self.bases if v not in needed
                            and v != record.round]:
                del self.bases[version]
            if record.round >= self.settings.rounds:
                self.phase = Phase.DONE
            self._notify_everyone()
