"""Reads local training data from directories and files of ``.npz`` archives.

Each archive holds an input array ``x`` and an integer label array ``y``; every archive
is checked against the task's schema before it is used.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedge.errors import DataError, TaskError
from fedge.tasks import DataSchema

log = logging.getLogger(__name__)


def _files(paths: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.npz") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"data source {raw} does not exist")
    return found


def _read(path: Path, schema: DataSchema) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except KeyError as exc:
        raise DataError(f"{path}: no array {exc} (expected arrays 'x' and 'y')") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels 'y' must be integers, got {y.dtype}")
    try:
        schema.check(x, y, str(path))
    except TaskError as exc:
        raise DataError(str(exc)) from exc
    return x.astype(schema.input_dtype, copy=False), y.astype(np.int64, copy=False)


def load_local_data(paths: Iterable[str], schema: DataSchema) -> tuple[np.ndarray, np.ndarray]:
    """All examples under paths as (x, y); a file that does not fit raises DataError."""
    files = _files(paths)
    if not files:
        raise DataError("no .npz data files found in the given data sources")
    parts = [_read(f, schema) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    log.info("loaded %d examples from %d file(s)", len(x), len(files))
    return x, y
