"""Personalization's server side: after the last round, a device that joined asking to
personalize is handed a PERSONALIZE task naming the final model, before its STOP.

That task is how such a device learns the global rounds are over. STOP cannot serve: the
server shuts down once every device has been told STOP, so a device could no longer
fetch the final model or report. Like the final edge artifact, the task is handed again
at each poll until the device reports its held-out accuracies (or that it could not
personalize), at most MAX_OFFERS times. The personalized weights never leave the device;
only its metrics come back (docs/personalization.md).
"""

from __future__ import annotations

import threading

from fedge.server.registry import Device
from fedge.server.round_state import TaskView
from fedge.server.store import StateStore

MAX_OFFERS = 5
# What a device reports once it is done: its accuracies, or that it could not personalize.
REPORTED = ("personal_accuracy", "personal_skipped")


class Personalizations:
    """Which devices were handed the final model to personalize, and how often."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._offers: dict[str, int] = {}  # device id -> PERSONALIZE tasks handed out

    def offer(self, device: Device, final_version: int) -> TaskView | None:
        """The PERSONALIZE task for device, if it asked for one and has not reported on
        the final model yet (None: tell it STOP)."""
        if not device.personalize or device.inference_only:
            return None
        with self._lock:
            offers = self._offers.get(device.device_id, 0)
            if offers >= MAX_OFFERS:
                return None
        if offers and self.reported(device.device_id, final_version):
            with self._lock:
                self._offers[device.device_id] = MAX_OFFERS
            return None
        with self._lock:
            self._offers[device.device_id] = offers + 1
        return TaskView("PERSONALIZE", model_version=final_version,
                        message=f"training is complete: personalize the model of round "
                                f"{final_version} on this device's data")

    def reported(self, device_id: str, version: int) -> bool:
        """Whether device_id reported its personalization of the model of version."""
        return any(device_id in self._store.metric_values(version, "device", name)
                   for name in REPORTED)
