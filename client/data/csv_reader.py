"""Reads CSV files with a header: one column holds the label, the others the inputs in
order. Streams in batches of rows, so memory stays flat whatever the file's size.

Text is decoded as UTF-8 with undecodable bytes kept as escapes, so one bad line is
skipped as "bad encoding" instead of ending the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedge.client.data.detect import delimiter
from fedge.client.data.schema import (
    BAD_ENCODING,
    CORRUPT,
    NO_LABEL_COLUMN,
    NOT_A_NUMBER,
    UNKNOWN_LABEL,
    WRONG_WIDTH,
    ReadOptions,
    RecordChecker,
    RecordLog,
    Skip,
    has_surrogates,
)

Batch = tuple[np.ndarray, np.ndarray]


def read_csv(path: Path, checker: RecordChecker, options: ReadOptions,
             records: RecordLog) -> Iterator[Batch]:
    """Yields (x, y) batches of the rows that fit; counts the others in records.

    Raises Skip when the header has no label column, or the file breaks off in a way
    the csv module cannot read past.
    """
    label_key = options.label_key(checker.schema)
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        header_line = f.readline()
        names = next(csv.reader([header_line], delimiter=delimiter(header_line)), [])
        names = [n.strip() for n in names]
        if label_key not in names:
            raise Skip(NO_LABEL_COLUMN, f"{path}: the header has no column {label_key!r}")
        label_at = names.index(label_key)
        columns = len(names)
        if columns - 1 != checker.width:
            raise Skip(WRONG_WIDTH, f"{path}: {columns - 1} input columns, the task "
                       f"expects {checker.width}")
        reader = csv.reader(f, delimiter=delimiter(header_line))
        rows: list[list[str]] = []
        labels: list[int] = []
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != columns:
                    records.skip(WRONG_WIDTH, f"line {reader.line_num + 1}: {len(row)} "
                                 f"fields, expected {columns}")
                    continue
                label = checker.label(row[label_at])
                if label is None:
                    records.skip(BAD_ENCODING if has_surrogates(row[label_at:label_at + 1])
                                 else UNKNOWN_LABEL, f"line {reader.line_num + 1}")
                    continue
                del row[label_at]
                rows.append(row)
                labels.append(label)
                if len(rows) >= options.batch_rows:
                    yield _batch(rows, labels, checker, records)
                    rows, labels = [], []
        except csv.Error as exc:
            raise Skip(CORRUPT, f"{path}: line {reader.line_num + 1}: {exc}") from exc
        if rows:
            yield _batch(rows, labels, checker, records)


def _batch(rows: list[list[str]], labels: list[int], checker: RecordChecker,
           records: RecordLog) -> Batch:
    """Rows of text as numbers; a batch that does not convert is retried row by row."""
    y = np.asarray(labels, dtype=np.int64)
    try:
        x = np.asarray(rows, dtype=np.float32)
    except ValueError:
        good = []
        for i, row in enumerate(rows):
            try:
                np.asarray(row, dtype=np.float32)
                good.append(i)
            except ValueError:
                records.skip(BAD_ENCODING if has_surrogates(row) else NOT_A_NUMBER,
                             "a value that is not a number")
        x = np.asarray([rows[i] for i in good], dtype=np.float32).reshape(len(good), -1)
        y = y[good]
    return checker.keep(x, y, records)
