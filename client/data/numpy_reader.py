"""Reads NumPy data: ``.npz`` archives of named arrays, and pairs of ``.npy`` files.

A ``.npy`` pair is an inputs file whose stem is the x key or ends in it (``x.npy``,
``train_x.npy``, ``train.x.npy``) and the labels file named the same with the y key.
``.npy`` files are memory-mapped, so a large one streams from disk in batches; archives
are read whole (numpy cannot map a member of a zip).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedge.client.data.schema import (
    CORRUPT,
    MISSING_ARRAY,
    UNPAIRED,
    WRONG_WIDTH,
    ReadOptions,
    RecordChecker,
    RecordLog,
    Skip,
)

Batch = tuple[np.ndarray, np.ndarray]


def read_npz(path: Path, checker: RecordChecker, options: ReadOptions,
             records: RecordLog) -> Iterator[Batch]:
    """Yields (x, y) batches from the archive's x and y arrays."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (options.x_key, options.y_key) if k not in archive.files]
            if missing:
                raise Skip(MISSING_ARRAY, f"{path}: no array {missing[0]!r} (it has "
                           f"{', '.join(archive.files) or 'none'})")
            x, y = archive[options.x_key], archive[options.y_key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise Skip(CORRUPT, f"{path}: not a readable .npz archive ({exc})") from exc
    yield from _batches(x, y, path, checker, options, records)


def labels_path(path: Path, options: ReadOptions) -> Path | None:
    """The labels file paired with an inputs .npy file, None if path is not one."""
    stem = path.stem
    for sep in ("", "_", ".", "-"):
        tail = sep + options.x_key
        if stem == options.x_key or (sep and stem.endswith(tail)):
            base = stem[: len(stem) - len(options.x_key)]
            return path.with_name(f"{base}{options.y_key}{path.suffix}")
    return None


def inputs_path(path: Path, options: ReadOptions) -> Path | None:
    """The inputs file a labels .npy file belongs to, None if path is not one."""
    stem = path.stem
    if stem == options.y_key or any(stem.endswith(s + options.y_key) for s in "_.-"):
        base = stem[: len(stem) - len(options.y_key)]
        return path.with_name(f"{base}{options.x_key}{path.suffix}")
    return None


def read_npy_pair(path: Path, checker: RecordChecker, options: ReadOptions,
                  records: RecordLog) -> Iterator[Batch]:
    """Yields (x, y) batches from an inputs .npy file and its labels file, mapped."""
    partner = labels_path(path, options)
    if partner is None or not partner.is_file():
        raise Skip(UNPAIRED, f"{path}: a .npy file needs a partner: inputs named "
                   f"'{options.x_key}.npy' or 'NAME_{options.x_key}.npy' beside labels "
                   f"'{options.y_key}.npy' or 'NAME_{options.y_key}.npy'")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        y = np.load(partner, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise Skip(CORRUPT, f"{path}: not a readable .npy pair ({exc})") from exc
    yield from _batches(x, y, path, checker, options, records)


def _batches(x: np.ndarray, y: np.ndarray, path: Path, checker: RecordChecker,
             options: ReadOptions, records: RecordLog) -> Iterator[Batch]:
    if x.ndim == 0 or y.ndim != 1 or len(x) != len(y):
        raise Skip(WRONG_WIDTH, f"{path}: inputs of shape {list(x.shape)} do not pair "
                   f"with labels of shape {list(y.shape)}")
    checker.inputs(x[:0], str(path))  # a wrong per-example shape skips the whole file
    if x.dtype.kind not in "fiub":
        raise Skip(CORRUPT, f"{path}: inputs have dtype {x.dtype}, expected numbers")
    for start in range(0, len(x), options.batch_rows):
        stop = start + options.batch_rows
        # np.array copies the slice out of a memory map, batch by batch.
        labels = checker.labels(np.array(y[start:stop]), str(path))
        yield checker.keep(np.array(x[start:stop]), labels, records)
