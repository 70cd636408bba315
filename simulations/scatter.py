"""Writes a client's share the way a real device holds its data: scattered over several
folders in mixed formats, with a few broken files, so that a simulation runs the real
readers end to end.

One client's directory after :func:`write_scatter`::

    exports/table.csv        CSV with a header (inputs f0.., then the label by name)
    exports/empty.csv        0 bytes                         (corrupt: empty file)
    arrays/batch.npz         x and y arrays
    arrays/partial.npz       the first half of an archive    (corrupt: truncated)
    logs/records.jsonl       {"x": [...], "label": "7"} per line
    camera/<label>/*.png     8-bit grayscale images, one folder per class (when the
                             task's examples are images: see _images_fit)
    camera/<label>/bad.png   a PNG signature and noise       (corrupt: unreadable image)
    notes/blob.bin           random bytes                    (corrupt: unknown format)

Every example of the share lands in exactly one good file. The CSV and JSON Lines files
also get a few bad records on top (a short row, an unknown label, a line cut off, a line
that is not UTF-8), which the readers skip without losing a good one.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.tasks import DataSchema

# Bad records written on top of the good ones in each client's CSV and JSON Lines files.
BAD_RECORDS = 4


@dataclass(frozen=True)
class Scatter:
    """What was written for one client: the directory, its good examples, and how many
    corrupt files and bad records were planted in it."""

    directory: Path
    examples: int
    corrupt_files: int
    bad_records: int


def _images_fit(x: np.ndarray, schema: DataSchema) -> tuple[int, int] | None:
    """(height, width) when x can be stored as 8-bit grayscale images: Pillow is
    installed, one channel, and every value a pixel (0..255) times the schema's pixel
    scale, so that reading the image back gives exactly the same example."""
    import importlib.util

    from fedge.client.data.images import image_size

    if importlib.util.find_spec("PIL") is None:  # Pillow is optional (the data extra)
        return None
    size = image_size(schema)
    if size is None or schema.image_mode != "L" or not len(x) or size[0] * size[1] != \
            math.prod(schema.input_shape):
        return None
    pixels = x / np.float32(schema.pixel_scale)
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.rint(pixels)):
        return None
    return size


def write_scatter(x: np.ndarray, y: np.ndarray, schema: DataSchema, directory: Path,
                  seed: int) -> Scatter:
    """Writes examples (x, y) under directory as a scatter of formats (see the module)."""
    rng = np.random.default_rng(seed)
    flat = x.reshape(len(x), -1)
    size = _images_fit(x, schema)
    formats = ["csv", "npz", "jsonl"] + (["png"] if size else [])
    order = rng.permutation(len(x))
    shares = dict(zip(formats, np.array_split(order, len(formats)), strict=True))
    names = schema.labels
    for sub in ("exports", "arrays", "logs", "notes"):
        (directory / sub).mkdir(parents=True, exist_ok=True)

    header = [f"f{i}" for i in range(flat.shape[1])] + [schema.label_column]
    lines = [",".join(header)]
    for i in shares["csv"]:
        lines.append(",".join(f"{v:.9g}" for v in flat[i]) + f",{names[y[i]]}")
    lines.append("0.5,0.5")  # a short row
    lines.append(",".join(["0"] * flat.shape[1]) + ",no-such-label")
    (directory / "exports" / "table.csv").write_text("\n".join(lines) + "\n")

    index = shares["npz"]
    np.savez(directory / "arrays" / "batch.npz", x=x[index], y=y[index])

    with (directory / "logs" / "records.jsonl").open("wb") as f:
        for i in shares["jsonl"]:
            record = {"x": [float(v) for v in flat[i]], schema.label_column: names[y[i]]}
            f.write(json.dumps(record).encode() + b"\n")
        f.write(b'{"x": [0.1, \xff\xfe], "label": "0"}\n')  # not UTF-8
        f.write(b'{"x": [0.1, 0.2, 0.')  # cut off mid-write

    corrupt = _write_corrupt(directory, rng)
    if size:
        from PIL import Image

        for n, i in enumerate(shares["png"]):
            folder = directory / "camera" / names[y[i]]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.rint(flat[i].reshape(size) / schema.pixel_scale).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img-{n:05d}.png")
        (directory / "camera" / names[y[shares["png"][0]]] / "bad.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + rng.bytes(64))
        corrupt += 1
    return Scatter(directory, len(x), corrupt, BAD_RECORDS)


def _write_corrupt(directory: Path, rng: np.random.Generator) -> int:
    """Plants the broken files every scatter has; returns how many."""
    (directory / "exports" / "empty.csv").write_bytes(b"")
    archive = io.BytesIO()
    np.savez(archive, x=np.zeros((50, 4), np.float32), y=np.zeros(50, np.int64))
    whole = archive.getvalue()
    (directory / "arrays" / "partial.npz").write_bytes(whole[: len(whole) // 2])
    (directory / "notes" / "blob.bin").write_bytes(b"\x00\x01" + rng.bytes(200))
    return 3


def write_scatters(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray],
                   schema: DataSchema, out: str | Path, seed: int = 0) -> list[Scatter]:
    """Writes OUT/client-K as a scatter of part K for each part."""
    return [write_scatter(x[index], y[index], schema, Path(out) / f"client-{k}", seed + k)
            for k, index in enumerate(parts)]
