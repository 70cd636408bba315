"""Built-in tasks on scikit-learn's bundled 8x8 digits (1,797 images, works offline).

The split is fixed: 20% test (server-side evaluation), 10% proxy (held by the server
for distillation, never by a client), the remaining 70% shared out among clients.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fedge.tasks import DataSchema, Splits, Task, TrainDefaults

if TYPE_CHECKING:  # torch is imported when a model is built, so that an inference-only
    from torch import nn  # device (no torch) can still load the task's schema

LABELS = tuple(str(d) for d in range(10))
# The digits are 4-bit intensities (0..16, as scikit-learn ships them, here divided by
# 16): an 8x8 grayscale image of one stores those intensities as its pixel values.
PIXEL_SCALE = 1.0 / 16.0
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SPLIT_SEED)
    train_x, proxy_x, train_y, proxy_y = train_test_split(
        rest_x, rest_y, test_size=0.125, stratify=rest_y, random_state=SPLIT_SEED)
    return train_x, train_y, test_x, test_y, proxy_x, proxy_y


def _splits(image: bool) -> Splits:
    arrays = _digits()
    if image:
        arrays = tuple(a.reshape(-1, 1, 8, 8) if a.ndim == 2 else a for a in arrays)
    train_x, train_y, test_x, test_y, proxy_x, proxy_y = arrays
    return Splits(train_x, train_y, test_x, test_y, proxy_x, proxy_y)


def mlp() -> nn.Module:
    """Teacher: 64-128-128-10 (26,122 parameters)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def mlp_student() -> nn.Module:
    """Student: 64-24-10 (1,810 parameters, 14x fewer)."""
    from torch import nn

    return nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def cnn() -> nn.Module:
    """Teacher: two 3x3 convolutions, a pool and two dense layers (38,282 parameters)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn_student() -> nn.Module:
    """Student: one 3x3 convolution, a pool and a dense layer (1,370 parameters)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def mlp_task() -> Task:
    return Task(
        name="digits-mlp",
        schema=DataSchema(input_shape=(64,), labels=LABELS, image_size=(8, 8),
                          pixel_scale=PIXEL_SCALE, raw_range=(0.0, 16.0)),
        build_model=mlp,
        load_data=lambda: _splits(image=False),
        defaults=TrainDefaults(epochs=2, lr=0.1, batch_size=32),
        build_student=mlp_student,
        description="8x8 digits as 64 features, a 3-layer MLP",
    )


def cnn_task() -> Task:
    return Task(
        name="digits-cnn",
        schema=DataSchema(input_shape=(1, 8, 8), labels=LABELS, image_size=(8, 8),
                          pixel_scale=PIXEL_SCALE, raw_range=(0.0, 16.0)),
        build_model=cnn,
        load_data=lambda: _splits(image=True),
        # 3 epochs at 0.05: stable under Dirichlet(0.5) skew across seeds.
        defaults=TrainDefaults(epochs=3, lr=0.05, batch_size=32),
        build_student=cnn_student,
        description="8x8 digits as 1x8x8 images, a small CNN",
    )
