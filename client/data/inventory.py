"""What a scan of the device's data found: per source, files and records read and
skipped (and why), formats and a label histogram.

Only counts leave the device: :meth:`Inventory.metrics` flattens them into the
``name -> number`` map an update carries; file names go in it only on request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileReport:
    """One file's scan: its format, the records kept, the records skipped by reason,
    and, when the whole file was skipped, why (skip is empty otherwise)."""

    path: str
    format: str
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    labels: Counter[int] = field(default_factory=Counter)
    skip: str = ""


@dataclass
class SourceReport:
    """The sum of one declared source's files (a directory, a file or a glob)."""

    source: str
    files: int = 0
    records: int = 0
    files_skipped: Counter[str] = field(default_factory=Counter)
    records_skipped: Counter[str] = field(default_factory=Counter)
    labels: Counter[int] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    skipped_paths: list[str] = field(default_factory=list)

    def add(self, report: FileReport) -> None:
        """Counts one file's report in this source."""
        if report.skip:
            self.files_skipped[report.skip] += 1
            self.skipped_paths.append(report.path)
            return
        self.files += 1
        self.formats[report.format] += 1
        self.records += report.records
        self.records_skipped.update(report.skipped)
        self.labels.update(report.labels)


@dataclass
class Inventory:
    """All sources of one scan."""

    sources: list[SourceReport]
    label_names: tuple[str, ...]

    @property
    def records(self) -> int:
        """Examples that fit, over all sources."""
        return sum(s.records for s in self.sources)

    @property
    def files(self) -> int:
        """Files read, over all sources."""
        return sum(s.files for s in self.sources)

    @property
    def files_skipped(self) -> int:
        """Files skipped whole, over all sources."""
        return sum(sum(s.files_skipped.values()) for s in self.sources)

    @property
    def records_skipped(self) -> int:
        """Records skipped inside files read, over all sources."""
        return sum(sum(s.records_skipped.values()) for s in self.sources)

    def _total(self, name: str) -> Counter[Any]:
        total: Counter[Any] = Counter()
        for s in self.sources:
            total.update(getattr(s, name))
        return total

    def metrics(self, file_names: bool = False) -> dict[str, float]:
        """Counts for the server: examples, files, skips by reason, the label histogram.

        file_names: also name each skipped file (a debugging aid; off by default, so
        that nothing but counts leaves the device).
        """
        out: dict[str, float] = {
            "data_examples": float(self.records), "data_files": float(self.files),
            "data_files_skipped": float(self.files_skipped),
            "data_records_skipped": float(self.records_skipped)}
        for label, count in sorted(self._total("labels").items()):
            out[f"data_label/{self.label_names[label]}"] = float(count)
        for reason, count in sorted(self._total("files_skipped").items()):
            out[f"data_file_skip/{reason}"] = float(count)
        for reason, count in sorted(self._total("records_skipped").items()):
            out[f"data_record_skip/{reason}"] = float(count)
        if file_names:
            for s in self.sources:
                for path in s.skipped_paths:
                    out[f"data_skipped_file/{path}"] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """The inventory as plain JSON-ready values (file names included: it is local)."""
        return {"records": self.records, "files": self.files,
                "files_skipped": self.files_skipped, "records_skipped": self.records_skipped,
                "sources": [{
                    "source": s.source, "files": s.files, "records": s.records,
                    "formats": dict(s.formats),
                    "files_skipped": dict(s.files_skipped),
                    "records_skipped": dict(s.records_skipped),
                    "labels": {self.label_names[k]: v for k, v in sorted(s.labels.items())},
                    "skipped_paths": s.skipped_paths} for s in self.sources]}

    def format_table(self) -> str:
        """A table per source, as ``fedge data inspect`` prints it."""
        blocks = []
        for s in self.sources:
            rows = [("source", s.source),
                    ("files", f"{s.files} read ({_counts(s.formats)}), "
                              f"{sum(s.files_skipped.values())} skipped"),
                    ("records", f"{s.records} read, {sum(s.records_skipped.values())} "
                                "skipped")]
            rows += [("  file skipped", f"{n}  {why}") for why, n in
                     s.files_skipped.most_common()]
            rows += [("  record skipped", f"{n}  {why}") for why, n in
                     s.records_skipped.most_common()]
            rows.append(("labels", "  ".join(f"{self.label_names[k]}:{v}"
                                             for k, v in sorted(s.labels.items())) or "-"))
            width = max(len(k) for k, _ in rows)
            blocks.append("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        blocks.append(f"total: {self.records} records in {self.files} files; skipped "
                      f"{self.files_skipped} files and {self.records_skipped} records")
        return "\n\n".join(blocks)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"
