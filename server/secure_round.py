"""A secure round (SecAgg+) on the server: its stages, their deadlines, and the commit
of the unmasked sum.

Stage 1 (advertise keys) has no call of its own: every poll of a device in a secure run
carries fresh public keys (fedge.server.secure_service.record_advert), the round takes
the sampled devices' latest (:func:`open_secure`: U1, and no advert serves two rounds)
and its TRAIN tasks carry them all (SecureParams.roster). A device shares its secrets
as soon as it has its task, while it downloads and trains, instead of after a
fleet-wide wait for everyone's keys. Then, with U1..U4 as in fedge.secure.masked_sum:

2. share: until every device of U1 sent its share messages, or secure_stage_timeout_s;
3. masked input: until every device of U2 sent one, or the round's deadline (training
   happens here);
4. unmask: until every device of U3 answered, or the stage timeout.

Handlers (fedge.server.secure_service) add messages and wait for their stage to close
under the round's lock (Rounds.cond); the driver calls :func:`close_secure_round`,
which moves the stages and, when at least max(quorum, threshold) devices' inputs are in
and every mask can be removed, folds the survivors' weighted mean into the round's
accumulator, so the strategy steps on it like on a plain round. Otherwise it says why,
and the driver retries the round like one that missed its quorum. Nothing waits past a
deadline.

Distributed DP (``secure_noise_multiplier`` z > 0): every device weighs 1 (the mean is
unweighted, as in DP-FedAvg: a device's influence is then bounded by the clip C) and adds
``N(0, s^2)`` to each entry before quantizing, with s calibrated so that the fewest
devices whose inputs can commit the round, max(quorum, t), sum to std z C
(fedge.privacy.mechanisms.device_noise_std). A committed round's sum therefore carries
at least the target noise; the accountant is told the noise really present,
``s sqrt(survivors) / C`` (:func:`present_noise_multiplier`).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedge.privacy.mechanisms import device_noise_std
from fedge.privacy.mechanisms import present_noise_multiplier as _present
from fedge.protos import fedge_pb2
from fedge.secure import graph, quantize, vector
from fedge.secure.masked_sum import MaskedSum, UnmaskFailed
from fedge.secure.masks import Advert, Params
from fedge.server.registry import Device
from fedge.server.round_state import Phase, RoundSettings, quorum
from fedge.wire import advert_message

if TYPE_CHECKING:
    from fedge.server.rounds import Rounds

log = logging.getLogger(__name__)

SHARE, MASKED, UNMASK, DONE = 2, 3, 4, 5  # stage 1: the keys, with the polls
STAGE_NAMES = {SHARE: "share keys", MASKED: "masked input", UNMASK: "unmasking",
               DONE: "done"}


class SecureRound:
    """One secure round's server state; every method runs under Rounds.cond."""

    def __init__(self, params: Params, sampled: list[str], adverts: Mapping[str, Advert]
                 ) -> None:
        """adverts: the sampled devices' keys (U1); a sampled device without any is not
        part of the secure round (its task's roster does not list it)."""
        self.params = params
        self.sum = MaskedSum(params)
        self.sampled = sorted(sampled)
        for device_id in sorted(adverts):
            self.sum.add_advert(adverts[device_id])
        self.sum.close_adverts()  # U1 and the neighbour graph, fixed at the round's open
        self.stage = SHARE
        self.failure = ""
        # The training metrics of each masked input, written with the round's end: a
        # transaction per input, serialized, held each device's reply and so the
        # unmasking stage (the server's store fsyncs each one).
        self.metrics: dict[str, dict[str, float]] = {}
        # What every TRAIN task of the round carries, built once: the parameters, every
        # device's id (the graph and the share points follow from them) and the
        # generator; each task adds the keys of its device's neighbourhood (task_params).
        self.message = fedge_pb2.SecureParams(
            threshold=params.threshold, degree=params.degree, seed=params.seed,
            size=params.size, clip=params.clip, weight_cap=params.weight_cap,
            scale=params.scale, noise_std=params.noise_std,
            devices=sorted(self.sum.adverts), mask_prg=self.sum.prg)
        self._adverts = {d: advert_message(v) for d, v in self.sum.adverts.items()}

    def task_params(self, device_id: str) -> fedge_pb2.SecureParams:
        """device_id's TRAIN task's SecureParams: the round's, with the adverts of the
        device and its k neighbours (k + 1 keys a task, not n: SecAgg+'s point)."""
        out = fedge_pb2.SecureParams()
        out.CopyFrom(self.message)
        if device_id in self._adverts:
            out.roster.extend(self._adverts[d] for d in
                              sorted([device_id, *self.sum.neighbours(device_id)]))
        return out

    def complete(self) -> bool:
        """Whether the open stage has every message it waits for: expected() <=
        arrived() by counting, without building either set, since each stage takes
        messages only from the devices it expects (what the sum's add_* check). Asked on
        each arrival and each wake of the round's lock: sets would make that O(n) each,
        O(n^2) a stage."""
        s = self.sum
        expected, arrived = {SHARE: (len(s.adverts), s.shared_count),
                             MASKED: (s.shared_count, len(s.weights)),
                             UNMASK: (len(s.weights), len(s.answered))}.get(self.stage, (0, 0))
        return arrived >= expected

    def expected(self) -> set[str]:
        """The devices the open stage waits for."""
        if self.stage == SHARE:
            return set(self.sum.adverts)
        if self.stage == MASKED:
            return self.sum.shared
        if self.stage == UNMASK:
            return set(self.sum.weights)
        return set()

    def arrived(self) -> set[str]:
        """Of those, the devices whose message of the open stage arrived."""
        if self.stage == SHARE:
            return self.sum.shared
        if self.stage == MASKED:
            return set(self.sum.weights)
        if self.stage == UNMASK:
            return set(self.sum.answered)
        return set()


def commit_minimum(settings: RoundSettings, sampled: int, threshold: int) -> int:
    """The fewest devices whose masked inputs commit a secure round of sampled."""
    return max(quorum(settings, sampled), threshold, 1)


def make_params(settings: RoundSettings, number: int, sample: list[Device],
                size: int) -> Params:
    """A secure round's public parameters for the sampled devices."""
    n = len(sample)
    degree = min(n - 1, settings.secure_neighbours or graph.default_degree(n))
    threshold = max(1, min(degree, math.floor(settings.secure_threshold * degree) + 1))
    clip, z = settings.secure_clip, settings.secure_noise_multiplier
    if z > 0:  # distributed DP: equal weights, a noise share each (module docstring)
        cap = 1
        noise = device_noise_std(z * clip, commit_minimum(settings, n, threshold))
    else:
        cap, noise = max([1, *(d.num_examples for d in sample)]), 0.0
    return Params(round=number, threshold=threshold, degree=degree,
                  seed=secrets.token_bytes(16), size=size, clip=clip, weight_cap=cap,
                  scale=quantize.round_scale(clip, cap, n, noise), noise_std=noise)


def open_secure(settings: RoundSettings, number: int, sample: list[Device], size: int
                ) -> SecureRound:
    """Round number's secure state over sample, which takes each sampled device's
    latest advert (call under Rounds.cond, as the polls record them): a device's keys
    serve one round at most. A retried round samples again, with the keys of the polls
    since."""
    adverts = {}
    for device in sample:
        if device.advert is not None:
            adverts[device.device_id], device.advert = device.advert, None
    return SecureRound(make_params(settings, number, sample, size),
                       [d.device_id for d in sample], adverts)


def present_noise_multiplier(secure: SecureRound) -> float:
    """The noise multiplier the unmasked sum carries: every survivor's share (0 without
    distributed DP)."""
    p = secure.params
    return _present(p.noise_std, len(secure.sum.weights), p.clip) if p.noise_std else 0.0


def _wait_stage(rounds: Rounds, secure: SecureRound, until: float) -> None:
    """Waits (holding Rounds.cond) until the open stage has all it expects, or until."""
    while not rounds.stopping and not secure.complete():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        rounds.cond.wait(remaining)


def _advance(rounds: Rounds, secure: SecureRound, stage: int) -> None:
    secure.stage = stage
    rounds.cond.notify_all()
    log.debug("round %d: secure stage %s", secure.params.round, STAGE_NAMES[stage])


def close_secure_round(rounds: Rounds) -> str:
    """Runs the open secure round's stages to their end; "" when its aggregate is folded
    into the round's accumulator, else why the round cannot commit. Then writes the
    devices' training metrics (committed or not, as plain updates' are)."""
    try:
        return _run_stages(rounds)
    finally:
        secure = rounds.current.secure
        if secure is not None and secure.metrics and not rounds.stopping:
            rounds.store.add_round_metrics(secure.params.round, "train", secure.metrics)


def _run_stages(rounds: Rounds) -> str:
    settings = rounds.settings
    stage_s = settings.secure_stage_timeout_s
    deadline = time.monotonic() + settings.round_timeout_s
    with rounds.cond:
        state = rounds.current
        secure = state.secure
        assert secure is not None
        try:
            for device_id in set(secure.sampled) - set(secure.sum.adverts):
                assignment = state.assignments.get(device_id)  # sampled, but keyless
                if assignment is not None and not assignment.settled:
                    assignment.refused = "brought no keys for the secure round"
            for stage, until in ((SHARE, stage_s), (MASKED, None), (UNMASK, stage_s)):
                end = deadline if until is None else min(deadline, time.monotonic() + until)
                if stage == UNMASK:  # unmasking gets its own time after the deadline
                    end = time.monotonic() + stage_s
                _wait_stage(rounds, secure, end)
                if rounds.stopping:
                    return "the server is stopping"
                for device_id in secure.expected() - secure.arrived():
                    assignment = state.assignments.get(device_id)
                    if assignment is not None and not assignment.settled:
                        assignment.refused = f"missed the {STAGE_NAMES[stage]} stage"
                _advance(rounds, secure, stage + 1)
                why = _short(settings, secure, stage)
                if why:
                    return why
            return _fold(rounds, secure)
        finally:
            if secure.stage != DONE:
                _advance(rounds, secure, DONE)
            rounds.phase = Phase.WAITING
            rounds.cond.notify_all()


def _short(settings: RoundSettings, secure: SecureRound, stage: int) -> str:
    """Why the round cannot reach its quorum after stage, or ""."""
    have = {SHARE: len(secure.sum.shared),
            MASKED: len(secure.sum.weights), UNMASK: len(secure.sum.weights)}[stage]
    needed = commit_minimum(settings, len(secure.sampled), secure.params.threshold)
    if have < needed:
        return (f"{have} of {needed} required devices reached the secure round's "
                f"{STAGE_NAMES[stage]} stage")
    return ""


def _fold(rounds: Rounds, secure: SecureRound) -> str:
    """Unmasks the sum, checks its range, and folds the weighted mean into the round's
    accumulator; returns why not, or ""."""
    params, state = secure.params, rounds.current
    try:
        total = secure.sum.unmask()
    except UnmaskFailed as exc:
        return f"secure aggregation could not unmask the sum: {exc}"
    weight = float(sum(secure.sum.weights.values()))
    survivors = len(secure.sum.weights)
    if not quantize.in_range(total, params.clip, weight, params.scale, survivors,
                             params.noise_std):
        return ("the unmasked secure sum is out of range (a device sent a bad input or "
                "masks did not cancel)")
    mean = quantize.decode(total, params.scale) / weight
    gradient = vector.unflatten(mean, rounds.global_model)
    with state.fold_lock:
        state.fold.add(gradient, weight)
        state.fold.count = survivors
    log.info("round %d: unmasked the sum of %d device(s) (%d dropped after sharing keys; "
             "masks: %s)", params.round, survivors, len(secure.sum.shared) - survivors,
             secure.sum.prg, extra={"event": "round.unmasked", "round": params.round,
                                    "survivors": survivors, "mask_prg": secure.sum.prg})
    return ""


def check_stage(secure: SecureRound | None, stage: int, round_: int) -> SecureRound:
    """The secure round a request of stage belongs to, refused when that stage is not
    open (the handler waits for it to close)."""
    from fedge.refusals import StaleRequest

    if secure is None or secure.params.round != round_:
        raise StaleRequest(f"round {round_} is not an open secure round")
    if secure.stage != stage:
        raise StaleRequest(f"round {round_}'s {STAGE_NAMES[stage]} stage is closed "
                           f"(now: {STAGE_NAMES[secure.stage]})")
    return secure

