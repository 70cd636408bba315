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

from fedge.server.deploy import Deployments, Shipped
from fedge.tensors import sha256_hex

log = logging.getLogger(__name__)


class EdgeCache(Deployments):
    """The newest artifact the upstream shipped, offered to the relay's devices."""

    def __init__(self, state_dir: str | Path,
                 on_ready: Callable[[], None] | None = None) -> None:
        # Deployments' builder and signing key are not made: a relay builds nothing, and
        # its devices trust the root server's key (the artifact is signed there).
        self.root = Path(state_dir) / "edge"
        self.every = 0
        self.on_ready = on_ready
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = None
        self._building = False
        self._offers: dict[str, int] = {}
        self.latest: Shipped | None = None
        self.failures = 0
        self.built = 0  # artifacts taken from the upstream

    def due(self, round_: int, last: bool) -> bool:
        """A relay never builds: never due."""
        return False

    def put(self, round_: int, blob: bytes) -> None:
        """Takes the artifact of round_ from the upstream; devices are offered it next."""
        with self._lock:
            if self.latest is not None and self.latest.round >= round_:
                return
            self.latest = Shipped(round_, blob, sha256_hex(blob), self.root)
            self.built += 1
            self._offers.clear()
        log.info("edge artifact of round %d cached (%d bytes): offering it to the devices",
                 round_, len(blob))
        if self.on_ready is not None:
            self.on_ready()

    def built_for(self, round_: int) -> bool:
        """Whether the cached artifact is of round_ (only the newest is kept)."""
        with self._lock:
            return self.latest is not None and self.latest.round == round_
