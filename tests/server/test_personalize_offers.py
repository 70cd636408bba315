"""The PERSONALIZE task: handed after the last round to the devices that asked, again
until the device reports on the final model, and a bounded number of times."""

from __future__ import annotations

from pathlib import Path

from fedge.server.personalize import MAX_OFFERS, Personalizations
from fedge.server.registry import Device
from fedge.server.store import StateStore


def test_only_asking_devices_get_it_until_they_report(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        personal = Personalizations(store)
        asking = Device("a", "s-a", 10, personalize=True)
        plain = Device("b", "s-b", 10)
        viewer = Device("c", "s-c", 0, personalize=True, inference_only=True)
        view = personal.offer(asking, 4)
        assert view is not None and view.kind == "PERSONALIZE" and view.model_version == 4
        assert personal.offer(plain, 4) is None and personal.offer(viewer, 4) is None
        again = personal.offer(asking, 4)  # not reported yet: its download may have broken
        assert again is not None and again.kind == "PERSONALIZE"
        store.add_metrics(4, "a", "device", {"personal_accuracy": 0.9, "global_accuracy": 0.7})
        assert personal.offer(asking, 4) is None  # reported: STOP next
        assert personal.offer(asking, 4) is None

        mute = Device("m", "s-m", 10, personalize=True)
        kinds = [personal.offer(mute, 4) for _ in range(MAX_OFFERS + 2)]
        assert [k is not None for k in kinds] == [True] * MAX_OFFERS + [False, False]
        skipped = Device("k", "s-k", 10, personalize=True)
        assert personal.offer(skipped, 4) is not None
        store.add_metrics(4, "k", "device", {"personal_skipped": 1.0})
        assert personal.offer(skipped, 4) is None
    finally:
        store.close()
