"""A round's state and its settlement rules, with no threads, clocks of our own or I/O.

What a round is (its sampled devices' assignments, its accumulator, its counters), when
an assignment is settled, when a round may close, whether it has quorum, and which seed
each device shuffles its data with. The driver and the gRPC handlers share these values
behind the locks of :class:`fedge.server.rounds.Rounds`; the rules here only read them.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from fedge.server.strategies.fedavg import Accumulator, FedAvgFold

if TYPE_CHECKING:
    from fedge.server.secure_round import SecureRound


@dataclass(frozen=True)
class RoundSettings:
    """What the driver needs to know to run rounds (see ServerConfig for meanings).

    start_clients: devices the first round of a run waits for (at most round_timeout_s)
    before it samples, so that it samples the whole fleet and not its first joiners
    (``fedge simulate`` sets it to its fleet's size); 0: min_clients suffice.
    """

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
    update_kind: str = "weights"  # announced in each TRAIN task, required of updates
    encoding: str = "f32"
    topk_fraction: float = 0.1
    start_clients: int = 0
    momentum: float = 0.9  # local SGD momentum, sent with each TRAIN task
    secure: bool = False  # SecAgg+ rounds (fedge.server.secure_round)
    secure_threshold: float = 0.5
    secure_neighbours: int = 0
    secure_clip: float = 10.0
    # Distributed DP (--dp distributed): z, the noise the survivors' sum must carry at
    # least, over secure_clip (then the DP clip); 0: off.
    secure_noise_multiplier: float = 0.0
    secure_stage_timeout_s: float = 30.0
    examples_factor: float = 0.0  # fleet-relative bounds (fedge.server.bounds); 0: off
    norm_factor: float = 0.0
    warmup_norm_ratio: float = 0.0
    # The server's test evaluation (fedge.server.eval_worker): every N rounds and the
    # last, off the round's critical path, on this many torch threads (0: all cores).
    eval_every: int = 1
    eval_threads: int = 0

    def quorum(self, sampled: int) -> int:
        """Updates needed to commit a round of sampled devices at its deadline."""
        return quorum(self, sampled)


def quorum(settings: RoundSettings, sampled: int) -> int:
    """Updates needed to commit a round of sampled devices at its deadline."""
    if settings.quorum_fraction > 0:
        return max(1, math.ceil(settings.quorum_fraction * sampled))
    return settings.min_clients


def sample_size(settings: RoundSettings, live: int) -> int:
    """How many of live trainable devices a round samples (0: too few to start)."""
    if live < settings.min_clients:
        return 0
    return min(live, max(settings.min_clients, math.ceil(settings.fraction * live)))


def shuffle_seed(run_seed: int, device_id: str, round_: int) -> int:
    """The seed a device shuffles its data with in a round: the same for the same run,
    device and round (across restarts), different between devices of a round."""
    digest = hashlib.sha256(f"{run_seed}/{device_id}/{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # fits the wire's int64


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
    seed: int = 0  # the device's data-shuffling seed for this round (shuffle_seed)
    folding: bool = False  # its update is being folded (outside the round lock)
    joined_examples: int = 0  # the example count its device declared at Join

    @property
    def settled(self) -> bool:
        """Whether the round waits for nothing more from this device."""
        return self.submitted or bool(self.refused)


class AlreadyAccepted(Exception):
    """A resent copy of an update that was already accepted: answer it, fold nothing."""


class Phase(Enum):
    """Where the run stands."""

    WAITING = "waiting"    # for devices, or between rounds
    TRAINING = "training"  # a round is open
    DONE = "done"          # all rounds committed, or the run failed (Rounds.failure)


@dataclass(frozen=True)
class TaskView:
    """What PollTask answers, independent of the wire types."""

    kind: str  # "TRAIN", "WAIT", "STOP", "DEPLOY", "EVALUATE", "ROLLBACK" or "PERSONALIZE"
    assignment: Assignment | None = None
    model_version: int = 0  # for DEPLOY: the round the artifact was built from
    retry_after_s: float = 1.0
    message: str = ""
    artifact_sha256: str = ""  # for DEPLOY
    task_id: str = ""  # for EVALUATE: the task its report names
    round: int = 0  # for EVALUATE: the evaluation's round
    evaluate_global: bool = False  # for EVALUATE: also measure the global model
    canary: bool = False  # for DEPLOY: the device is a canary (server/rollout.py)
    canary_margin: float = 0.0


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
class RoundState:
    """One round: its assignments by device id, its accumulator and its counters.

    fold_lock guards the accumulator alone, so that folding an update (one pass over the
    model) never holds the lock every poll and join waits on.
    """

    number: int
    started: float = field(default_factory=time.monotonic)
    assignments: dict[str, Assignment] = field(default_factory=dict)  # by device id
    fold: Accumulator = field(default_factory=FedAvgFold)
    fold_lock: threading.Lock = field(default_factory=threading.Lock)
    examples: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    secure: SecureRound | None = None  # a secure round's stages and masked sum
    # The fleet-relative bounds (fedge.server.bounds): the sampled devices' median Join
    # count, the distance updates are clipped to, and the distances (floats, never the
    # updates) its updates had, the next round's reference.
    median_examples: float = 0.0
    distance_bound: float = 0.0
    distances: list[float] = field(default_factory=list)
    # The next model's blob the fold sums into (a large model; fedge.server.next_blob).
    next_blob: bytearray | None = None


def all_settled(assignments: Iterable[Assignment]) -> bool:
    """Whether every sampled device has had its update accepted or refused."""
    return all(a.settled for a in assignments)


def folding(assignments: Iterable[Assignment]) -> int:
    """Updates accepted but still being folded (the round must not aggregate yet)."""
    return sum(a.folding for a in assignments)


def verdict(settings: RoundSettings, assignments: Iterable[Assignment]) -> str:
    """"" when a closed round has quorum and commits, else why it does not."""
    listed = list(assignments)
    done = sum(a.submitted for a in listed)
    needed = quorum(settings, len(listed))
    if done >= needed:
        return ""
    refusals = sorted({a.refused for a in listed if a.refused})
    why = f"{done} of {needed} required updates"
    if refusals:
        refused = sum(bool(a.refused) for a in listed)
        why += f", {refused} refused: {'; '.join(refusals[:3])}"
    return why
