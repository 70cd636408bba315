"""Local DP on the device (fedge.client.update.privatize): the change from the global
model is clipped and noised whatever kind of update travels, and the TRAIN task's
TrainConfig carries the clip norm and noise multiplier."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.client.update import UpdatePlan, privatize
from fedge.privacy.mechanisms import l2_norm
from fedge.protos import fedge_pb2
from tests.fedge.test_privacy import spread_ok


def plan(kind: str, clip: float, z: float) -> UpdatePlan:
    return UpdatePlan(1, 0.1, 8, 0, kind=kind, dp_clip=clip, dp_noise_multiplier=z)


@pytest.mark.parametrize("kind", ["weights", "delta", "gradient"])
def test_the_change_is_clipped_to_the_norm(kind: str) -> None:
    rng = np.random.default_rng(8)
    weights: dict[str, np.ndarray] = {"w": rng.normal(0, 1, 500).astype(np.float32),
                                      "steps": np.array([3], np.int64)}
    change = rng.normal(0, 1, 500).astype(np.float32)  # norm about 22
    sent_w = (weights["w"] + change) if kind == "weights" else change.copy()
    update: dict[str, np.ndarray] = {"w": sent_w, "steps": np.array([4], np.int64)}
    out = privatize(update, weights, plan(kind, 1.5, 0.0))
    sent = out["w"] - weights["w"] if kind == "weights" else out["w"]
    assert l2_norm({"w": sent}) == pytest.approx(1.5, rel=1e-4)
    np.testing.assert_allclose(sent, change * 1.5 / np.linalg.norm(change), atol=1e-5)
    assert out["steps"][0] == 4  # counters are not part of the released change


def test_the_noise_has_std_z_times_c_and_nothing_changes_without_local_dp() -> None:
    weights = {"w": np.ones(200_000, np.float32)}
    update = {"w": np.ones(200_000, np.float32)}  # weights unchanged: a zero change
    out = privatize(update, weights, plan("weights", 0.5, 2.0), np.random.default_rng(9))
    assert spread_ok(out["w"] - 1.0, 2.0 * 0.5)
    assert not spread_ok(out["w"] - 1.0, 2.0)
    same = {"w": np.full(10, 5.0, np.float32)}
    assert privatize(same, {"w": np.zeros(10, np.float32)}, plan("weights", 0.0, 1.0)) is same
    np.testing.assert_array_equal(same["w"], 5.0)


def test_the_train_task_carries_the_local_dp_settings() -> None:
    cfg = fedge_pb2.TrainConfig(epochs=1, lr=0.1, batch_size=8, dp_clip=1.25,
                                dp_noise_multiplier=0.8)
    got = UpdatePlan.from_proto(cfg)
    assert (got.dp_clip, got.dp_noise_multiplier) == (1.25, 0.8)
    assert UpdatePlan.from_proto(fedge_pb2.TrainConfig()).dp_clip == 0.0
