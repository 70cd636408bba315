"""The round state machine's shared state and the gRPC handlers' side of it.

One driver thread (:class:`fedge.server.driver.Driver`, started by :meth:`Rounds.run`)
moves the rounds forward; gRPC handlers call :meth:`poll`, :meth:`model_blob`,
:meth:`check_submission`, :meth:`accept` and :meth:`refuse`. The round's state sits behind
one condition variable, and nothing slow happens while it is held: evaluation and disk
happen on the driver outside it, and the fold of an update runs under the accumulator's
own lock (RoundState.fold_lock), so polls and joins never wait behind a fold.

The pieces: round_state.py (the values and the settlement rules, pure), sampler.py (which
devices a round samples), commit.py (next model, checkpoint, row), driver.py (the loop).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.refusals import AlreadySettled, InvalidUpdate, StaleRequest
from fedge.secure.vector import size_of
from fedge.server.bounds import Bounds, distance_bound, example_weight, median
from fedge.server.commit import restore_strategy, starting_point
from fedge.server.eval_worker import EvalWorker
from fedge.server.next_blob import place_sum
from fedge.server.personalize import Personalizations
from fedge.server.registry import Device, Registry
from fedge.server.round_state import (
    AlreadyAccepted,
    Assignment,
    Phase,
    Progress,
    RoundSettings,
    RoundState,
    TaskView,
    Totals,
    all_settled,
    folding,
    shuffle_seed,
)
from fedge.server.secure_round import open_secure
from fedge.server.side_tasks import side_task
from fedge.server.spool import fold_any, prepare_any
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.fedavg import FedAvg
from fedge.server.strategies.spec import Strategy
from fedge.tensors import Spec, from_blob, l2_norm, sha256_hex

if TYPE_CHECKING:
    from fedge.server.budget import PrivacyBudget
    from fedge.server.deploy import Deployments
    from fedge.server.fleet_eval import FleetEvaluation

# Re-exported: the service and the tests import the round's values from here.
__all__ = ["AlreadyAccepted", "Assignment", "Phase", "Progress", "RoundSettings", "Rounds",
           "TaskView", "Totals"]

log = logging.getLogger(__name__)

Evaluate = Callable[[Mapping[str, np.ndarray]], dict[str, float]]


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
        budget: PrivacyBudget | None = None,
    ) -> None:
        self.settings = settings
        self.strategy: Strategy[Any] = strategy if strategy is not None else FedAvg()
        self.specs = specs
        self.registry = registry
        self.store = store
        self.evaluate = evaluate
        self.task_name = task_name
        self.on_commit = on_commit  # at commit, and again once the round is evaluated
        self.evaluations = EvalWorker(store, evaluate, settings.eval_every,
                                      settings.eval_threads, on_commit)
        # One lock, two conditions: the driver waits on cond (woken by every settled
        # update), long polls on _tasks (woken only when what a poll answers can change:
        # a round opens, a model commits, an artifact is ready, the run stops). With a
        # thousand parked polls, waking them per update would cost a million wakeups.
        lock = threading.RLock()
        self.cond = threading.Condition(lock)
        self._tasks = threading.Condition(lock)
        self._stopped: set[str] = set()  # sessions told STOP
        self._stop = threading.Event()
        # Why the run ended early: a round missed max_round_attempts times, or the driver failed.
        self.failure = ""
        # Why the run ended before its last round without failing (the privacy budget).
        self.ended_early = ""
        self.budget = budget  # the DP accountant, None without DP
        self.totals = Totals()
        self.bounds = Bounds(settings.examples_factor, settings.norm_factor,
                             settings.warmup_norm_ratio)
        # The median distance of the last attempt's updates (0: none yet, warm-up).
        self.reference_distance = 0.0
        self.sum_in_blob = False  # set by the spool for a large model (next_blob.py)
        self.deploy = deployments
        self.evaluation: FleetEvaluation | None = None  # federated evaluation, if on
        self.personal = Personalizations(store)  # PERSONALIZE before STOP, to those who ask
        if deployments is not None:
            deployments.on_ready = self.wake

        record, blob = starting_point(store, evaluate, initial, task_name)
        self.model_version = record.round
        self.global_model, _ = from_blob(blob, copy=False)  # views: one copy, not two
        restore_strategy(store, self.strategy, record.round)
        log.info("strategy %s, %s updates, %s encoding%s", self.strategy.describe(),
                 settings.update_kind, settings.encoding,
                 "; it BUFFERS each round's updates (memory grows with the client count)"
                 if self.strategy.buffers else "")
        self._blob_bytes = blob
        self._blob_sha = sha256_hex(blob)
        self.phase = Phase.DONE if record.round >= settings.rounds else Phase.WAITING
        self.current = RoundState(record.round + 1)

    # ------------------------------------------------------------------ handlers

    def poll(self, device: Device, wait_s: float) -> TaskView:
        """The device's open TRAIN task, waiting up to wait_s for one to appear."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self.cond:
            while True:
                # After the last round, a device is told STOP only once it has been
                # handed the final edge artifact (or none is being built).
                if self.phase is Phase.DONE and not self.edge_building():
                    side = (side_task(self, device)  # DEPLOY, EVALUATE; PERSONALIZE
                            or self.personal.offer(device, self.model_version))
                    if side is not None:
                        return side
                    self._stopped.add(device.session_id)
                    self.registry.leave(device.session_id)  # its daemon exits now
                    self.cond.notify_all()
                    return TaskView("STOP", model_version=self.model_version,
                                    message=(f"the run stopped: {self.failure}"
                                             if self.failure else "training is complete"))
                assignment = self.current.assignments.get(device.device_id)
                if (self.phase is Phase.TRAINING and assignment is not None and not (
                        assignment.settled or assignment.folding or device.inference_only)):
                    return TaskView("TRAIN", assignment, self.model_version)
                side = side_task(self, device)
                if side is not None:
                    return side
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return TaskView("WAIT", retry_after_s=0.0,
                                    message=f"waiting ({self.phase.value})")
                self._tasks.wait(remaining)

    def model_blob(self, version: int) -> tuple[bytes, str]:
        """The blob of a committed model version and its SHA-256."""
        with self.cond:
            if version == self.model_version:
                return self._blob_bytes, self._blob_sha
            latest = self.model_version
        if not 0 <= version < latest:
            raise StaleRequest(f"model version {version} does not exist (latest {latest})")
        blob = self.store.blob(version)
        return blob, sha256_hex(blob)

    def check_submission(self, device: Device, task_id: str, round_: int,
                         num_examples: int, digest: str = "") -> Assignment:
        """Refuses an update that does not answer the device's open TRAIN task.

        Raises AlreadyAccepted for a resent copy (same digest) of the accepted update, and
        AlreadySettled for any other update of a task that has its update or had one
        refused. A refusal that settles (see fedge.refusals) settles the task here.
        """
        with self.cond:
            assignment = self.current.assignments.get(device.device_id)
            if self.phase is not Phase.TRAINING or assignment is None:
                raise StaleRequest(f"round {round_} is not open for this device")
            if assignment.round != round_ or assignment.task_id != task_id:
                raise StaleRequest(f"task {task_id!r} of round {round_} is not this device's "
                                   f"open task (round {assignment.round})")
            if self.current.secure is not None:  # never fold a plain update into it
                refusal = InvalidUpdate(f"round {round_} is secure: the update must be masked "
                                        "(SubmitMasked); this device's fedge is too old")
                self.refuse(assignment, str(refusal))
                raise refusal
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
               num_examples: int, digest: str = "", defer: bool = False,
               ) -> Callable[[], None] | None:
        """Turns a decoded update into a checked pseudo-gradient against this round's
        global model (the intake's last filters, fedge.server.intake.prepare) and hands
        it to the strategy's accumulator. The caller gives up arrays (reused in place).
        defer: return the fold for the caller to run (the round's close waits for it)."""
        with self.cond:
            reference = self.global_model  # replaced, never mutated, at commit
            state = self.current
        prepared = prepare_any(arrays, reference, self.settings.update_kind,
                               self.settings.max_update_norm, self.settings.norm_action,
                               state.distance_bound, measure=self.bounds.norm_factor > 0)
        gradient = prepared.gradient
        weight = example_weight(num_examples, assignment.joined_examples,
                                state.median_examples, self.bounds.examples_factor)
        if prepared.clipped or weight < num_examples:
            log.info("round %d: %s's update bounded: distance %.4g (bound %.4g), %d "
                     "examples weighted as %g", assignment.round, assignment.device_id,
                     prepared.norm, state.distance_bound, num_examples, weight,
                     extra={"event": "update.bounded", "round": assignment.round})
        with self.cond:
            busy = assignment.submitted or assignment.folding
            if busy and digest and digest == assignment.digest:
                raise AlreadyAccepted()  # two copies of one update arrived together
            if assignment.settled or assignment.folding:
                raise AlreadySettled(f"task {assignment.task_id!r} of round {assignment.round}"
                                     " was settled while this update arrived")
            if (self.current.assignments.get(assignment.device_id) is not assignment
                    or self.phase is not Phase.TRAINING):
                raise StaleRequest(f"round {assignment.round} closed before the update "
                                   "was complete")
            assignment.folding = True  # a closing round waits for this fold to end
            assignment.digest = digest
            state = self.current
            if self.bounds.norm_factor > 0:  # one per task: a resent copy never gets here
                state.distances.append(prepared.norm)

        def fold() -> None:
            folded, started = False, time.perf_counter()
            try:
                with state.fold_lock:  # the accumulator's own lock, not the round's
                    fold_any(state.fold, gradient, weight)
                folded = True
            finally:
                with self.cond:
                    assignment.folding = False
                    if folded:
                        self.totals.aggregation_seconds += time.perf_counter() - started
                        self.totals.updates_accepted += 1
                        state.examples += round(weight)  # as weighed, not as declared
                        assignment.submitted = True
                    else:
                        assignment.digest = ""
                    self.cond.notify_all()
        if not defer:
            fold()
        return fold if defer else None

    def refuse(self, assignment: Assignment, reason: str) -> None:
        """Settles an assignment whose update was refused for good (its refusal's rule
        settles): the round stops waiting for it and the task takes nothing more."""
        with self.cond:
            if (self.current.assignments.get(assignment.device_id) is assignment
                    and not assignment.settled and not assignment.folding
                    and self.phase is Phase.TRAINING):
                assignment.refused = reason
                self.cond.notify_all()

    def count_bytes(self, up: int = 0, down: int = 0) -> None:
        """Attributes wire bytes to the round in progress."""
        with self.cond:
            self.current.bytes_up += up
            self.current.bytes_down += down
            self.totals.bytes_up += up
            self.totals.bytes_down += down

    def progress(self) -> Progress:
        """Where the run stands, for status and metrics (after the last round, the
        round is the last one, not the one that will never open)."""
        with self.cond:
            state = self.current
            number = state.number
            if self.phase is Phase.DONE:
                number = min(number, max(self.settings.rounds, self.model_version))
                if self.ended_early:
                    number = self.model_version
            return Progress(self.phase.value, number, self.model_version,
                            len(state.assignments),
                            sum(a.submitted for a in state.assignments.values()))

    # ------------------------------------------------------------------ edge

    def _notify_everyone(self) -> None:
        """Wakes the driver and every parked poll (the lock must be held)."""
        self.cond.notify_all()
        self._tasks.notify_all()

    def wake(self) -> None:
        """Wakes the driver and every parked poll (something they answer changed)."""
        with self.cond:
            self._notify_everyone()

    def edge_building(self) -> bool:
        """Whether an edge artifact is being built (the last one holds STOP back)."""
        return self.deploy is not None and self.deploy.busy()

    def artifact_built(self, round_: int) -> bool:
        """Whether an edge artifact was built from round_ (a device may report it)."""
        return self.deploy is not None and self.deploy.built_for(round_)

    def artifact_blob(self, round_: int, device_class: str) -> tuple[bytes, str]:
        """The packed edge artifact built from round_ for device_class, and its SHA-256."""
        if self.deploy is None:
            raise StaleRequest("this server builds no edge artifacts")
        return self.deploy.blob(round_, device_class)

    # ------------------------------------------------------------------ driver's side

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Asks the driver to stop and wakes every waiter."""
        self._stop.set()
        with self.cond:
            self._notify_everyone()

    def run(self) -> None:
        """Drives rounds until all are committed (or stop()), then lingers; see Driver.run."""
        from fedge.server.driver import Driver

        Driver(self).run()

    def open_round(self, sample: list[Device]) -> None:
        """Hands the round's TRAIN task to each sampled device."""
        deadline = time.time() + self.settings.round_timeout_s
        fold = self.strategy.new_accumulator()  # a large model's: laid out outside the lock
        blob = (place_sum(self.strategy, fold, self.global_model, self.task_name,
                          self.current.number) if self.sum_in_blob else None)
        with self.cond:
            number = self.current.number
            global_norm = (l2_norm(self.global_model)
                           if self.bounds.norm_factor > 0 and not self.reference_distance
                           else 0.0)
            self.current = RoundState(
                number, bytes_up=self.current.bytes_up, bytes_down=self.current.bytes_down,
                fold=fold, next_blob=blob, median_examples=median(d.num_examples for d in sample),
                distance_bound=distance_bound(self.reference_distance, global_norm,
                                              self.bounds))
            for device in sample:
                self.current.assignments[device.device_id] = Assignment(
                    secrets.token_hex(8), device.device_id, number, deadline,
                    seed=shuffle_seed(self.settings.seed, device.device_id, number),
                    joined_examples=device.num_examples)
            if self.settings.secure:
                self.current.secure = open_secure(self.settings, number, sample,
                                                  size_of(self.global_model))
            self.phase = Phase.TRAINING
            self._notify_everyone()
        log.info("round %d: training on %d device(s)", number, len(sample),
                 extra={"event": "round.opened", "round": number, "devices": len(sample)})

    def close_round(self, timeout_s: float) -> list[Assignment]:
        """Waits until every sampled device has settled (or timeout_s, or stop), closes
        the round to late updates, lets folds in flight finish, and returns its
        assignments."""
        end = time.monotonic() + timeout_s
        with self.cond:
            assignments = self.current.assignments.values()
            while not self._stop.is_set() and not all_settled(assignments):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            self.phase = Phase.WAITING  # late updates are now stale
            self._notify_everyone()
            # An update whose fold began before the close counts (deferred ones too).
            while folding(assignments):
                self.cond.wait(0.5)
            return list(assignments)

    def clear_round(self) -> None:
        """Forgets a failed attempt's assignments (the round is sampled again)."""
        with self.cond:
            self._update_reference()
            self.current.assignments.clear()

    def _update_reference(self) -> None:
        """Takes the closing attempt's median update distance as the next reference
        (the lock must be held; an attempt without updates keeps the old one)."""
        if self.current.distances:
            self.reference_distance = median(self.current.distances)

    def install(self, record: RoundRecord, weights: dict[str, np.ndarray],
                blob: bytes, last: bool = False) -> None:
        """Makes a committed round's model the one devices train from (last: the run
        ends with it even before settings.rounds)."""
        with self.cond:
            self._update_reference()
            self.model_version = record.round
            self.global_model = weights
            self._blob_bytes, self._blob_sha = blob, record.sha256
            # Bytes that arrive between rounds count toward the next one.
            self.current = RoundState(record.round + 1)
            if last or record.round >= self.settings.rounds:
                self.phase = Phase.DONE
            self._notify_everyone()

    def end_early(self, reason: str) -> None:
        """Ends the run after its last committed round, not as a failure (the privacy
        budget allows no more rounds)."""
        with self.cond:
            self.ended_early = reason
            self.phase = Phase.DONE
            self._notify_everyone()

    def fail(self, failure: str) -> None:
        """Ends the run without committing more rounds; devices are told why."""
        with self.cond:
            self.failure = failure
            self.phase = Phase.DONE
            self._notify_everyone()

    def linger(self) -> None:
        """After the last round, waits until every live device has been told STOP."""
        end = time.monotonic() + self.settings.linger_s
        with self.cond:
            while not self._stop.is_set():
                waiting = {d.session_id for d in self.registry.live()} - self._stopped
                remaining = end - time.monotonic()
                if not waiting or remaining <= 0:
                    break
                self.cond.wait(min(remaining, 0.5))
