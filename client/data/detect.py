"""Tells a file's format from its first bytes, not from its name.

A device's folders hold whatever its sources wrote: a CSV saved as ``.txt``, a PNG
without an extension, a half-written archive. The extension is only a tie-breaker.
"""

from __future__ import annotations

from pathlib import Path

# Formats a reader exists for, plus the two that are skipped outright.
CSV, JSONL, NPY, NPZ, IMAGE = "csv", "jsonl", "npy", "npz", "image"
EMPTY, UNKNOWN = "empty", "unknown"

SNIFF_BYTES = 4096
_MAGIC = (
    (b"\x93NUMPY", NPY),
    (b"PK\x03\x04", NPZ),  # a zip archive; np.savez writes these
    (b"PK\x05\x06", NPZ),  # an empty zip archive
    (b"\x89PNG\r\n\x1a\n", IMAGE),
    (b"\xff\xd8\xff", IMAGE),  # JPEG
)
_DELIMITERS = ",;\t"


def sniff(path: Path) -> str:
    """The format of the file at path: csv, jsonl, npy, npz, image, empty or unknown.

    Raises OSError when the file cannot be opened.
    """
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> str:
    """The format of a file that starts with head (see :func:`sniff`)."""
    if not head.strip():
        return EMPTY
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"\x00" in head:
        return UNKNOWN  # binary, and none we read
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return JSONL
    if any(d in first for d in _DELIMITERS):
        return CSV
    return UNKNOWN


def delimiter(header: str) -> str:
    """The CSV delimiter a header line most likely uses (comma unless another wins)."""
    return max(_DELIMITERS, key=lambda d: (header.count(d), d == ","))
