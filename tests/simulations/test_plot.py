"""accuracy.png's accuracy axis zooms to the data (a run from 0.95 to 0.97 is not a flat
line at the top of a 0..1 axis), within 0..1."""

from __future__ import annotations

import math

import pytest

from fedge.simulations.plot import accuracy_limits


def test_the_accuracy_axis_zooms_to_the_data() -> None:
    low, high = accuracy_limits([0.95, 0.96, 0.97])
    assert low == pytest.approx(0.94) and high == pytest.approx(0.98)


def test_the_accuracy_axis_stays_within_0_and_1_and_survives_odd_runs() -> None:
    assert accuracy_limits([0.1, 1.0]) == (pytest.approx(0.01), 1.0)
    assert accuracy_limits([0.0, 0.0]) == (0.0, pytest.approx(0.01))
    assert accuracy_limits([0.5]) == (pytest.approx(0.49), pytest.approx(0.51))
    assert accuracy_limits([]) == (0.0, 1.0)
    assert accuracy_limits([math.nan, 0.8]) == (pytest.approx(0.79), pytest.approx(0.81))
