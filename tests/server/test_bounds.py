"""The fleet-relative bounds as pure functions (fedge.server.bounds, intake filter 10)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.server.bounds import Bounds, distance_bound, example_weight, median
from fedge.server.intake import prepare_bounded


def test_an_update_weighs_at_most_factor_times_the_median_or_its_own_join_count() -> None:
    assert example_weight(1 << 31, 1 << 31, 200.0, 1.0) == 200.0  # the fleet caps a liar
    assert example_weight(1 << 31, 100, 200.0, 1.0) == 100.0  # so does its own Join
    assert example_weight(150, 100, 200.0, 2.0) == 150.0  # grew a little: within the factor
    assert example_weight(80, 100, 200.0, 1.0) == 80.0  # never more than declared
    assert example_weight(1 << 31, 0, 200.0, 1.0) == 1.0  # a Join of 0 weighs one example
    assert example_weight(1 << 31, 100, 200.0, 0.0) == float(1 << 31)  # off


def test_the_distance_bound_follows_the_reference_and_warms_up_on_the_model_norm() -> None:
    bounds = Bounds(norm_factor=1.5, warmup_norm_ratio=1.0)
    assert distance_bound(2.0, 9.0, bounds) == 3.0
    assert distance_bound(0.0, 9.0, bounds) == 9.0  # no reference yet
    assert distance_bound(2.0, 9.0, Bounds()) == 0.0  # off
    assert median([1.0, 100.0, 2.0]) == 2.0 and median([]) == 0.0  # one outlier moves nothing


def test_the_round_bound_clips_and_reports_the_norm_before_clipping() -> None:
    glob = {"w": np.zeros(4, np.float32)}
    far = {"w": np.array([-3.0, -4.0, 0.0, 0.0], np.float32)}  # distance 5
    prepared = prepare_bounded(far, glob, "weights", 0.0, "refuse", round_bound=1.0)
    assert prepared.norm == pytest.approx(5.0) and prepared.clipped
    np.testing.assert_allclose(prepared.gradient["w"], [0.6, 0.8, 0.0, 0.0], rtol=1e-6)
    near = prepare_bounded({"w": np.array([0.3, 0.4, 0, 0], np.float32)}, glob, "weights",
                           0.0, "refuse", round_bound=1.0)
    assert near.norm == pytest.approx(0.5) and not near.clipped
    # Clipped first by --max-update-norm (clip), then by the round's tighter bound.
    both = prepare_bounded({"w": np.array([-30.0, -40.0, 0, 0], np.float32)}, glob,
                           "weights", 10.0, "clip", round_bound=1.0)
    assert both.norm == pytest.approx(50.0) and both.clipped
    assert float(np.linalg.norm(both.gradient["w"])) == pytest.approx(1.0, rel=1e-5)
    measured = prepare_bounded({"w": np.array([3.0, 4.0, 0, 0], np.float32)}, glob,
                               "weights", 0.0, "refuse", measure=True)
    assert measured.norm == pytest.approx(5.0) and not measured.clipped
