"""FedAvg: the weighted mean by hand, and the fold's memory staying O(model)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fedge.server.strategies.fedavg import FedAvgFold, weighted_mean


def test_weighted_mean_by_hand() -> None:
    updates = [{"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.0], np.float32)},
               {"w": np.array([3.0, 6.0], np.float32), "b": np.array([4.0], np.float32)}]
    # weights 1 and 3: (1*1 + 3*3)/4 = 2.5, (1*2 + 3*6)/4 = 5.0, (0 + 3*4)/4 = 3.0
    mean = weighted_mean(updates, [1, 3])
    np.testing.assert_array_equal(mean["w"], [2.5, 5.0])
    np.testing.assert_array_equal(mean["b"], [3.0])


def test_fold_matches_hand_computed_mean_in_any_order() -> None:
    a, b, c = (np.array([2.0, -4.0, 8.0], np.float32), np.array([4.0, 0.0, 0.0], np.float32),
               np.array([-1.0, 1.0, 1.0], np.float32))
    expected = (10 * a + 30 * b + 60 * c) / 100  # = [0.8, 0.2, 1.4]
    np.testing.assert_allclose(expected, [0.8, 0.2, 1.4], rtol=1e-6)
    for order in ([(a, 10), (b, 30), (c, 60)], [(c, 60), (a, 10), (b, 30)]):
        fold = FedAvgFold()
        for array, weight in order:
            fold.add({"t": array.copy()}, weight)
        np.testing.assert_allclose(fold.result()["t"], expected, rtol=1e-6)
        assert fold.count == 3 and fold.total_weight == 100


def test_fold_agrees_with_reference_on_random_updates() -> None:
    rng = np.random.default_rng(1)
    updates: list[dict[str, np.ndarray]] = [{"w": rng.standard_normal((5, 7)).astype(np.float32),
                "n": rng.integers(0, 100, size=3)} for _ in range(9)]
    weights = rng.integers(1, 500, size=9).tolist()
    fold = FedAvgFold()
    for update, weight in zip(updates, weights, strict=True):
        fold.add({k: v.copy() for k, v in update.items()}, weight)
    result, reference = fold.result(), weighted_mean(updates, weights)
    np.testing.assert_allclose(result["w"], reference["w"], rtol=1e-5, atol=1e-6)
    assert result["n"].dtype == np.int64
    np.testing.assert_array_equal(result["n"], np.rint(reference["n"]))


def test_fold_refuses_mismatched_and_empty_input() -> None:
    fold = FedAvgFold()
    with pytest.raises(ValueError, match="no update"):
        fold.result()
    fold.add({"w": np.ones(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="names"):
        fold.add({"v": np.ones(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="positive"):
        fold.add({"w": np.ones(2, np.float32)}, 0)


def test_fold_memory_is_flat_in_the_number_of_updates() -> None:
    """Folding 40 updates of a 4 MB model never holds more than the running sum plus
    the one update being folded: peak traced memory stays near 2x the model whether 4 or
    40 updates are folded, where keeping them all would take 40x."""
    model_bytes = 1_000_000 * 4

    def peak_for(count: int) -> int:
        tracemalloc.start()
        fold = FedAvgFold()
        for k in range(count):
            update = {"w": np.full(1_000_000, k, np.float32)}  # as if just received
            fold.add(update, 1.0)
            del update
        fold.result()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    few, many = peak_for(4), peak_for(40)
    assert many < 3.2 * model_bytes  # sum + one update + the result
    assert many < few * 1.1
