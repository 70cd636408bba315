"""Human activity recognition on UCI HAR-shaped data: windows of 128 samples (2.56 s at
50 Hz) of a phone's 3-axis accelerometer and 3-axis gyroscope, six activities.

The data set is read from ``$FEDGE_UCI_HAR_DIR``, the folder ``UCI HAR Dataset`` of the
UCI archive (https://archive.ics.uci.edu/dataset/240, "Human Activity Recognition Using
Smartphones"; the download holds ``UCI HAR Dataset.zip``, extract that too):

- ``train/Inertial Signals/<signal>_train.txt`` and ``test/Inertial Signals/
  <signal>_test.txt``: one window a line, 128 numbers separated by spaces; the six
  signals read are ``total_acc_{x,y,z}`` (the accelerometer, in g, gravity included)
  and ``body_gyro_{x,y,z}`` (the gyroscope, rad/s), in that channel order;
- ``train/y_train.txt`` and ``test/y_test.txt``: one activity a line, 1..6 in the order
  of LABELS.

Inputs are (6, 128) float32, channels first. Text is parsed with numpy; nothing is
unpickled. Without the variable the task uses a deterministic synthetic set
(:func:`synthetic`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedge.errors import TaskError
from fedge.tasks import DataSchema, Splits, Task, TrainDefaults
from fedge.tasks.sources import dataset_dir, with_proxy

if TYPE_CHECKING:
    from torch import nn

LABELS = ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing",
          "laying")
ENV = "FEDGE_UCI_HAR_DIR"
SIGNALS = ("total_acc_x", "total_acc_y", "total_acc_z", "body_gyro_x", "body_gyro_y",
           "body_gyro_z")
WINDOW = 128
SHAPE = (len(SIGNALS), WINDOW)


def _numbers(path: Path, columns: int | None) -> np.ndarray:
    if not path.is_file():
        raise TaskError(f"{path}: missing (expected the folder 'UCI HAR Dataset')")
    try:
        values = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise TaskError(f"{path}: not whitespace-separated numbers ({exc})") from exc
    if columns is not None and values.shape[1] != columns:
        raise TaskError(f"{path}: {values.shape[1]} numbers a line, expected {columns}")
    return values


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Windows (N, 6, 128) float32 and labels (N,) int64 (0..5) of split 'train' or
    'test'."""
    signals = [_numbers(directory / split / "Inertial Signals" / f"{s}_{split}.txt", WINDOW)
               for s in SIGNALS]
    labels = _numbers(directory / split / f"y_{split}.txt", 1)[:, 0].astype(np.int64) - 1
    if any(len(s) != len(labels) for s in signals):
        raise TaskError(f"{directory / split}: the signal files and y_{split}.txt hold "
                        "different numbers of windows")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= len(LABELS):
        raise TaskError(f"{directory / split}/y_{split}.txt: activities must be 1..6")
    return np.stack(signals, axis=1), labels


def read_uci_har(directory: Path) -> Splits:
    """The UCI HAR folder as Splits (proxy: 10% of its training windows)."""
    return with_proxy(*read_split(directory, "train"), *read_split(directory, "test"))


def synthetic(n_train: int = 900, n_test: int = 300, seed: int = 0) -> Splits:
    """A deterministic UCI HAR-shaped set with a learnable signal: the still activities
    differ in the gravity's direction (how the phone rests), the walking ones in their
    step rate and in how much gravity swings along the vertical axis, as on a waist."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / 50.0  # seconds at 50 Hz
    gravity = np.array([[1, 0, 0]] * 3 + [[0.8, 0.1, 0.55], [1, 0, 0.1], [0.1, 0.1, 1]],
                       np.float32)
    step_hz = np.array([1.8, 1.5, 2.1, 0, 0, 0], np.float32)
    swing = np.array([0.25, 0.35, 0.45, 0, 0, 0], np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % len(LABELS)
        rng.shuffle(y)
        x = rng.normal(0.0, 0.05, (n, *SHAPE)).astype(np.float32)
        for i in range(n):
            c = y[i]
            hz = step_hz[c] * rng.uniform(0.9, 1.1)
            phase = rng.uniform(0, 2 * np.pi)
            g = gravity[c] + rng.normal(0.0, 0.05, 3)
            gait = np.sin(2 * np.pi * hz * t + phase)
            x[i, :3] += g[:, None] * (1 + swing[c] * gait)[None]
            x[i, 3:] += swing[c] * np.cos(2 * np.pi * hz * t + phase + np.arange(3)[:, None])
        return x, y

    n_proxy = round(n_train / 9)  # the proxy is 10% of train + proxy
    train_x, train_y = draw(n_train + n_proxy)
    return with_proxy(train_x, train_y, *draw(n_test))


@lru_cache(maxsize=2)
def _splits(directory: Path | None) -> Splits:
    return synthetic() if directory is None else read_uci_har(directory)


def load_data() -> Splits:
    """UCI HAR from $FEDGE_UCI_HAR_DIR, or the synthetic set when it is unset."""
    return _splits(dataset_dir(ENV, "har-cnn"))


def cnn() -> nn.Module:
    """Teacher: a 1-D CNN of three convolutions over time (up to 64 channels), global
    average, a dense layer (about 24k parameters)."""
    from torch import nn

    def conv(cin: int, cout: int, k: int) -> list[nn.Module]:
        return [nn.Conv1d(cin, cout, k, padding=k // 2), nn.ReLU()]

    return nn.Sequential(
        *conv(len(SIGNALS), 32, 5), *conv(32, 64, 5), nn.MaxPool1d(2), *conv(64, 64, 3),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, len(LABELS)))


def cnn_student() -> nn.Module:
    """Student: two strided 1-D convolutions and a dense layer (about 1.9k parameters)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(len(SIGNALS), 16, 5, 2, 2), nn.ReLU(), nn.Conv1d(16, 16, 5, 2, 2),
        nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, len(LABELS)))


def cnn_task() -> Task:
    """Activity recognition on 6-axis inertial windows with a 1-D CNN."""
    return Task(
        name="har-cnn",
        schema=DataSchema(input_shape=SHAPE, labels=LABELS),
        build_model=cnn,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.05, batch_size=32, momentum=0.9),
        build_student=cnn_student,
        description="6-axis accelerometer and gyroscope windows of 128 samples (UCI HAR), "
                    "a 1-D CNN",
    )
