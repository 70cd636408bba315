"""Raw inputs made into model inputs, as an artifact's manifest describes it.

The manifest's ``input.preprocessing`` says what a raw input is (``raw``: an image of a
given mode and size with pixel values in a range, or a tensor of a given shape) and the
steps that turn a batch of raw inputs into the model's input (``steps``, applied in
order, each to the whole batch, the batch axis first):

- ``{"op": "scale", "factor": f}``: x * f;
- ``{"op": "normalize", "mean": [...], "std": [...]}``: (x - mean) / std, per channel,
  the channel being the last axis of a raw HWC image;
- ``{"op": "transpose", "axes": [...]}``: one example's axes permuted (HWC -> CHW is
  ``[2, 0, 1]``);
- ``{"op": "reshape", "shape": [...]}``: one example's shape;
- ``{"op": "cast", "dtype": "float32"}``.

The steps are plain data so that a runtime in another language can apply them; this
module is the reference (numpy only), and the client's image reader uses it too, so a
device trains on what the edge model is later fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import FedgeError

OPS = ("scale", "normalize", "transpose", "reshape", "cast")


def prepare(raw: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """A batch of raw inputs (batch axis first) as the model's input."""
    x = np.asarray(raw, dtype=np.float64)
    for step in preprocessing.get("steps", []):
        op = step.get("op")
        if op == "scale":
            x = x * float(step["factor"])
        elif op == "normalize":
            x = (x - np.asarray(step["mean"], np.float64)) / np.asarray(step["std"], np.float64)
        elif op == "transpose":
            x = x.transpose(0, *(int(a) + 1 for a in step["axes"]))
        elif op == "reshape":
            x = x.reshape((len(x), *(int(d) for d in step["shape"])))
        elif op == "cast":
            x = x.astype(np.dtype(step["dtype"]))
        else:
            raise FedgeError(f"unknown preprocessing step {op!r}; known: {', '.join(OPS)}")
    return x


def load_images(paths: Sequence[str | Path], raw: dict[str, Any]) -> np.ndarray:
    """Image files decoded as the manifest's raw input: converted to its mode and
    resized to its size (bilinear), as a uint8 batch (needs Pillow)."""
    if raw.get("kind") != "image":
        raise FedgeError("this model's inputs are not images; give a .npy of raw inputs")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise FedgeError("reading image files needs Pillow: pip install Pillow") from exc
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                converted = image.convert(raw["mode"]).resize(
                    (int(raw["width"]), int(raw["height"])), Image.Resampling.BILINEAR)
                images.append(np.asarray(converted))
        except (OSError, ValueError, UnidentifiedImageError) as exc:
            raise FedgeError(f"cannot read the image {path}: {exc}") from exc
    return np.stack(images)
