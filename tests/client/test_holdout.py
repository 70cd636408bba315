"""The held-out slice is chosen per example by content: stable, about the asked share,
independent of order and of the other examples."""

import numpy as np
import pytest

from fedge.client.data.holdout import holdout_mask, split_holdout


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def test_share_is_close_to_the_fraction() -> None:
    x, y = _data(5000)
    share = holdout_mask(x, y, 0.1).mean()
    assert 0.085 < share < 0.115


def test_membership_depends_on_the_example_alone() -> None:
    x, y = _data(400)
    mask = holdout_mask(x, y)
    perm = np.random.default_rng(1).permutation(len(y))
    assert np.array_equal(holdout_mask(x[perm], y[perm]), mask[perm])
    x2, y2 = _data(300, seed=2)  # new files found by a rescan move nothing
    both = holdout_mask(np.concatenate([x, x2]), np.concatenate([y, y2]))
    assert np.array_equal(both[:400], mask)


def test_label_takes_part_and_split_is_a_partition() -> None:
    x, y = _data(2000)
    assert not np.array_equal(holdout_mask(x, y, 0.5), holdout_mask(x, (y + 1) % 10, 0.5))
    (xt, yt), (xh, yh) = split_holdout(x, y, 0.2)
    assert len(yt) + len(yh) == len(y) and len(yh) > 0
    assert not (set(map(bytes, xt)) & set(map(bytes, xh)))


def test_fraction_is_checked() -> None:
    x, y = _data(10)
    assert not holdout_mask(x, y, 0.0).any()
    with pytest.raises(ValueError, match="fraction"):
        holdout_mask(x, y, 1.0)
