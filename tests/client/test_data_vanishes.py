"""Data that vanishes under a running device: a real daemon against a real server, whose
only data file is deleted (and a junk file added) between two rounds, drops the removed
examples, takes no part while it has none, and logs no traceback; and a device without
a trusted key says once, calmly, that it does not install edge models."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from fedge.client.daemon import Daemon
from fedge.client.data import LocalData
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig
from fedge.server.app import FedgeServer
from fedge.server.store import RoundRecord
from fedge.tasks import load_task


def test_a_deleted_data_file_is_dropped_and_the_rescan_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = load_task("digits-mlp")
    splits = task.load_data()
    sources = {name: tmp_path / name for name in ("phone", "tablet")}
    counts = {"phone": 100, "tablet": 150}
    start = 0
    for name, folder in sources.items():
        folder.mkdir()
        end = start + counts[name]
        np.savez(folder / "data.npz", x=splits.train_x[start:end],
                 y=splits.train_y[start:end])
        start = end

    def vanish(record: RoundRecord) -> None:
        # In the server's round driver after round 1 commits, before round 2 opens (and
        # again, from the evaluation, once round 1's metrics are attached: done by then).
        if record.round == 1 and (sources["phone"] / "data.npz").exists():
            (sources["phone"] / "data.npz").unlink()
            (sources["phone"] / "notes.txt").write_text("not data\n")

    # The round's examples are the counts the device declares: the fleet-relative cap on
    # an update's weight (a hostile-device defence) is off, as it is in a simulation.
    server = FedgeServer(ServerConfig(
        task="digits-mlp", host="127.0.0.1", port=0, rounds=2, min_clients=1,
        state_dir=str(tmp_path / "state"), insecure=True, round_timeout_s=6.0,
        linger_s=1.0, examples_factor=0.0, poll_seconds=1.0), on_round=vanish, start_clients=2)
    port = server.start()
    daemons, threads, errors = [], [], []
    for name, folder in sources.items():
        config = ClientConfig(server=f"127.0.0.1:{port}", data=(str(folder),),
                              device_id=name, insecure=True, backoff_initial_s=0.05,
                              backoff_max_s=0.5, poll_seconds=1.0,
                              token=server.tokens.create(name))
        local = LocalData(config.data, task.schema)
        local.rescan()
        daemon = Daemon(config, task, Trainer(task, *local.arrays(), device="cpu"), local)

        def run(daemon: Daemon = daemon) -> None:
            try:
                daemon.run()
            except BaseException as exc:
                errors.append(exc)

        daemons.append(daemon)
        threads.append(threading.Thread(target=run, daemon=True))
        threads[-1].start()
    with caplog.at_level(logging.INFO):
        try:
            records = server.wait(timeout=90)
        finally:
            for daemon in daemons:
                daemon.stop()
            for thread in threads:
                thread.join(10)
            server.shutdown(grace=0.1)
    assert not errors
    assert [r.examples for r in records[1:]] == [250, 150]  # round 2: the tablet's only
    phone = daemons[0]
    assert phone.trainer.num_examples == 0 and phone.stats.rounds_trained == 1
    assert phone.data is not None and phone.data.inventory().records == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("no usable local examples" in r.getMessage() for r in caplog.records)
    # Neither device was given --trust-key: each says so once, calmly, not an ERROR.
    calm = [r for r in caplog.records if "does not install edge models" in r.getMessage()]
    assert calm and all(r.levelno == logging.INFO for r in calm)
    assert len(calm) == len({r.getMessage().split(":")[0] for r in calm})
