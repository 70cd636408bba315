"""Reads images (PNG, JPEG) through Pillow: the folder an image sits in names its class
(``camera/7/img-001.png`` is a 7), and each image is converted to the schema's mode,
resized to its image size and scaled, then shaped as the task's input.

Pillow is optional: without it image files are skipped with a reason that says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedge.client.data.schema import (
    BAD_SHAPE,
    NO_PILLOW,
    UNKNOWN_LABEL,
    UNREADABLE_IMAGE,
    ReadOptions,
    RecordChecker,
    RecordLog,
    Skip,
)
from fedge.edge.runtime.inputs import prepare
from fedge.tasks import DataSchema

Batch = tuple[np.ndarray, np.ndarray]


def image_size(schema: DataSchema) -> tuple[int, int] | None:
    """(height, width) of the schema's images: given, or read off its input shape."""
    return schema.image_hw()


def read_image(path: Path, checker: RecordChecker, options: ReadOptions,
               records: RecordLog) -> Iterator[Batch]:
    """Yields the image at path as a batch of one, labelled by its folder's name."""
    schema = checker.schema
    label = checker.label(path.parent.name)
    if label is None:
        raise Skip(UNKNOWN_LABEL, f"{path}: folder {path.parent.name!r} is not one of the "
                   f"task's labels")
    size = image_size(schema)
    if size is None:
        raise Skip(BAD_SHAPE, f"{path}: the task's input shape {list(schema.input_shape)} "
                   "is not an image; give the schema an image_size")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise Skip(NO_PILLOW, f"{path}: reading images needs Pillow: "
                   "pip install 'fedge[data]'") from exc
    try:
        with Image.open(path) as image:
            converted = image.convert(schema.image_mode).resize(
                (size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise Skip(UNREADABLE_IMAGE, f"{path}: {exc}") from exc
    if pixels.size != checker.width:
        raise Skip(BAD_SHAPE, f"{path}: a {schema.image_mode} image of {size[0]}x{size[1]} "
                   f"has {pixels.size} values, the task expects {checker.width}")
    # The steps the edge manifest records: the device trains on what its edge model is
    # later fed from the same raw image.
    x = prepare(pixels[None], schema.image_preprocessing())
    yield checker.keep(x, np.array([label], np.int64), records)
