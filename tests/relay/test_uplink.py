"""The relay's pure pieces: its partial aggregate as each update kind, and when its round
closes before the upstream's deadline."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.relay.uplink import as_update, closing_time
from fedge.server.intake import pseudo_gradient


@pytest.mark.parametrize("kind", ["weights", "delta", "gradient"])
def test_the_upstream_intake_turns_a_partial_back_into_its_mean(kind: str) -> None:
    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {"w": rng.normal(size=(4, 3)).astype(np.float32),
               "steps": np.array([7], np.int64)}
    mean: dict[str, np.ndarray] = {"w": (rng.normal(size=(4, 3)) * 1e-2).astype(np.float32),
            "steps": np.array([-2.0])}
    back = pseudo_gradient(kind, weights, as_update(mean, weights, kind))
    assert back.keys() == mean.keys()
    # float32 rounding of w - g and back (exact for differences within a factor of 2)
    assert float(np.abs(back["w"] - mean["w"]).max()) <= 4 * float(np.finfo(np.float32).eps)
    assert float(back["steps"][0]) == -2.0


def test_the_round_closes_a_margin_before_the_deadline_or_half_way() -> None:
    assert closing_time(deadline=100.0, margin_s=5.0, now=0.0) == 95.0
    assert closing_time(deadline=100.0, margin_s=5.0, now=92.0) == 96.0  # 8 s left: half
    assert closing_time(deadline=100.0, margin_s=0.0, now=50.0) == 100.0
