"""A masked input the server refuses as busy (its upload slots are full) is resent,
as a plain update is: the device stays in the round instead of vanishing from it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fedge.refusals import Busy
from fedge.server import secure_service
from fedge.server.limits import UploadSlots
from fedge.server.store import StateStore
from tests.fleet import Fleet


def test_a_busy_server_gets_the_masked_input_again(fleet: Fleet, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    refused = threading.Event()
    hold, submit_masked = UploadSlots.hold, secure_service.submit_masked
    first = threading.Lock()

    @contextmanager
    def counting_hold(self: UploadSlots) -> Iterator[None]:
        try:
            with hold(self):
                yield
        except Busy:
            refused.set()
            raise

    def slow_first(*args: Any) -> int:
        # The first upload keeps the server's one slot until another was refused.
        if first.acquire(blocking=False):
            refused.wait(20)
        return submit_masked(*args)

    monkeypatch.setattr(UploadSlots, "hold", counting_hold)
    monkeypatch.setattr(secure_service, "submit_masked", slow_first)
    parts = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=1, min_clients=3, quorum_fraction=0.5, max_uploads=1,
                          state_dir=str(tmp_path / "state"),
                          secure_aggregation=True, round_timeout_s=20.0,
                          max_round_attempts=1)
    port = server.start()
    for i, part in enumerate(parts):
        fleet.client(port, part, f"dev-{i}")
    records = server.wait(60)
    assert refused.is_set()  # the situation under test happened
    assert [r.round for r in records] == [0, 1]
    assert records[-1].clients == 3  # the refused device's input was resent and summed
    # The devices' training metrics are written with the round's end, one per device.
    store = StateStore(tmp_path / "state")
    try:
        rows = store.metric_rows("train")
    finally:
        store.close()
    assert {device for _, device, _, _ in rows} == {"dev-0", "dev-1", "dev-2"}
    assert {round_ for round_, _, _, _ in rows} == {1}
