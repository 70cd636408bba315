"""Opening a state directory's SQLite database, where every way it cannot be used (a
path under a regular file, no permission, a read-only disk, a file that is not a
database) becomes one message a person can act on, not a traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from fedge.errors import FedgeError


def unusable(root: Path, exc: BaseException) -> FedgeError:
    """The error for a state directory that cannot be used, naming the cause."""
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return FedgeError(f"cannot use the state dir {root}: {cause}; give --state-dir a "
                      "directory this user can create and write, or fix its permissions")


def make_dirs(root: Path, *dirs: Path) -> None:
    """Creates the state directory (and folders under it), or says why it cannot."""
    try:
        for d in (root, *dirs):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable(root, exc) from exc


def open_db(root: Path, pragmas: Iterable[str], schema: str) -> sqlite3.Connection:
    """The state dir's fedge.db, created if missing, with its pragmas and schema set."""
    make_dirs(root)
    db = None
    try:
        db = sqlite3.connect(root / "fedge.db", check_same_thread=False, timeout=10)
        for pragma in pragmas:
            db.execute(pragma)
        db.executescript(schema)
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise unusable(root, exc) from exc
    return db
