"""Writers of real data files for the client data tests (a helper, not a test module)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from fedge.tasks import DataSchema

# Pillow is in the dev extra; a venv without it skips the tests that write images.
needs_pillow = pytest.mark.skipif(find_spec("PIL") is None,
                                  reason="needs Pillow: pip install -e '.[dev]'")

# A small image-like task: 4x4 grayscale, three named classes.
SCHEMA = DataSchema(input_shape=(16,), labels=("cat", "dog", "owl"), image_size=(4, 4),
                    pixel_scale=1.0 / 255.0)
CNN_SCHEMA = DataSchema(input_shape=(1, 4, 4), labels=("cat", "dog", "owl"))


def examples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n examples of SCHEMA whose values are exact pixels (k / 255)."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, size=(n, 16)) / 255.0).astype(np.float32)
    return x, (np.arange(n) % 3).astype(np.int64)


def write_csv(path: Path, x: np.ndarray, y: Sequence[object], header: str = "",
              extra: Sequence[str] = ()) -> Path:
    """A CSV with a header (f0.., label) and one row per example, then extra lines."""
    lines = [header or ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])]
    lines += [",".join(f"{v:.9g}" for v in row) + f",{label}" for row, label in
              zip(x, y, strict=True)]
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


def write_jsonl(path: Path, x: np.ndarray, y: Sequence[object],
                extra: Sequence[bytes] = ()) -> Path:
    """One {"x": [...], "y": label} object per line, then extra raw lines."""
    with path.open("wb") as f:
        for row, label in zip(x, y, strict=True):
            f.write(json.dumps({"x": row.tolist(), "y": label}).encode() + b"\n")
        for line in extra:
            f.write(line + b"\n")
    return path


def write_images(folder: Path, x: np.ndarray, y: np.ndarray, fmt: str = "PNG") -> list[Path]:
    """Each example as a 4x4 grayscale image in folder/<label name>/."""
    from PIL import Image

    paths = []
    for i, (row, label) in enumerate(zip(x, y, strict=True)):
        target = folder / SCHEMA.labels[label]
        target.mkdir(parents=True, exist_ok=True)
        pixels = np.rint(row.reshape(4, 4) * 255).astype(np.uint8)
        path = target / f"img-{i:03d}.{fmt.lower()}"
        Image.fromarray(pixels).save(path, format=fmt)
        paths.append(path)
    return paths
