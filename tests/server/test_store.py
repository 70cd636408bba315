"""The state directory: durable commits, resumption, and refusal of damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.errors import FedgeError
from fedge.server.store import RoundRecord, StateStore
from fedge.tensors import from_blob, to_blob


def _record(round_: int) -> RoundRecord:
    return RoundRecord(round_, 0.5 + round_ / 100, 1.0, 3, 300, 10, 20, 0.1)


def test_commit_then_reopen_resumes_from_the_last_round(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for r in range(3):
        store.commit(_record(r), to_blob({"w": np.full(2, r, np.float32)}))
    store.close()
    reopened = StateStore(tmp_path)
    record, blob = reopened.latest()  # type: ignore[misc]
    assert record.round == 2 and record.accuracy == pytest.approx(0.52)
    np.testing.assert_array_equal(from_blob(blob)[0]["w"], [2, 2])
    assert [r.round for r in reopened.rounds()] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "round-000000.safetensors", "round-000001.safetensors", "round-000002.safetensors"]


def test_a_damaged_checkpoint_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.commit(_record(0), to_blob({"w": np.ones(2, np.float32)}))
    path = store.checkpoint_path(0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FedgeError, match="does not match"):
        store.latest()


def test_a_state_dir_of_another_task_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path).check_task("digits-mlp", ["w: float32[2]"])
    StateStore(tmp_path).check_task("digits-mlp", ["w: float32[2]"])  # same run: fine
    with pytest.raises(FedgeError, match="fresh --state-dir"):
        StateStore(tmp_path).check_task("digits-cnn", ["w: float32[3]"])
