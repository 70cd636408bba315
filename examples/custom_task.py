"""A user-defined fedge task, complete and offline: three Gaussian blobs in 16-D.

Run it from the repository root (``load_task`` looks in the working directory)::

    fedge simulate --task examples.custom_task:task --clients 3 --rounds 3 --out runs/custom

A task is five things: a data schema, a model factory, the data splits, local training
defaults and, optionally, a smaller student model for edge devices. The train and eval
steps default to cross-entropy classification, which is what this task wants.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fedge.tasks import DataSchema, Splits, Task, TrainDefaults

FEATURES = 16
LABELS = ("red", "green", "blue")
EXAMPLES = 3000
# One fixed seed makes every process (the server and each client) build the same data.
SEED = 1234
# Spread of the class centres, in units of a blob's own spread: the centres land about
# 4.8 apart, so the best possible accuracy is near 98%, not a trivial 100%.
CENTRE_SCALE = 0.7


def blobs(n: int = EXAMPLES, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """n examples (x float32 [n, FEATURES], y int64 [n]) drawn around fixed class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, size=(len(LABELS), FEATURES)) * CENTRE_SCALE
    y = rng.integers(0, len(LABELS), size=n).astype(np.int64)
    x = (centres[y] + rng.normal(0.0, 1.0, size=(n, FEATURES))).astype(np.float32)
    return x, y


def load_data() -> Splits:
    """A fixed split: 20% test (the server's evaluation), 10% proxy (server-side only,
    for distillation), the remaining 70% the pool that clients share out."""
    x, y = blobs()
    n_test, n_proxy = len(x) // 5, len(x) // 10
    test, proxy, train = np.split(np.arange(len(x)), [n_test, n_test + n_proxy])
    return Splits(train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                  proxy_x=x[proxy], proxy_y=y[proxy])


def build_model() -> nn.Module:
    """Teacher: 16-32-32-3 (1,699 parameters)."""
    return nn.Sequential(
        nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, len(LABELS)))


def build_student() -> nn.Module:
    """Student for edge devices: 16-8-3 (163 parameters)."""
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, len(LABELS)))


def task() -> Task:
    """The task; ``--task examples.custom_task:task`` calls this."""
    return Task(
        name="blobs-mlp",
        schema=DataSchema(input_shape=(FEATURES,), labels=LABELS),
        build_model=build_model,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.05, batch_size=32),
        build_student=build_student,
        description="three 16-D Gaussian blobs, a 3-layer MLP",
    )
