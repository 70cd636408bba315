"""A task whose model is as large as asked, for transfer and memory benchmarks and
tests: one wide hidden layer between a few features and three classes, defined here (no
download), with Gaussian-blob data. Its size comes from ``FEDGE_WIDE_MB`` (default 1024:
about 268M float32 parameters), so the server and every daemon, each loading the task
by ``bench.wide_task:task``, build the same model.

``bench.wide_task:small`` is a 4 MB version (five 1 MiB chunks) for tests, and
``bench.wide_task:million`` the same model with 1,024 examples (bench.secure).
"""

from __future__ import annotations

import os

import numpy as np
from torch import nn

from fedge.tasks import DataSchema, Splits, Task, TrainDefaults

FEATURES = 256
LABELS = ("a", "b", "c")
SEED = 7


def hidden_for(megabytes: float) -> int:
    """The hidden width that makes the model about megabytes (MB of 10^6 bytes)."""
    per_unit = (FEATURES + 1 + len(LABELS)) * 4  # bytes per hidden unit, biases included
    return max(1, int(megabytes * 1e6 / per_unit))


def _data(examples: int) -> Splits:
    rng = np.random.default_rng(SEED)
    centres = rng.normal(0.0, 1.0, size=(len(LABELS), FEATURES))
    y = rng.integers(0, len(LABELS), size=examples).astype(np.int64)
    x = (centres[y] + rng.normal(0.0, 1.0, size=(examples, FEATURES))).astype(np.float32)
    cut = examples // 4
    return Splits(train_x=x[cut:], train_y=y[cut:], test_x=x[:cut], test_y=y[:cut])


def wide(megabytes: float, examples: int = 64) -> Task:
    """A wide-MLP task of about megabytes; few examples, one small batch a round, plain
    SGD (no momentum buffer: one model-sized copy fewer on each device)."""
    hidden = hidden_for(megabytes)

    def build_model() -> nn.Module:
        return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(),
                             nn.Linear(hidden, len(LABELS)))

    return Task(name=f"wide-{megabytes:g}mb", schema=DataSchema((FEATURES,), LABELS),
                build_model=build_model, load_data=lambda: _data(examples),
                defaults=TrainDefaults(epochs=1, lr=0.01, batch_size=examples,
                                       momentum=0.0),
                description=f"a {hidden}-wide MLP of about {megabytes:g} MB")


def task() -> Task:
    """The task at FEDGE_WIDE_MB megabytes (default 1024)."""
    return wide(float(os.environ.get("FEDGE_WIDE_MB", "1024")))


def small() -> Task:
    """A 4 MB version: an update or a download is five 1 MiB chunks."""
    return wide(4.0)


def million() -> Task:
    """About a million parameters (4 MB) and 1,024 examples, enough for 100 devices:
    the secure-aggregation bench's larger model."""
    return wide(4.0, examples=1024)
