"""Rescans: only changed files are read again; a real daemon against a real server
trains on the files that appeared between two rounds and reports the real count, and
only counts (no file names) reach the server."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from fedge.client import data as data_module
from fedge.client.daemon import Daemon
from fedge.client.data import LocalData
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig
from fedge.server.app import FedgeServer
from fedge.server.store import RoundRecord
from fedge.tasks import load_task
from tests.client.data_files import SCHEMA, examples, write_csv, write_jsonl


def test_rescan_reads_only_what_changed(tmp_path: Path, monkeypatch) -> None:
    x, y = examples(30)
    write_csv(tmp_path / "a.csv", x[:10], y[:10].tolist())
    write_jsonl(tmp_path / "b.jsonl", x[10:20], y[10:20].tolist())
    data = LocalData([str(tmp_path)], SCHEMA)
    reads: list[str] = []
    real_scan = data_module.sources.scan_file

    def counting_scan(path, *args, **kwargs):
        reads.append(path.name)
        return real_scan(path, *args, **kwargs)

    monkeypatch.setattr(data_module.sources, "scan_file", counting_scan)
    assert data.rescan() and sorted(reads) == ["a.csv", "b.jsonl"]
    reads.clear()
    assert not data.rescan() and reads == []

    np.savez(tmp_path / "c.npz", x=x[20:], y=y[20:])  # a new file
    write_csv(tmp_path / "a.csv", x[:5], y[:5].tolist())  # a file rewritten smaller
    assert data.rescan() and sorted(reads) == ["a.csv", "c.npz"]
    assert data.inventory().records == 25 and len(data.arrays()[0]) == 25

    reads.clear()
    (tmp_path / "b.jsonl").unlink()
    assert data.rescan() and reads == []
    assert data.inventory().records == 15

    # Same size, new modification time: read again.
    stat = (tmp_path / "c.npz").stat()
    os.utime(tmp_path / "c.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert data.rescan() and reads == ["c.npz"]


def test_a_daemon_trains_on_files_that_appear_between_rounds(tmp_path: Path) -> None:
    task = load_task("digits-mlp")
    splits = task.load_data()
    source = tmp_path / "device-data"
    source.mkdir()
    first, more = 120, 200
    np.savez(source / "first.npz", x=splits.train_x[:first], y=splits.train_y[:first])

    def grow(record: RoundRecord) -> None:
        # Runs in the server's round driver after round 1 commits, before round 2 opens
        # (and once more when round 1's evaluation ends: the files are there by then).
        if record.round == 1 and not (source / "camera-roll.csv").exists():
            extra = slice(first, first + more)
            write_csv(source / "camera-roll.csv", splits.train_x[extra],
                      splits.train_y[extra].tolist(),
                      header=",".join([f"p{i}" for i in range(64)] + ["label"]))
            (source / "broken.npz").write_bytes(b"PK\x03\x04 cut short")

    # The round's examples are the counts the device declares: the fleet-relative cap on
    # an update's weight (a hostile-device defence) is off, as it is in a simulation.
    server = FedgeServer(ServerConfig(
        task="digits-mlp", host="127.0.0.1", port=0, rounds=2, min_clients=1,
        state_dir=str(tmp_path / "state"), insecure=True, round_timeout_s=60.0,
        linger_s=2.0, examples_factor=0.0, poll_seconds=2.0), on_round=grow)
    port = server.start()
    config = ClientConfig(server=f"127.0.0.1:{port}", data=(str(source),),
                          device_id="phone", insecure=True, backoff_initial_s=0.05,
                          backoff_max_s=0.5, poll_seconds=2.0,
                          token=server.tokens.create("phone"))
    local = LocalData(config.data, task.schema)
    local.rescan()
    daemon = Daemon(config, task, Trainer(task, *local.arrays(), device="cpu"), local)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        records = server.wait(timeout=60)
    finally:
        daemon.stop()
        thread.join(10)
        server.shutdown(grace=0.1)
    assert not errors
    assert [r.examples for r in records[1:]] == [first, first + more]
    assert daemon.trainer.num_examples == first + more

    with sqlite3.connect(tmp_path / "state" / "fedge.db") as db:
        rows = db.execute("SELECT round, name, value FROM metrics").fetchall()
    metrics = {(r, name): value for r, name, value in rows}
    assert metrics[(1, "data_examples")] == first
    assert metrics[(2, "data_examples")] == first + more
    assert metrics[(2, "data_files_skipped")] == 1
    assert metrics[(2, "data_file_skip/truncated or corrupt")] == 1
    assert sum(v for (r, n), v in metrics.items()
               if r == 2 and n.startswith("data_label/")) == first + more
    # Only counts leave the device: no file or folder name reaches the server.
    for _, name in metrics:
        assert not any(part in name for part in ("device-data", "camera", "broken",
                                                  "first", str(tmp_path)))


def test_file_names_are_reported_only_with_the_debug_flag(tmp_path: Path) -> None:
    x, y = examples(5)
    write_csv(tmp_path / "ok.csv", x, y.tolist())
    (tmp_path / "secret-diary.csv").write_bytes(b"")
    data = LocalData([str(tmp_path)], SCHEMA)
    data.rescan()
    quiet = data.inventory().metrics()
    assert quiet["data_files_skipped"] == 1
    assert not any("secret" in k for k in quiet)
    loud = data.inventory().metrics(file_names=True)
    assert loud[f"data_skipped_file/{tmp_path / 'secret-diary.csv'}"] == 1
