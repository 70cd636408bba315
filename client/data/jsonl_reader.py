"""Reads JSON Lines: one object per line, its inputs under ``x`` (a flat or nested list
of numbers) and its label under ``y`` or the schema's label column (a name or index).

Lines are decoded one at a time, so a bad line (not UTF-8, not JSON, cut off by a
truncated write) is one skipped record, and the file streams in batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedge.client.data.schema import (
    BAD_ENCODING,
    MISSING_FIELD,
    NOT_A_NUMBER,
    NOT_JSON,
    UNKNOWN_LABEL,
    WRONG_WIDTH,
    ReadOptions,
    RecordChecker,
    RecordLog,
)

Batch = tuple[np.ndarray, np.ndarray]


def read_jsonl(path: Path, checker: RecordChecker, options: ReadOptions,
               records: RecordLog) -> Iterator[Batch]:
    """Yields (x, y) batches of the lines that fit; counts the others in records."""
    label_keys = (options.y_key, options.label_key(checker.schema))
    rows: list[np.ndarray] = []
    labels: list[int] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"line {number}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                records.skip(BAD_ENCODING, where)
                continue
            except json.JSONDecodeError as exc:
                records.skip(NOT_JSON, f"{where}: {exc.msg}")
                continue
            if not isinstance(obj, dict) or options.x_key not in obj:
                records.skip(MISSING_FIELD, f"{where}: no {options.x_key!r} field")
                continue
            key = next((k for k in label_keys if k in obj), None)
            if key is None:
                records.skip(MISSING_FIELD, f"{where}: no label field {label_keys[0]!r}")
                continue
            label = checker.label(obj[key])
            if label is None:
                records.skip(UNKNOWN_LABEL, f"{where}: label {str(obj[key])[:20]!r}")
                continue
            try:
                x = np.asarray(obj[options.x_key], dtype=np.float32).reshape(-1)
            except (ValueError, TypeError):
                records.skip(NOT_A_NUMBER, f"{where}: inputs are not a list of numbers")
                continue
            if x.size != checker.width:
                records.skip(WRONG_WIDTH, f"{where}: {x.size} values, expected "
                             f"{checker.width}")
                continue
            rows.append(x)
            labels.append(label)
            if len(rows) >= options.batch_rows:
                yield checker.keep(np.stack(rows), np.asarray(labels, np.int64), records)
                rows, labels = [], []
    if rows:
        yield checker.keep(np.stack(rows), np.asarray(labels, np.int64), records)
