"""The edge artifacts a relay hands its devices: fetched from its upstream, not built.

One upstream download of an artifact serves every device below; a device is offered it
until it reports it installed or refused, as a server offers the artifacts it builds
(fedge.server.deploy.Deployments, whose offering this class keeps). The cache lives in
memory: a restarted relay fetches the artifact again when its upstream offers it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from fedge.errors import TaskError
from fedge.server.deploy import Deployments, Shipped
from fedge.tasks.students import DEFAULT_CLASS, Student
from fedge.tensors import sha256_hex

log = logging.getLogger(__name__)


def _never_built() -> None:
    raise TaskError("a relay builds no edge student")


class EdgeCache(Deployments):
    """The newest artifact the upstream shipped, offered to the relay's devices. A relay
    has one device class, the default: the artifact its upstream ships to it (a task
    with several students serves the relay's class to every device below it)."""

    def __init__(self, state_dir: str | Path,
                 on_ready: Callable[[], None] | None = None) -> None:
        # Deployments' builder and signing key are not made: a relay builds nothing, and
        # its devices trust the root server's key (the artifact is signed there).
        self.root = Path(state_dir) / "edge"
        self.classes = (Student(DEFAULT_CLASS, _never_built),)  # type: ignore[arg-type]
        self.every = 0
        self.on_ready = on_ready
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = None
        self._building = False
        self._offers: dict[str, tuple[str, int]] = {}
        self.shipped: dict[str, Shipped] = {}
        self.gate = None  # no canary stage below a relay: the upstream gated it
        self.failures = 0
        self.built = 0  # artifacts taken from the upstream

    def due(self, round_: int, last: bool) -> bool:
        """A relay never builds: never due."""
        return False

    def put(self, round_: int, blob: bytes) -> None:
        """Takes the artifact of round_ from the upstream; devices are offered it next."""
        with self._lock:
            latest = self.shipped.get(DEFAULT_CLASS)
            if latest is not None and latest.round >= round_:
                return
            self.shipped[DEFAULT_CLASS] = Shipped(round_, blob, sha256_hex(blob), self.root)
            self.built += 1
            self._offers.clear()
        log.info("edge artifact of round %d cached (%d bytes): offering it to the devices",
                 round_, len(blob))
        if self.on_ready is not None:
            self.on_ready()

    def class_root(self, device_class: str) -> Path:
        """Where artifacts would be kept: the relay keeps its one in memory."""
        return self.root

    def classify(self, memory_bytes: int, accelerator: str, label: str) -> str:
        """Every device below a relay gets the relay's artifact."""
        return DEFAULT_CLASS

    def built_for(self, round_: int) -> bool:
        """Whether the cached artifact is of round_ (only the newest is kept)."""
        with self._lock:
            latest = self.shipped.get(DEFAULT_CLASS)
            return latest is not None and latest.round == round_
