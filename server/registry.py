"""The device registry: who has joined, with which session, and when last seen."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from fedge.refusals import Conflict, UnknownSession

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
    joined_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    inference_only: bool = False  # it cannot train: never sampled, only shipped models
    polled: bool = False  # it has asked for a task: only such devices are sampled


class Registry:
    """Thread-safe map of device ids and session ids to devices."""

    def __init__(self, device_timeout_s: float) -> None:
        self._timeout = device_timeout_s
        self._lock = threading.Lock()
        self._by_session: dict[str, Device] = {}
        self._by_device: dict[str, Device] = {}

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
            if old is not None and old.session_id != previous_session:
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
        return device

    def get(self, session_id: str) -> Device:
        """Returns the session's device and marks it seen now."""
        with self._lock:
            device = self._by_session.get(session_id)
            if device is None:
                raise UnknownSession("unknown or expired session; join again")
            device.last_seen = time.monotonic()
            return device

    def live(self) -> list[Device]:
        """Devices seen within the device timeout, oldest join first."""
        cutoff = time.monotonic() - self._timeout
        with self._lock:
            return sorted((d for d in self._by_device.values() if d.last_seen >= cutoff),
                          key=lambda d: d.joined_at)

    def all(self) -> list[Device]:
        """Every device with a session, live or not, oldest join first."""
        with self._lock:
            return sorted(self._by_device.values(), key=lambda d: d.joined_at)

    def timeout(self) -> float:
        return self._timeout
