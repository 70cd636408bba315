"""Partitioners: every example lands with exactly one client; skew follows alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.client.data import load_local_data
from fedge.errors import ConfigError
from fedge.simulations.partition import dirichlet, iid, quantity, shards, write_partitions
from fedge.tasks import DataSchema

LABELS = np.repeat(np.arange(10), 100)


def _is_partition(parts: list[np.ndarray], n: int) -> bool:
    joined = np.sort(np.concatenate(parts))
    return bool(np.array_equal(joined, np.arange(n)))


def test_iid_is_a_balanced_partition() -> None:
    parts = iid(1000, 7, seed=3)
    assert _is_partition(parts, 1000)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [p.tolist() for p in parts] == [p.tolist() for p in iid(1000, 7, seed=3)]


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_is_a_partition(alpha: float) -> None:
    parts = dirichlet(LABELS, 10, alpha, seed=0)
    assert _is_partition(parts, len(LABELS))
    assert min(map(len, parts)) >= 2


def test_smaller_alpha_means_more_label_skew() -> None:
    def skew(alpha: float) -> float:
        parts = dirichlet(LABELS, 10, alpha, seed=0)
        # mean share of a client's examples taken by its most common label
        return float(np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts]))

    assert skew(0.1) > skew(1.0) > skew(100.0)
    assert skew(100.0) < 0.2


def test_impossible_splits_are_refused() -> None:
    with pytest.raises(ConfigError):
        iid(3, 5, seed=0)
    with pytest.raises(ConfigError):
        dirichlet(LABELS[:10], 10, 0.5, seed=0)


def test_written_partitions_are_readable_by_the_client(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    y = np.arange(50) % 3
    parts = iid(50, 3, seed=0)
    dirs = write_partitions(x, y, parts, tmp_path)
    schema = DataSchema(input_shape=(4,), labels=("a", "b", "c"))
    for directory, part in zip(dirs, parts, strict=True):
        got_x, got_y = load_local_data([str(directory)], schema)
        np.testing.assert_array_equal(got_x, x[part])
        np.testing.assert_array_equal(got_y, y[part])


def test_quantity_skew_keeps_labels_mixed_but_sizes_unequal() -> None:
    parts = quantity(1000, 8, alpha=0.3, seed=1)
    assert _is_partition(parts, 1000)
    sizes = sorted(map(len, parts))
    assert sizes[0] >= 2 and sizes[-1] > 5 * sizes[0]
    big = parts[int(np.argmax([len(p) for p in parts]))]
    assert len(np.unique(LABELS[big])) == 10
    assert [len(p) for p in parts] == [len(p) for p in quantity(1000, 8, 0.3, seed=1)]


def test_shards_give_each_client_about_two_labels() -> None:
    parts = shards(LABELS, 10, seed=2)
    assert _is_partition(parts, len(LABELS))
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    with pytest.raises(ConfigError, match="shards"):
        shards(LABELS[:5], 10, seed=0)
