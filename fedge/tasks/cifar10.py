"""Image classification on CIFAR-10-shaped data: 32x32 RGB images, 10 classes.

The data set is read from ``$FEDGE_CIFAR10_DIR``, the folder of the *binary version* of
CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extracted: the folder
``cifar-10-batches-bin``). The python version is a pickle and is never read. Its files:

- ``data_batch_1.bin`` .. ``data_batch_5.bin`` (training, 10,000 records each) and
  ``test_batch.bin`` (test, 10,000 records);
- each record is 3,073 bytes: one label byte (0..9), then 3,072 pixel bytes, the 1,024
  red values of the 32x32 image row by row, then the 1,024 green, then the 1,024 blue.

Pixels are scaled to 0..1 (channels first, as the client's image reader gives them), so a
device holding JPEG or PNG files trains the same model. Without the variable the task
uses a deterministic synthetic set of the same shapes (:func:`synthetic`).
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

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
          "truck")
ENV = "FEDGE_CIFAR10_DIR"
SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_FILE = "test_batch.bin"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) float32 in 0..1 and labels (N,) int64 of one .bin file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise TaskError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 "
                        f"records of {RECORD_BYTES} bytes (is it the binary version?)")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(LABELS):
        raise TaskError(f"{path}: label {labels.max()} is not a CIFAR-10 class (0..9)")
    images = records[:, 1:].reshape(-1, *SHAPE).astype(np.float32) / 255.0
    return images, labels


def read_cifar10(directory: Path) -> Splits:
    """The binary-version files of directory as Splits (proxy: 10% of training)."""
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (directory / n).is_file()]
    if missing:
        raise TaskError(f"{directory}: missing {', '.join(missing)} (expected the folder "
                        "cifar-10-batches-bin of the CIFAR-10 binary version)")
    train = [read_batch(directory / name) for name in TRAIN_FILES]
    test_x, test_y = read_batch(directory / TEST_FILE)
    return with_proxy(np.concatenate([x for x, _ in train]),
                      np.concatenate([y for _, y in train]), test_x, test_y)


def synthetic(n_train: int = 1200, n_test: int = 300, seed: int = 0) -> Splits:
    """A deterministic CIFAR-shaped set with a learnable signal: each class is a smooth
    random colour pattern (a 4x4 grid upsampled to 32x32, on a class colour), each image
    that pattern,
    shifted by up to 4 pixels and brightened or darkened, under pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, (len(LABELS), 3, 4, 4)).astype(np.float32)
    colours = rng.normal(0.0, 0.7, (len(LABELS), 3, 1, 1)).astype(np.float32)
    patterns = coarse.repeat(8, axis=2).repeat(8, axis=3) + colours  # (10, 3, 32, 32)
    n_proxy = round(n_train / 9)  # so that the proxy is 10% of train + proxy

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % len(LABELS)
        rng.shuffle(y)
        shifts = rng.integers(-4, 5, (n, 2))
        x = np.empty((n, *SHAPE), np.float32)
        for i in range(n):
            x[i] = np.roll(patterns[y[i]], tuple(shifts[i]), axis=(1, 2))
        x += rng.normal(0.0, 0.5, x.shape).astype(np.float32)
        return np.clip(0.5 + 0.25 * x, 0.0, 1.0).astype(np.float32), y

    train_x, train_y = draw(n_train + n_proxy)
    test_x, test_y = draw(n_test)
    return with_proxy(train_x, train_y, test_x, test_y)


@lru_cache(maxsize=2)
def _splits(directory: Path | None) -> Splits:
    return synthetic() if directory is None else read_cifar10(directory)


def load_data() -> Splits:
    """CIFAR-10 from $FEDGE_CIFAR10_DIR, or the synthetic set when it is unset."""
    return _splits(dataset_dir(ENV, "cifar10-resnet"))


def resnet() -> nn.Module:
    """Teacher: a ResNet-8 (three stages of one residual block, 16/32/64 channels, group
    norm instead of batch norm: no running statistics to average across non-IID clients,
    after Hsieh et al. 2020), about 78k parameters."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout),
                nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(4, cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(4, cout)))
            self.relu = nn.ReLU()

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.relu(self.body(x) + self.skip(x))

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.GroupNorm(4, 16), nn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(LABELS)))


def mobilenet_student() -> nn.Module:
    """Student: a MobileNet-style stack of depthwise-separable convolutions (plain conv
    and ReLU, which int8 QDQ quantisation handles whole), about 9k parameters."""
    from torch import nn

    def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1), nn.ReLU()]

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),  # 16x16
        *separable(16, 32, 2), *separable(32, 64, 2), *separable(64, 64, 1),  # 4x4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(LABELS)))


def resnet_task() -> Task:
    """CIFAR-10-shaped image classification with a ResNet-8 and a MobileNet-style
    student."""
    return Task(
        name="cifar10-resnet",
        schema=DataSchema(input_shape=SHAPE, labels=LABELS, image_size=(32, 32),
                          image_mode="RGB"),
        build_model=resnet,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.05, batch_size=32, momentum=0.9),
        build_student=mobilenet_student,
        description="32x32 RGB images in 10 classes (CIFAR-10), a ResNet-8",
    )
