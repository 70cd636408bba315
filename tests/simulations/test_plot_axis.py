"""accuracy.png zooms its accuracy axis to the data."""

from __future__ import annotations

from fedge.simulations.plot import accuracy_limits


def test_the_accuracy_axis_is_zoomed_to_the_data_with_a_margin() -> None:
    low, high = accuracy_limits([0.93, 0.95, 0.97])
    assert 0.9 <= low < 0.93 and 0.97 < high <= 1.0
    assert accuracy_limits([0.05, 0.99]) == (0.0, 1.0)  # clipped to 0..1
    assert accuracy_limits([None, float("nan")]) == (0.0, 1.0)  # nothing to zoom on
    low, high = accuracy_limits([0.5])
    assert low < 0.5 < high
