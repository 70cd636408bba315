"""Checks records against a task's :class:`DataSchema`: what fits is kept, what does not
is counted under a short reason and logged on the device.

Reasons are fixed categories (no file names, no values) so that their counts may leave
the device; the one-line log message that goes with each names the file and the detail.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedge.tasks import DataSchema

log = logging.getLogger(__name__)

# Why a whole file is skipped.
EMPTY_FILE = "empty file"
UNKNOWN_FORMAT = "unknown format"
CORRUPT = "truncated or corrupt"
UNREADABLE = "unreadable file"
UNREADABLE_IMAGE = "unreadable image"
NO_PILLOW = "Pillow not installed"
NO_LABEL_COLUMN = "no label column"
MISSING_ARRAY = "missing array"
UNPAIRED = "unpaired .npy"
BAD_SHAPE = "wrong shape"
BAD_LABELS = "labels not integers"
# Why one record is skipped (an image file is one record, skipped as a file).
WRONG_WIDTH = "wrong width"
UNKNOWN_LABEL = "unknown label"
NOT_A_NUMBER = "not a number"
NOT_FINITE = "NaN or infinite"
BAD_ENCODING = "bad encoding"
NOT_JSON = "not JSON"
MISSING_FIELD = "missing field"

# Record-level skips logged per file before the rest are only counted.
LOGGED_PER_FILE = 5


class Skip(Exception):
    """A file that cannot be used at all.

    reason: one of the categories above (safe to report); detail: for the local log.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class RecordLog:
    """Counts the records of one file that were skipped, logging the first few."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.counts: Counter[str] = Counter()

    def skip(self, reason: str, detail: str, count: int = 1) -> None:
        """Counts count records skipped for reason; logs one line while few were."""
        if count <= 0:
            return
        logged = sum(self.counts.values())
        self.counts[reason] += count
        if logged < LOGGED_PER_FILE:
            log.warning("%s: skipped %d record(s): %s (%s)", self.where, count, reason, detail)


class RecordChecker:
    """Fits records to a schema: reshapes flat inputs, maps labels, drops misfits."""

    def __init__(self, schema: DataSchema) -> None:
        self.schema = schema
        self.width = math.prod(schema.input_shape)
        # A label is given by name ("cat") or by index ("2"); names win a clash.
        self._by_text = {str(i): i for i in range(schema.num_classes)}
        self._by_text.update({name: i for i, name in enumerate(schema.labels)})

    def label(self, value: object) -> int | None:
        """The class index of a label given as a name or an index, None if unknown."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int | np.integer):
            return int(value) if 0 <= value < self.schema.num_classes else None
        if isinstance(value, float | np.floating):
            if not math.isfinite(value) or not float(value).is_integer():
                return None
            return self.label(int(value))
        if isinstance(value, str):
            text = value.strip()
            found = self._by_text.get(text)
            if found is not None:
                return found
            try:
                return self.label(float(text))
            except ValueError:
                return None
        return None

    def labels(self, values: np.ndarray, where: str) -> np.ndarray:
        """A label array (integers or names) as int64 indices, -1 where unknown.

        Raises Skip when the array holds neither integers nor text.
        """
        if values.dtype.kind in "iu":
            out = values.astype(np.int64)
            out[(out < 0) | (out >= self.schema.num_classes)] = -1
            return out
        if values.dtype.kind in "US":
            return np.array([self._text_label(v) for v in values.tolist()], dtype=np.int64)
        raise Skip(BAD_LABELS, f"{where}: labels have dtype {values.dtype}, expected "
                   "integers or label names")

    def _text_label(self, value: str | bytes) -> int:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        found = self.label(text)
        return -1 if found is None else found

    def inputs(self, x: np.ndarray, where: str) -> np.ndarray:
        """x reshaped to (n, *input_shape), from that shape or flat rows of the same size.

        Raises Skip when the per-example shape fits neither.
        """
        shape = self.schema.input_shape
        if tuple(x.shape[1:]) == shape:
            return x
        if x.ndim >= 1 and math.prod(x.shape[1:]) == self.width:
            return x.reshape((len(x), *shape))
        raise Skip(BAD_SHAPE, f"{where}: examples have shape {list(x.shape[1:])}, the task "
                   f"expects {list(shape)} (or {self.width} values flat)")

    def keep(self, x: np.ndarray, y: np.ndarray,
             records: RecordLog) -> tuple[np.ndarray, np.ndarray]:
        """The records of a batch that fit: known labels and, unless allowed, finite
        inputs, cast to the schema's dtype. y holds indices with -1 for unknown."""
        x = self.inputs(x, records.where)
        ok = y >= 0
        records.skip(UNKNOWN_LABEL, f"labels outside {self.schema.num_classes} classes",
                     int((~ok).sum()))
        if not self.schema.allow_nan and x.dtype.kind == "f" and len(x):
            finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            bad = ok & ~finite
            records.skip(NOT_FINITE, "inputs with NaN or infinite values", int(bad.sum()))
            ok &= finite
        if not ok.all():
            x, y = x[ok], y[ok]
        return x.astype(self.schema.input_dtype, copy=False), y.astype(np.int64, copy=False)


def has_surrogates(fields: Sequence[str]) -> bool:
    """Whether text decoded with errors="surrogateescape" held bytes that were not UTF-8."""
    return any(any("\udc80" <= ch <= "\udcff" for ch in f) for f in fields)



@dataclass(frozen=True)
class ReadOptions:
    """How a device's files name their fields, where they differ from the defaults.

    label_column: CSV column of the label ("" = the schema's); JSON Lines take it too.
    x_key, y_key: array names in .npz archives (and .npy pairs: ``x.npy``/``y.npy``,
        ``NAME_x.npy``/``NAME_y.npy``), and JSON Lines keys of inputs and labels.
    batch_rows: records per batch when streaming a large file.
    """

    label_column: str = ""
    x_key: str = "x"
    y_key: str = "y"
    batch_rows: int = 4096

    def label_key(self, schema: DataSchema) -> str:
        """The CSV column holding labels."""
        return self.label_column or schema.label_column
