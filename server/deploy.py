"""Edge deployments: build a signed artifact per device class from a committed global
model in the background, keep the newest ones in the state directory, and hand each
device its class's as a DEPLOY task until the device reports it installed or refused.

Builds run in one background thread, so training goes on while an artifact is made; a
build asked for while another runs waits its turn (only the newest request is kept).
Artifacts live in ``STATE/edge/round-NNNNNN/`` and the signing key in ``STATE/``, so a
restarted server serves the artifact it built before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedge.edge.runtime.artifact import ArtifactError, pack, read_artifact
from fedge.edge.runtime.verify import verify
from fedge.errors import TaskError
from fedge.refusals import InvalidRequest, StaleRequest
from fedge.tasks import Task
from fedge.tasks.students import DEFAULT_CLASS, Student, pick_class
from fedge.tensors import sha256_hex

if TYPE_CHECKING:
    from fedge.server.rollout import Rollout

log = logging.getLogger(__name__)

# A device is handed an artifact again, at its next poll, while it has not reported it
# installed or refused: a download that broke, or a report that was lost, is retried.
# The daemon reports before it polls again, so a poll after an unreported offer means
# the offer failed. At most this many offers, so a device that never reports is not fed
# the artifact forever.
MAX_OFFERS = 5


@dataclass(frozen=True)
class Shipped:
    """A built artifact, packed as it travels."""

    round: int
    blob: bytes
    sha256: str
    directory: Path
    device_class: str = DEFAULT_CLASS


class Deployments:
    """The newest edge artifact of each device class of a run, and which devices were
    handed it.

    every: also build after every this many rounds (0: only after the last round).
    on_ready: called (from the build thread) when a new artifact can be handed out.
    A task without device classes keeps its artifacts in ``STATE/edge/round-NNNNNN``;
    one with classes in ``STATE/edge/CLASS/round-NNNNNN`` (fedge.tasks.students).
    """

    def __init__(self, task: Task, state_dir: str | Path, every: int = 0,
                 on_ready: Callable[[], None] | None = None) -> None:
        from fedge.edge.compiler.keys import SigningKey  # needs cryptography: only when edge is on

        self._task = task
        self.classes = task.student_classes()
        self.root = Path(state_dir) / "edge"
        self.every = every
        self.on_ready = on_ready
        self.key = SigningKey.load_or_create(state_dir)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: tuple[int, dict[str, np.ndarray]] | None = None
        self._building = False
        # device id -> (the artifact offered, how often): a newer artifact starts afresh
        self._offers: dict[str, tuple[str, int]] = {}
        self.shipped: dict[str, Shipped] = {}  # device class -> its newest artifact
        for student in self.classes:
            found = self._load_latest(student.name)
            if found is not None:
                self.shipped[student.name] = found
        self.failures = 0
        self.built = 0  # artifacts built by this process
        # The canary gate (server/rollout.py): asked before any device is offered one.
        self.gate: Rollout | None = None

    @property
    def latest(self) -> Shipped | None:
        """The newest artifact of the task's first device class (of its only one, for
        a task without classes)."""
        with self._lock:
            return self.shipped.get(self.classes[0].name) if self.classes else None

    @property
    def public_key_path(self) -> Path:
        from fedge.edge.compiler.keys import PUBLIC_FILE

        return self.root.parent / PUBLIC_FILE

    def class_root(self, device_class: str) -> Path:
        """Where the artifacts of device_class are kept."""
        return self.root if not self._task.students else self.root / device_class

    def classify(self, memory_bytes: int, accelerator: str, label: str) -> str:
        """The device class of a joining device ("" when it fits none: it is offered no
        artifact). Raises InvalidRequest for a label that names no class of the task."""
        try:
            student = pick_class(self.classes, memory_bytes, accelerator, label)
        except TaskError as exc:
            raise InvalidRequest(str(exc)) from None
        return "" if student is None else student.name

    def _load_latest(self, device_class: str) -> Shipped | None:
        """The newest artifact of device_class already in the state dir, if one verifies."""
        for directory in sorted(self.class_root(device_class).glob("round-*"), reverse=True):
            try:
                files = read_artifact(directory)
                manifest = verify(files, self.key.public_bytes)
            except ArtifactError as exc:
                log.warning("ignoring edge artifact %s: %s", directory, exc)
                continue
            blob = pack(files)
            log.info("serving the edge artifact of round %d from %s", manifest.round,
                     directory)
            return Shipped(manifest.round, blob, sha256_hex(blob), directory, device_class)
        return None

    def due(self, round_: int, last: bool) -> bool:
        """Whether the model of round_ should become an artifact."""
        with self._lock:
            built = [self.shipped[s.name].round for s in self.classes if s.name in self.shipped]
        if len(built) == len(self.classes) and min(built) >= round_:
            return False
        return last or (self.every > 0 and round_ % self.every == 0)

    def request(self, round_: int, weights: Mapping[str, np.ndarray]) -> None:
        """Builds an artifact from weights in the background (newest request wins)."""
        with self._lock:
            self._pending = (round_, {k: np.array(v) for k, v in weights.items()})
            if self._building:
                return
            self._building = True
        threading.Thread(target=self._work, name="edge-build", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._pending is None:
                    self._building = False
                    self._idle.notify_all()
                    return
                round_, weights = self._pending
                self._pending = None
            for student in self.classes:  # each class's devices get theirs when it is ready
                self._build(round_, weights, student)

    def _build(self, round_: int, weights: dict[str, np.ndarray], student: Student) -> None:
        from fedge.edge.compiler.artifact import build_artifact

        directory = self.class_root(student.name) / f"round-{round_:06d}"
        try:
            build_artifact(self._task, weights, round_, self.key, directory,
                           student_class=student)
            files = read_artifact(directory)
        except Exception:  # a failed build must not take the server down
            log.exception("building the edge artifact of round %d (class %s) failed",
                          round_, student.name)
            self.failures += 1
            return
        blob = pack(files)
        with self._lock:
            self.shipped[student.name] = Shipped(round_, blob, sha256_hex(blob), directory,
                                                 student.name)
            self.built += 1
        if self.on_ready is not None:
            self.on_ready()

    def busy(self) -> bool:
        """True while a build runs or waits, or the newest artifact waits for its
        canaries."""
        with self._lock:
            building = self._building
        return building or (self.gate is not None and self.gate.pending())

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no build runs; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._building, timeout)

    def offer(self, device_id: str, device_class: str = DEFAULT_CLASS,
              reported: Callable[[str, int], bool] | None = None) -> Shipped | None:
        """The newest artifact of device_class if device_id should be handed it now (and
        counts it).

        reported(device_id, round) says whether the device reported the artifact of that
        round installed or refused; it is asked only once an offer is outstanding.
        """
        with self._lock:
            latest = self.shipped.get(device_class)
            if latest is None:
                return None
            sha, offers = self._offers.get(device_id, ("", 0))
            offers = offers if sha == latest.sha256 else 0
            if offers >= MAX_OFFERS:
                return None
        if self.gate is not None and not self.gate.allows(device_id, latest.round):
            return None  # not a canary, or the artifact was halted
        # Outside the lock: reported() may read the state database.
        if offers and (reported is None or reported(device_id, latest.round)):
            with self._lock:
                self._offers[device_id] = (latest.sha256, MAX_OFFERS)  # settled: never again
            return None
        with self._lock:
            if self.shipped.get(device_class) is not latest:  # a newer one: offer that
                return None
            self._offers[device_id] = (latest.sha256, offers + 1)
        if offers:
            log.info("offering the edge artifact of round %d to %s again (offer %d): it "
                     "has not reported it installed", latest.round, device_id, offers + 1)
        return latest

    def built_for(self, round_: int) -> bool:
        """Whether an artifact of round_ was built (the newest of a class, or an older
        one kept in the state directory)."""
        with self._lock:
            newest = {s.round for s in self.shipped.values()}
        return round_ in newest or (round_ >= 0 and any(
            (self.class_root(s.name) / f"round-{round_:06d}").is_dir() for s in self.classes))

    def blob(self, round_: int, device_class: str = DEFAULT_CLASS) -> tuple[bytes, str]:
        """The packed artifact of round_ for device_class (only the newest is served)."""
        with self._lock:
            latest = self.shipped.get(device_class)
        if latest is None or latest.round != round_:
            have = "none" if latest is None else f"round {latest.round}"
            raise StaleRequest(f"no edge artifact of round {round_} for device class "
                               f"{device_class!r} (the newest is {have})")
        return latest.blob, latest.sha256
