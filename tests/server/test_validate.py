"""Value checks on decoded updates, and the admission limits, without gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.refusals import Busy, InvalidUpdate
from fedge.server.limits import RateLimiter, UploadSlots
from fedge.server.validate import bound_norm, check_finite, distance


def test_non_finite_values_are_named() -> None:
    check_finite({"w": np.ones(3, np.float32), "steps": np.array([1, 2])})
    with pytest.raises(InvalidUpdate, match="'w' holds NaN"):
        check_finite({"w": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(InvalidUpdate, match="'w' holds infinite"):
        check_finite({"w": np.array([1.0, -np.inf], np.float32)})


def test_the_norm_bound_refuses_or_clips_to_exactly_the_bound() -> None:
    reference = {"a": np.zeros(3, np.float32), "b": np.ones(4, np.float32)}
    update = {"a": np.array([3.0, 0.0, 0.0], np.float32),
              "b": np.array([1.0, 1.0, 1.0, 5.0], np.float32)}
    assert distance(update, reference) == pytest.approx(5.0)
    assert bound_norm(dict(update), reference, 0.0, "refuse") == pytest.approx(5.0)
    with pytest.raises(InvalidUpdate, match="exceeds the bound of 2"):
        bound_norm(dict(update), reference, 2.0, "refuse")
    clipped = {k: v.copy() for k, v in update.items()}
    assert bound_norm(clipped, reference, 2.0, "clip") == pytest.approx(5.0)
    assert distance(clipped, reference) == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(clipped["a"], [1.2, 0, 0], rtol=1e-6)  # direction kept


def test_rate_limit_allows_a_burst_then_refuses_per_key() -> None:
    limiter = RateLimiter(rate=0.001, burst=3)
    for _ in range(3):
        limiter.admit("a")
    with pytest.raises(Busy, match="too many requests from 'a'"):
        limiter.admit("a")
    limiter.admit("b")
    RateLimiter(rate=0, burst=1).admit("a")  # off


def test_upload_slots_refuse_past_the_cap_and_free_on_exit() -> None:
    slots = UploadSlots(1)
    with slots.hold(), pytest.raises(Busy, match="receiving 1 updates"), slots.hold():
        pass
    with slots.hold():
        pass
