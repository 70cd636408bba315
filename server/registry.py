"""The device registry: who has joined, with which session, and when last seen."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedge.refusals import Conflict, UnknownSession

if TYPE_CHECKING:
    from fedge.secure.masks import Advert

log = logging.getLogger(__name__)


@dataclass
class Device:
    """A joined device and its current session."""

    device_id: str
    session_id: str
    num_examples: int
    capabilities: dict[str, str] = field(default_factory=dict)
    authenticated: bool = False  # joined with a valid token for device_id
    edge_model: str = ""  # the edge artifact version it last reported installed
    device_class: str = ""  # its edge device class ("": it fits none, gets no artifact)
    personalize: bool = False  # handed the final model to personalize before its STOP
    joined_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    inference_only: bool = False  # it cannot train: never sampled, only shipped models
    polled: bool = False  # it has asked for a task: only such devices are sampled
    left: bool = False  # told STOP: its daemon exits, so it is no longer live
    # Secure runs: the public keys its latest poll carried, until a round takes them
    # (fedge.server.secure_round.open_secure); only a device with some is sampled.
    advert: Advert | None = None


# How long a device that went silent (or was told STOP) keeps its entry, in device
# timeouts: long enough that a slow trainer's session survives between its calls, short
# enough that devices that came and went do not pile up for the life of the server.
EXPIRE_TIMEOUTS = 10.0
SWEEP_S = 1.0  # expired entries are swept at most this often (a sweep is O(devices))


class Registry:
    """Thread-safe map of device ids and session ids to devices.

    A device silent for EXPIRE_TIMEOUTS device timeouts (or for one, once told STOP)
    loses its entry and its session: if it comes back it is told to join again.
    """

    def __init__(self, device_timeout_s: float) -> None:
        self._timeout = device_timeout_s
        self._lock = threading.Lock()
        self._by_session: dict[str, Device] = {}
        self._by_device: dict[str, Device] = {}
        self._swept = time.monotonic()

    def join(self, device_id: str, num_examples: int, capabilities: dict[str, str],
             authenticated: bool = False, previous_session: str = "",
             inference_only: bool = False) -> Device:
        """Opens a new session for device_id, ending the one it had before.

        A device id whose session is still live is refused (Conflict) unless the caller
        names that session as its previous one: the same daemon reconnecting.
        """
        device = Device(device_id, secrets.token_hex(16), num_examples, capabilities,
                        authenticated, inference_only=inference_only)
        with self._lock:
            old = self._by_device.get(device_id)
            if old is not None and old.session_id != previous_session and not old.left:
                idle = time.monotonic() - old.last_seen
                if idle < self._timeout:
                    raise Conflict(f"device id {device_id!r} is in use by another live "
                                   f"session (seen {idle:.0f} s ago); a restarted device "
                                   f"can join once it has been silent for "
                                   f"{self._timeout:.0f} s")
            self._by_device.pop(device_id, None)
            if old is not None:
                self._by_session.pop(old.session_id, None)
                log.info("device %s rejoined; its old session is closed", device_id)
            self._by_device[device_id] = device
            self._by_session[device.session_id] = device
            self._sweep()
        return device

    def _sweep(self) -> None:
        """Drops expired entries (the lock must be held), at most every SWEEP_S."""
        now = time.monotonic()
        if now - self._swept < SWEEP_S:
            return
        self._swept = now
        expired = [d for d in self._by_device.values()
                   if now - d.last_seen > self._timeout * (1.0 if d.left
                                                           else EXPIRE_TIMEOUTS)]
        for device in expired:
            del self._by_device[device.device_id]
            self._by_session.pop(device.session_id, None)
        if expired:
            log.info("forgot %d device(s) not heard from since they left or went silent",
                     len(expired), extra={"event": "devices.expired"})

    def leave(self, session_id: str) -> None:
        """Marks the session's device as gone (it was told STOP, and exits)."""
        with self._lock:
            device = self._by_session.get(session_id)
            if device is not None:
                device.left = True

    def get(self, session_id: str) -> Device:
        """Returns the session's device and marks it seen now."""
        with self._lock:
            device = self._by_session.get(session_id)
            if device is None:
                raise UnknownSession("unknown or expired session; join again")
            device.last_seen = time.monotonic()
            return device

    def is_live(self, device: Device, now: float | None = None) -> bool:
        """Whether device was seen within the device timeout and has not left."""
        now = time.monotonic() if now is None else now
        return not device.left and now - device.last_seen < self._timeout

    def live(self) -> list[Device]:
        """Devices seen within the device timeout that have not left, oldest join first."""
        now = time.monotonic()
        with self._lock:
            self._sweep()
            return sorted((d for d in self._by_device.values() if self.is_live(d, now)),
                          key=lambda d: d.joined_at)

    def all(self) -> list[Device]:
        """Every device with a session, live or not, oldest join first."""
        with self._lock:
            self._sweep()
            return sorted(self._by_device.values(), key=lambda d: d.joined_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_device)

    def timeout(self) -> float:
        return self._timeout
