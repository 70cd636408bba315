"""The device's data sources: declared paths (a directory, a file or a glob) expanded to
files, each read by the reader its content calls for, with an index of sizes and
modification times so that a rescan rereads only what changed.

Nothing here stops the daemon: a file that cannot be used is skipped with a reason,
counted and logged. :func:`load_local_data` is the one-shot form the CLI and the
simulator used before rescans existed; :class:`LocalData` keeps the index between
rounds; :func:`inspect_sources` streams everything and keeps only counts.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.client.data import detect
from fedge.client.data.csv_reader import read_csv
from fedge.client.data.holdout import content_keys
from fedge.client.data.images import read_image
from fedge.client.data.inventory import FileReport, Inventory, SourceReport
from fedge.client.data.jsonl_reader import read_jsonl
from fedge.client.data.numpy_reader import inputs_path, labels_path, read_npy_pair, read_npz
from fedge.client.data.schema import (
    EMPTY_FILE,
    UNKNOWN_FORMAT,
    UNREADABLE,
    ReadOptions,
    RecordChecker,
    RecordLog,
    Skip,
)
from fedge.errors import DataError
from fedge.tasks import DataSchema

log = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray]
Reader = Callable[[Path, RecordChecker, ReadOptions, RecordLog], Iterator[Batch]]
READERS: dict[str, Reader] = {
    detect.CSV: read_csv, detect.JSONL: read_jsonl, detect.NPZ: read_npz,
    detect.NPY: read_npy_pair, detect.IMAGE: read_image}
# (size, mtime in ns) of a file, and of its partner for a .npy pair.
Signature = tuple[int, ...]
_GLOB_CHARS = set("*?[")


def expand(source: str) -> list[Path]:
    """The files a declared source names, sorted; hidden files and folders are left
    out (editors and copy tools write those while they work)."""
    if _GLOB_CHARS & set(source):
        found = [Path(p) for p in glob.glob(source, recursive=True)]
        files = [p for p in found if p.is_file()]
        for d in (p for p in found if p.is_dir()):
            files.extend(_walk(d))
    elif os.path.isdir(source):
        files = _walk(Path(source))
    elif os.path.isfile(source):
        files = [Path(source)]
    else:
        files = []
    return sorted(set(files))


def _nothing_in(source: str) -> str:
    """Why a source gave no files: it is not there, or it is there but empty."""
    if _GLOB_CHARS & set(source):
        return "matches no files"
    return "holds no files" if os.path.exists(source) else "does not exist"


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(folder, n) for n in names
                   if not n.startswith(".") and not n.endswith("~"))
    return out


def _signature(path: Path, partner: Path | None) -> Signature | None:
    try:
        st = path.stat()
        sig: Signature = (st.st_size, st.st_mtime_ns)
        if partner is not None and partner.is_file():
            pst = partner.stat()
            sig += (pst.st_size, pst.st_mtime_ns)
        return sig
    except OSError:
        return None  # gone between the listing and the stat


def _units(files: list[Path], options: ReadOptions) -> list[tuple[Path, Path | None]]:
    """Files to read, each with the partner whose changes it depends on: a labels .npy
    is read with its inputs file, not on its own."""
    present = set(files)
    units: list[tuple[Path, Path | None]] = []
    for path in files:
        if path.suffix == ".npy":
            owner = inputs_path(path, options)
            if owner is not None and owner in present:
                continue
            units.append((path, labels_path(path, options)))
        else:
            units.append((path, None))
    return units


def scan_file(path: Path, checker: RecordChecker, options: ReadOptions,
              keep: bool) -> tuple[FileReport, list[Batch]]:
    """Reads one file: its report and, if keep, the batches that fit.

    A file that fails part way is skipped whole, so a rescan never counts half of it.
    """
    try:
        kind = detect.sniff(path)
    except OSError as exc:
        log.warning("%s: skipped: %s (%s)", path, UNREADABLE, exc)
        return FileReport(str(path), detect.UNKNOWN, skip=UNREADABLE), []
    report = FileReport(str(path), kind)
    if kind in (detect.EMPTY, detect.UNKNOWN):
        report.skip = EMPTY_FILE if kind == detect.EMPTY else UNKNOWN_FORMAT
        log.warning("%s: skipped: %s", path, report.skip)
        return report, []
    records = RecordLog(str(path))
    batches: list[Batch] = []
    try:
        for x, y in READERS[kind](path, checker, options, records):
            report.records += len(y)
            counts = np.bincount(y, minlength=checker.schema.num_classes)
            report.labels.update({i: int(c) for i, c in enumerate(counts) if c})
            if keep:
                batches.append((x, y))
    except Skip as exc:
        log.warning("%s: skipped: %s (%s)", path, exc.reason,
                    exc.detail.removeprefix(f"{path}: "))
        return FileReport(str(path), kind, skip=exc.reason), []
    except (OSError, UnicodeError) as exc:
        log.warning("%s: skipped: %s (%s)", path, UNREADABLE, exc)
        return FileReport(str(path), kind, skip=UNREADABLE), []
    report.skipped = records.counts
    if report.records == 0 and not report.skipped:
        report.skip = EMPTY_FILE
        log.warning("%s: skipped: %s (no records)", path, EMPTY_FILE)
    elif report.skipped:
        log.info("%s: %d record(s) read, %d skipped", path, report.records,
                 sum(report.skipped.values()))
    return report, batches


@dataclass
class _Entry:
    signature: Signature
    report: FileReport
    x: np.ndarray
    y: np.ndarray


class LocalData:
    """The device's sources, read once and then rescanned cheaply: a file whose size
    and modification time are unchanged is not read again."""

    def __init__(self, sources: Iterable[str], schema: DataSchema,
                 options: ReadOptions | None = None) -> None:
        self.sources = tuple(sources)
        self.schema = schema
        self.options = options or ReadOptions()
        self._checker = RecordChecker(schema)
        self._index: dict[Path, _Entry] = {}
        self._order: list[tuple[str, list[Path]]] = []
        self._empty_x = np.zeros((0, *schema.input_shape), dtype=schema.input_dtype)

    def rescan(self) -> bool:
        """Brings the index up to date with the disk; True if anything changed."""
        changed = False
        order: list[tuple[str, list[Path]]] = []
        seen: set[Path] = set()
        for source in self.sources:
            files = expand(source)
            if not files:
                log.warning("data source %s %s", source, _nothing_in(source))
            paths = []
            for path, partner in _units(files, self.options):
                signature = _signature(path, partner)
                if path in seen or signature is None:
                    continue  # named by an earlier source too, or gone since the listing
                seen.add(path)
                paths.append(path)
                entry = self._index.get(path)
                if entry is not None and entry.signature == signature:
                    continue
                report, batches = scan_file(path, self._checker, self.options, keep=True)
                x = (np.concatenate([b[0] for b in batches]) if batches else self._empty_x)
                y = (np.concatenate([b[1] for b in batches]) if batches
                     else np.zeros(0, np.int64))
                self._index[path] = _Entry(signature, report, x, y)
                changed = True
            order.append((source, paths))
        for gone in set(self._index) - seen:
            del self._index[gone]
            changed = True
        self._order = order
        return changed

    def arrays(self, by_content: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All examples that fit, as (x, y), in an order set by their content alone
        (or, by_content=False, in source then file order).

        Local training shuffles by index with a seed from the server, so an order that
        followed the files would make the same examples train differently once they are
        renamed, moved or split into other files; ordering by content makes it not.
        """
        entries = [self._index[p] for _, paths in self._order for p in paths
                   if p in self._index]
        if not entries:
            return self._empty_x, np.zeros(0, np.int64)
        if len(entries) == 1:
            x, y = entries[0].x, entries[0].y
        else:
            x = np.concatenate([e.x for e in entries])
            y = np.concatenate([e.y for e in entries])
        if not by_content or len(y) == 0:  # no examples: nothing to order
            return x, y
        order = content_order(x, y)
        return x[order], y[order]

    def inventory(self) -> Inventory:
        """The counts of the last scan, per source."""
        reports = []
        for source, paths in self._order:
            report = SourceReport(source)
            for p in paths:
                if p in self._index:
                    report.add(self._index[p].report)
            reports.append(report)
        return Inventory(reports, self.schema.labels)


def content_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A permutation that sorts examples by a 64-bit hash of their bytes and label
    (ties, such as exact duplicates, keep their order)."""
    return np.argsort(content_keys(x, y), kind="stable")


def inspect_sources(sources: Iterable[str], schema: DataSchema,
                    options: ReadOptions | None = None) -> Inventory:
    """Scans sources and keeps only counts: memory stays at one batch per file."""
    options = options or ReadOptions()
    checker = RecordChecker(schema)
    reports = []
    seen: set[Path] = set()
    for source in sources:
        report = SourceReport(source)
        files = expand(source)
        if not files:
            log.warning("data source %s %s", source, _nothing_in(source))
        for path, _ in _units(files, options):
            if path not in seen:  # a file two sources name is counted once, in the first
                seen.add(path)
                report.add(scan_file(path, checker, options, keep=False)[0])
        reports.append(report)
    return Inventory(reports, schema.labels)


def load_local_data(paths: Iterable[str], schema: DataSchema,
                    options: ReadOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All examples that fit under paths as (x, y), in source then file order; raises
    DataError if there are none."""
    data = LocalData(paths, schema, options)
    data.rescan()
    x, y = data.arrays(by_content=False)
    inventory = data.inventory()
    if len(y) == 0:
        raise DataError(f"no usable examples in {', '.join(data.sources)}: "
                        f"{inventory.files_skipped} file(s) and {inventory.records_skipped} "
                        "record(s) skipped (see the log, or run fedge data inspect)")
    log.info("loaded %d examples from %d file(s); skipped %d file(s), %d record(s)",
             len(y), inventory.files, inventory.files_skipped, inventory.records_skipped)
    return x, y
