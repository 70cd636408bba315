"""The state directory: a safetensors checkpoint per committed round and a SQLite
record of rounds and metrics.

A commit writes the checkpoint to a temporary file, fsyncs it, renames it into place,
and only then records the round in one SQLite transaction: a crash at any point leaves
the last committed round whole, and a checkpoint without a database row is ignored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fedge.errors import FedgeError
from fedge.server.state_db import make_dirs, open_db
from fedge.tensors import sha256_hex

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    accuracy REAL,
    loss REAL,
    clients INTEGER NOT NULL,
    examples INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    seconds REAL NOT NULL,
    committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    round INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    canaries TEXT NOT NULL,
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL
);
"""


@dataclass(frozen=True)
class RoundRecord:
    """What the server records about a committed round (round 0 is the initial model).

    accuracy and loss are the global model's on the task's test split; None while the
    round is not evaluated (its evaluation runs after the commit, or was skipped:
    fedge.server.eval_worker)."""

    round: int
    accuracy: float | None
    loss: float | None
    clients: int
    examples: int
    bytes_up: int
    bytes_down: int
    seconds: float
    sha256: str = ""
    sampled: int = 0  # devices handed the round's TRAIN task (not kept in the database)
    # With DP: epsilon after this round (kept in the metrics table, see server/budget.py).
    epsilon: float | None = None

    def to_dict(self) -> dict[str, float | int | str]:
        """The recorded fields (sampled and epsilon, which the rounds table does not
        keep, left out)."""
        values = asdict(self)
        values.pop("sampled")
        values.pop("epsilon")
        return values


class StateStore:
    """Checkpoints and the round database under one state directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.checkpoints = self.root / "checkpoints"
        make_dirs(self.root, self.checkpoints)
        self._lock = threading.Lock()
        # WAL: `fedge tokens` may write while the server runs; FULL: a commit is on disk.
        self._db = open_db(self.root, ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"),
                           SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check_task(self, task: str, fingerprint: list[str]) -> None:
        """Records the run's task on first use; refuses a state dir made for another."""
        value = json.dumps({"task": task, "fingerprint": fingerprint})
        with self._lock, self._db:
            row = self._db.execute("SELECT value FROM meta WHERE key='task'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('task', ?)", (value,))
            elif row[0] != value:
                old = json.loads(row[0])["task"]
                raise FedgeError(f"state dir {self.root} holds a run of task {old!r} with "
                                 "other parameters; use a fresh --state-dir")

    def recorded_task(self) -> str | None:
        """The task name this state dir was made for, or None if it is new."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='task'").fetchone()
        return None if row is None else str(json.loads(row[0])["task"])

    def metric_values(self, round_: int, source: str, name: str) -> dict[str, float]:
        """The last value of one metric per device for a round, e.g. on-device accuracy."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, value FROM metrics WHERE round=? AND source=? AND name=? "
                "ORDER BY rowid", (round_, source, name)).fetchall()
        return {str(device): float(value) for device, value in rows}

    def metric_rows(self, source: str) -> list[tuple[int, str, str, float]]:
        """Every (round, device, name, value) of one source, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT round, device_id, name, value FROM metrics WHERE source=? "
                "ORDER BY rowid", (source,)).fetchall()
        return [(int(r), str(d), str(n), float(v)) for r, d, n, v in rows]

    def record_rollout(self, round_: int, stage: str, reason: str,
                       canaries: list[str]) -> None:
        """Records where the rollout of the artifact of round_ stands, and why."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO rollouts VALUES (?,?,?,?,?)",
                             (round_, stage, reason, json.dumps(canaries), time.time()))

    def rollouts(self) -> list[tuple[int, str, str, list[str]]]:
        """Every artifact's rollout: (round, stage, reason, canaries), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT round, stage, reason, canaries FROM rollouts "
                                    "ORDER BY round").fetchall()
        return [(int(r), str(s), str(w), list(json.loads(c))) for r, s, w, c in rows]

    def checkpoint_path(self, round_: int) -> Path:
        return self.checkpoints / f"round-{round_:06d}.safetensors"

    def commit(self, record: RoundRecord, blob: bytes) -> RoundRecord:
        """Durably writes the round's checkpoint, then records the round."""
        path = self.checkpoint_path(record.round)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(self.checkpoints, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        record = RoundRecord(**{**asdict(record), "sha256": sha256_hex(blob)})
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (record.round, path.name, record.sha256, record.accuracy, record.loss,
                 record.clients, record.examples, record.bytes_up, record.bytes_down,
                 record.seconds, time.time()))
        return record

    def set_metrics(self, round_: int, accuracy: float, loss: float) -> None:
        """Attaches a committed round's test accuracy and loss to its row."""
        with self._lock, self._db:
            self._db.execute("UPDATE rounds SET accuracy=?, loss=? WHERE round=?",
                             (accuracy, loss, round_))

    def server_state_path(self, round_: int) -> Path:
        return self.checkpoints / f"round-{round_:06d}.server.safetensors"

    def write_server_state(self, round_: int, blob: bytes) -> None:
        """Durably writes the server optimizer's state (safetensors) for a round about to
        be committed; only a committed round's state is ever read back."""
        path = self.server_state_path(round_)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read_server_state(self, round_: int) -> bytes | None:
        """The server optimizer's state saved with round_, or None."""
        path = self.server_state_path(round_)
        return path.read_bytes() if path.exists() else None

    def add_metrics(self, round_: int, device_id: str, source: str,
                    metrics: dict[str, float]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?)",
                [(round_, device_id, source, k, float(v)) for k, v in metrics.items()])

    def add_round_metrics(self, round_: int, source: str,
                          by_device: dict[str, dict[str, float]]) -> None:
        """Many devices' metrics of one round in one transaction (add_metrics is one
        transaction, and one fsync, per device)."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?)",
                [(round_, device_id, source, k, float(v))
                 for device_id, metrics in by_device.items() for k, v in metrics.items()])

    def committed_at(self) -> dict[int, float]:
        """When each round was committed (unix time)."""
        with self._lock:
            rows = self._db.execute("SELECT round, committed_at FROM rounds").fetchall()
        return {int(r): float(t) for r, t in rows}

    def rounds(self) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT round, accuracy, loss, clients, examples, bytes_up, bytes_down, "
                "seconds, sha256 FROM rounds ORDER BY round").fetchall()
        return [RoundRecord(*row) for row in rows]

    def latest(self) -> tuple[RoundRecord, bytes] | None:
        """The last committed round and its checkpoint bytes, checked against the record."""
        records = self.rounds()
        if not records:
            return None
        record = records[-1]
        blob = self.checkpoint_path(record.round).read_bytes()
        if sha256_hex(blob) != record.sha256:
            raise FedgeError(f"checkpoint of round {record.round} in {self.checkpoints} "
                             "does not match its recorded SHA-256; the state dir is damaged")
        return record, blob

    def blob(self, round_: int) -> bytes:
        return self.checkpoint_path(round_).read_bytes()
