"""The round driver: one thread that samples devices, opens a round, waits for it to
settle, commits it or retries it, and after the last round waits for the final edge
artifact and lingers while devices collect their STOP.

It is also the driver's error boundary: an unexpected exception (a commit that cannot
write, a full disk) is logged with its traceback and ends the run with Rounds.failure
set, which stops the server and makes ``fedge server`` exit 1, so that a supervisor's
restart-on-failure fires instead of a server that serves polls with no driver behind it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from fedge.server.commit import commit_round
from fedge.server.registry import Device
from fedge.server.round_state import Phase, sample_size, verdict
from fedge.server.sampler import sample
from fedge.server.secure_round import close_secure_round, present_noise_multiplier
from fedge.server.side_tasks import open_after_commit

if TYPE_CHECKING:
    from fedge.server.rounds import Rounds

log = logging.getLogger(__name__)

# Secure runs: how long a round's sampling waits for the fresh keys of live devices
# whose poll has not brought any yet (a device that just finished the last round polls
# again within moments); then it samples among those with keys.
KEYS_GRACE_S = 1.0


class Driver:
    """Moves a Rounds forward from its driver thread."""

    def __init__(self, rounds: Rounds) -> None:
        self._rounds = rounds
        settings = rounds.settings
        # The first round this server opens waits (a while) for start_clients devices.
        self._start_by: float | None = None
        self._population = 0  # trainable devices live when the round was sampled
        if settings.start_clients > settings.min_clients:
            self._start_by = time.monotonic() + settings.round_timeout_s

    def run(self) -> None:
        """Drives rounds until all are committed (or stop), then lingers; any unexpected
        exception sets Rounds.failure and stops the server."""
        try:
            self._drive()
        except Exception as exc:
            log.exception("the round driver failed; stopping the server",
                          extra={"event": "run.crashed",
                                 "round": self._rounds.current.number})
            self._rounds.fail(f"the round driver failed: {type(exc).__name__}: {exc}")
            self._rounds.stop()

    def _drive(self) -> None:
        rounds, settings = self._rounds, self._rounds.settings
        failed = 0  # attempts at the current round that missed quorum, in a row
        while rounds.phase is not Phase.DONE and not rounds.stopping:
            chosen = self._wait_for_devices(failed)
            if chosen is None:
                break
            budget = rounds.budget
            if budget is not None and budget.exceeds(len(chosen), self._population):
                self._end_on_budget()
                break
            rounds.open_round(chosen)
            if settings.secure:  # its stages, then the unmasked sum folded (or why not)
                why = close_secure_round(rounds)
                assignments = list(rounds.current.assignments.values())
            else:
                assignments = rounds.close_round(settings.round_timeout_s)
                why = verdict(settings, assignments)
            if rounds.stopping:
                break
            number = rounds.current.number
            if not why:
                done = sum(a.submitted for a in assignments)
                if done < len(assignments):
                    log.warning("round %d: %d of %d updates (%d refused); committing on "
                                "quorum", number, done, len(assignments),
                                sum(bool(a.refused) for a in assignments),
                                extra={"event": "round.quorum", "round": number})
                self._commit(len(assignments))
                failed = 0
                continue
            log.warning("round %d: %s; retrying with a new sample", number, why,
                        extra={"event": "round.retried", "round": number})
            rounds.clear_round()
            failed += 1
            if failed == settings.max_round_attempts:
                failure = (f"round {number} missed its quorum {failed} times in a row (last "
                           f"time: {why}); the last committed model is round "
                           f"{rounds.model_version}")
                log.error("stopping the run: %s", failure,
                          extra={"event": "run.failed", "round": number})
                rounds.fail(failure)
            else:
                self._pause(settings.retry_backoff_s)
        # The final round's test accuracy is always there before the run ends.
        rounds.evaluations.finish(rounds.model_version, rounds.global_model)
        self._wait_for_edge()
        rounds.linger()

    def _pause(self, seconds: float) -> None:
        """Sleeps between attempts, waking early on stop."""
        end = time.monotonic() + seconds
        with self._rounds.cond:
            while not self._rounds.stopping and time.monotonic() < end:
                self._rounds.cond.wait(end - time.monotonic())

    def _wait_for_devices(self, attempt: int) -> list[Device] | None:
        """The round's sample, once enough trainable devices are live (None on stop)."""
        rounds, settings = self._rounds, self._rounds.settings
        announced, keys_by = False, 0.0
        with rounds.cond:
            while not rounds.stopping:
                # Only devices that can train are sampled and count toward min_clients;
                # an anonymous one only once it has polled for a task: joins alone (a
                # crowd of Sybils, say) must not make a round wait for its deadline.
                live = [d for d in rounds.registry.live()
                        if (d.authenticated or d.polled) and not d.inference_only]
                wanted = settings.min_clients
                if self._start_by is not None and time.monotonic() < self._start_by:
                    wanted = settings.start_clients
                if settings.secure:  # only devices whose latest poll carried fresh keys
                    keyed = [d for d in live if d.advert is not None]
                    if len(live) >= wanted and len(keyed) < len(live):
                        keys_by = keys_by or time.monotonic() + KEYS_GRACE_S
                        if time.monotonic() < keys_by:  # the last round's stragglers
                            rounds.cond.wait(0.02)
                            continue
                    live = keyed
                size = sample_size(settings, len(live)) if len(live) >= wanted else 0
                if size:
                    self._start_by = None
                    self._population = len(live)
                    return sample(live, size, settings.seed, rounds.current.number, attempt)
                if not announced:
                    log.info("round %d: waiting for devices (%d of %d connected%s)",
                             rounds.current.number, len(live), wanted,
                             " with fresh keys" if settings.secure else "")
                    announced = True
                rounds.cond.wait(0.5)
        return None

    def _commit(self, sampled: int) -> None:
        rounds, settings = self._rounds, self._rounds.settings
        state = rounds.current
        budget, spent = rounds.budget, False
        if budget is not None:
            # Accounted before the row is written: a committed round is always counted.
            # Distributed DP: with the noise the survivors' shares really add up to.
            present = present_noise_multiplier(state.secure) if state.secure else 0.0
            entry = budget.record(state.number, sampled, self._population,
                                  getattr(rounds.strategy, "clip", 0.0), present)
            # Another round like this one would exceed the budget: this one is the last.
            spent = budget.exceeds(sampled, self._population)
        record, weights, blob = commit_round(
            rounds.store, rounds.strategy, rounds.task_name,
            rounds.global_model, state, sampled)  # evaluated after, off the path
        if budget is not None:
            record = dataclasses.replace(record, epsilon=entry.epsilon)
        last = state.number >= settings.rounds or spent
        if rounds.deploy is not None and rounds.deploy.due(state.number, last):
            rounds.deploy.request(state.number, weights)  # before DONE: polls wait for it
        if spent and state.number < settings.rounds:
            rounds.ended_early = self._budget_reason(state.number)
            log.warning("round %d is the last: %s", state.number, rounds.ended_early,
                        extra={"event": "run.budget", "round": state.number})
        with rounds.cond:  # one step for the polls: the model and its evaluation
            rounds.install(record, weights, blob, last=last)
            open_after_commit(rounds, record.round, last)
        log.info("round %d committed: %d client(s), %.2f s", record.round, record.clients,
                 record.seconds, extra={"event": "round.committed", "round": record.round,
                                        "clients": record.clients})
        if rounds.on_commit is not None:
            rounds.on_commit(record)
        rounds.evaluations.submit(record, weights, last=last)  # after on_commit: in order

    def _budget_reason(self, round_: int) -> str:
        budget = self._rounds.budget
        assert budget is not None
        return (f"another round would take epsilon past the target {budget.target_epsilon:g} "
                f"(epsilon {budget.epsilon:.4g} at delta {budget.delta or 0:.3g} after round "
                f"{round_})")

    def _end_on_budget(self) -> None:
        """Ends the run before a round the budget cannot pay for, shipping the last
        committed model as the final one."""
        rounds = self._rounds
        reason = self._budget_reason(rounds.model_version)
        log.warning("stopping before round %d: %s", rounds.current.number, reason,
                    extra={"event": "run.budget", "round": rounds.current.number})
        version = rounds.model_version
        if version > 0 and rounds.deploy is not None and rounds.deploy.due(version, True):
            rounds.deploy.request(version, rounds.global_model)
        rounds.end_early(reason)

    def _wait_for_edge(self) -> None:
        """After the last round, waits for the final edge artifact's build."""
        deploy = self._rounds.deploy
        while deploy is not None and not self._rounds.stopping:
            if deploy.wait_idle(0.5):
                if not deploy.busy():  # nor its canaries still to report
                    return
                self._pause(0.5)
