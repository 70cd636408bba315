"""The gated rollout of edge artifacts: a new artifact goes first to a canary cohort,
which measures it against the model each canary runs (its incumbent) on the held-out
slice; it reaches the rest of the fleet only if it is within a margin of the incumbent.

A canary whose own measurement falls below its incumbent's accuracy minus the margin
rolls back by itself (client/deploy.py) and says so. The artifact is halted when any
canary rolled back or refused it, or when the canaries' count-weighted accuracy falls
below their incumbents' minus the margin (:func:`decide`, a pure function); canaries
that kept it are then handed a ROLLBACK task. Every decision and its reason is recorded
in the state database (table ``rollouts``). An operator may promote or roll back the
newest artifact at any time (`fedge edge rollout|rollback`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedge.refusals import InvalidRequest
from fedge.server.registry import Device
from fedge.server.round_state import TaskView
from fedge.server.sampler import sample
from fedge.server.store import StateStore

log = logging.getLogger(__name__)

CANARY, PROMOTED, HALTED = "canary", "promoted", "halted"
# The sampler's attempt number for canary cohorts: their draws never repeat a round's.
CANARY_ATTEMPT = 1 << 21


def _weighted(reports: list[Mapping[str, float]], key: str) -> float:
    total = sum(r["edge_examples"] for r in reports)
    return sum(r[key] * r["edge_examples"] for r in reports) / total


def decide(reports: Mapping[str, Mapping[str, float]], margin: float) -> tuple[bool, str]:
    """Whether an artifact is promoted, from its canaries' reports, and why (or why not).

    A report names the artifact's held-out accuracy (edge_accuracy), the incumbent's on
    the same examples (edge_incumbent_accuracy, absent on a device that had no model),
    their count (edge_examples), their batch-1 latencies, and whether the device
    refused the artifact (edge_refused) or rolled back from it (edge_rolled_back).
    """
    if not reports:
        return False, "no canary reported"
    refused = sorted(d for d, r in reports.items() if r.get("edge_refused"))
    if refused:
        return False, f"{len(refused)} canary(ies) refused it: {', '.join(refused[:5])}"
    compared = [r for r in reports.values()
                if "edge_incumbent_accuracy" in r and "edge_accuracy" in r
                and r.get("edge_examples", 0) > 0]
    latency = ""
    timed = [r for r in compared if "edge_latency_ms_batch1" in r
             and "edge_incumbent_latency_ms_batch1" in r]
    if timed:
        latency = (f"; latency {_weighted(timed, 'edge_latency_ms_batch1'):.3f} ms vs "
                   f"{_weighted(timed, 'edge_incumbent_latency_ms_batch1'):.3f} ms")
    rolled = sorted(d for d, r in reports.items() if r.get("edge_rolled_back"))
    if compared:
        new = _weighted(compared, "edge_accuracy")
        old = _weighted(compared, "edge_incumbent_accuracy")
        scores = (f"held-out accuracy {new:.4f} vs the incumbent's {old:.4f} on "
                  f"{sum(int(r['edge_examples']) for r in compared)} examples of "
                  f"{len(compared)} canary(ies), margin {margin:g}{latency}")
        if rolled:
            return False, f"{len(rolled)} canary(ies) rolled back by themselves; {scores}"
        if new < old - margin:
            return False, scores
        return True, scores
    if rolled:
        return False, f"{len(rolled)} canary(ies) rolled back by themselves"
    return True, (f"installed on {len(reports)} canary(ies), none of which had an incumbent "
                  "model to compare with")


@dataclass
class RolloutState:
    """One artifact's rollout."""

    round: int
    canaries: dict[str, dict[str, float] | None]  # device id -> its report (None: not yet)
    deadline: float  # time.monotonic() by which the canaries must report
    stage: str = CANARY
    reason: str = ""
    rolled_back: set[str] = field(default_factory=set)  # devices that rolled back from it
    told: set[str] = field(default_factory=set)  # devices handed its ROLLBACK task


class Rollout:
    """The canary gate of a run's edge artifacts (Deployments asks it before offering).

    on_settle: called with the artifact's round and whether it was promoted, once it is.
    """

    def __init__(self, fraction: float, margin: float, timeout_s: float, holdout: float,
                 seed: int, store: StateStore,
                 on_settle: Callable[[int, bool], None] | None = None) -> None:
        self.fraction, self.margin, self.timeout_s = fraction, margin, timeout_s
        self.holdout = holdout  # what devices hold out of training to measure on
        self._seed = seed
        self._store = store
        self.on_settle = on_settle
        self._lock = threading.Lock()
        self.state: RolloutState | None = self._restored()

    def _restored(self) -> RolloutState | None:
        """The newest rollout recorded before a restart: a halted artifact stays halted,
        and so does one that was still with its canaries (their reports are lost; an
        operator may promote it)."""
        recorded = self._store.rollouts()
        if not recorded:
            return None
        round_, stage, reason, canaries = recorded[-1]
        if stage == CANARY:
            stage, reason = HALTED, ("the server restarted before its canaries all "
                                     "reported; `fedge edge rollout` promotes it")
            self._store.record_rollout(round_, stage, reason, canaries)
        return RolloutState(round_, {d: None for d in canaries}, 0.0, stage, reason)

    def adopt(self, round_: int) -> None:
        """Takes an artifact built before this gate existed (a server run without
        canaries, on the same state) as promoted, and records so."""
        with self._lock:
            if self.state is not None and self.state.round >= round_:
                return
            self.state = RolloutState(round_, {}, 0.0, PROMOTED,
                                      "built before the canary gate was on")
        self._store.record_rollout(round_, PROMOTED, self.state.reason, [])

    def begin(self, round_: int, devices: Iterable[Device]) -> None:
        """Starts the rollout of the artifact of round_ with a canary cohort drawn from
        devices (seeded by the run's seed and the round). The artifacts of a round's
        device classes are built one after another and share one canary stage: a second
        call for the same round changes nothing."""
        with self._lock:
            if self.state is not None and self.state.round >= round_:
                return
        live = [d for d in devices if d.polled or d.authenticated]
        size = min(len(live), max(1, math.ceil(self.fraction * len(live)))) if live else 0
        chosen = sample(live, size, self._seed, round_, CANARY_ATTEMPT)
        state = RolloutState(round_, {d.device_id: None for d in chosen},
                             time.monotonic() + self.timeout_s)
        with self._lock:
            self.state = state
        log.info("edge artifact of round %d: canaries %s", round_,
                 ", ".join(sorted(state.canaries)) or "none",
                 extra={"event": "rollout.canary", "round": round_})
        self._store.record_rollout(round_, CANARY, "", sorted(state.canaries))
        if not chosen:
            self._settle(state, True, "no device was connected to be a canary")

    def allows(self, device_id: str, round_: int) -> bool:
        """Whether device_id may be handed the artifact of round_ now."""
        self.pending()  # judges on the reports in hand once the deadline passed
        with self._lock:
            state = self.state
            if state is None or state.round < round_:
                return False  # built a moment ago: its canaries are being drawn
            if state.round > round_:
                return True  # an older artifact (the newest one supersedes it)
            return state.stage == PROMOTED or (state.stage == CANARY
                                               and device_id in state.canaries)

    def is_canary(self, device_id: str, round_: int) -> bool:
        """Whether device_id gets the artifact of round_ as a canary."""
        with self._lock:
            state = self.state
            return (state is not None and state.round == round_ and state.stage == CANARY
                    and device_id in state.canaries)

    def pending(self) -> bool:
        """Whether the newest artifact waits for its canaries (judged at the deadline)."""
        with self._lock:
            state = self.state
            if state is None or state.stage != CANARY:
                return False
            late = time.monotonic() >= state.deadline
            reports = {d: r for d, r in state.canaries.items() if r is not None}
        if late:
            promote, why = decide(reports, self.margin)
            self._settle(state, promote, f"after {self.timeout_s:g} s, {len(reports)} of "
                         f"{len(state.canaries)} canaries reported: {why}")
            return False
        return True

    def report(self, device_id: str, round_: int, metrics: Mapping[str, float]) -> None:
        """A device's DEPLOY or ROLLBACK report on the artifact of round_."""
        with self._lock:
            state = self.state
            if state is None or state.round != round_:
                return
            if metrics.get("edge_rolled_back"):
                state.rolled_back.add(device_id)
            if state.stage != CANARY or device_id not in state.canaries:
                return
            state.canaries[device_id] = dict(metrics)
            reports = dict(state.canaries)
        if all(r is not None for r in reports.values()):
            promote, why = decide({d: r for d, r in reports.items() if r is not None},
                                  self.margin)
            self._settle(state, promote, why)

    def _settle(self, state: RolloutState, promote: bool, why: str) -> None:
        with self._lock:
            if state.stage != CANARY:
                return
            state.stage, state.reason = (PROMOTED if promote else HALTED), why
        self._store.record_rollout(state.round, state.stage, why, sorted(state.canaries))
        log.log(logging.INFO if promote else logging.WARNING, "edge artifact of round %d %s: "
                "%s", state.round, "promoted to the fleet" if promote else "HALTED", why,
                extra={"event": f"rollout.{state.stage}", "round": state.round})
        if self.on_settle is not None:
            self.on_settle(state.round, promote)

    def operate(self, action: str, reason: str) -> None:
        """An operator's promote or rollback of the newest artifact."""
        with self._lock:
            state = self.state
        if state is None:
            raise InvalidRequest("no edge artifact has been rolled out by this server")
        why = f"by an operator{': ' + reason if reason else ''}"
        if action == "promote":
            if state.stage == PROMOTED:
                return
            with self._lock:
                state.stage = CANARY  # settled again, this time by a person
            self._settle(state, True, why)
        elif action == "rollback":
            with self._lock:
                state.stage, state.reason = HALTED, f"rolled back {why}"
                state.told.clear()
            self._store.record_rollout(state.round, HALTED, state.reason,
                                       sorted(state.canaries))
            log.warning("edge artifact of round %d rolled back %s", state.round, why)
            if self.on_settle is not None:
                self.on_settle(state.round, False)
        else:
            raise InvalidRequest(f"unknown rollout action {action!r}: promote or rollback")

    def rollback_view(self, device: Device) -> TaskView | None:
        """A ROLLBACK task for a device that runs a halted artifact (once per device)."""
        with self._lock:
            state = self.state
            if (state is None or state.stage != HALTED or device.device_id in state.told
                    or device.device_id in state.rolled_back
                    or device.edge_model != str(state.round)):
                return None
            state.told.add(device.device_id)
        return TaskView("ROLLBACK", model_version=state.round, round=state.round,
                        message=f"the edge artifact of round {state.round} was halted: "
                        f"{state.reason}")

    def snapshot(self) -> dict[str, Any]:
        """The newest rollout for status ({} before the first)."""
        with self._lock:
            state = self.state
            if state is None:
                return {}
            return {"round": state.round, "stage": state.stage, "reason": state.reason,
                    "canaries": sorted(state.canaries),
                    "rolled_back": sorted(state.rolled_back)}
