"""Processes that die: a device killed mid-upload, a server killed mid-round."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.config import SimulateConfig
from fedge.simulations.runner import simulate
from tests.faults.rawdevice import RawDevice, digits_weights
from tests.fleet import Fleet, free_port
from tests.processes import Processes, enroll


@pytest.mark.slow
def test_a_device_killed_mid_upload_does_not_stall_the_round(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    timeout = 8.0
    server = fleet.server(rounds=1, min_clients=3, quorum_fraction=0.6,
                          round_timeout_s=timeout)
    port = server.start()
    doomed = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.stalled_uploader", str(port),
         fleet.token("doomed")], stdout=subprocess.PIPE, text=True)
    try:
        for k, d in enumerate(dirs):
            fleet.client(port, d, f"dev-{k}")
        assert doomed.stdout is not None
        assert doomed.stdout.readline().strip() == "uploading"
        doomed.send_signal(signal.SIGKILL)
        records = server.wait(timeout=60)
    finally:
        doomed.kill()
        doomed.wait()
    fleet.join_clients()
    assert records[-1].round == 1 and records[-1].clients == 2
    assert records[-1].seconds < timeout + 2  # committed on quorum at the deadline


def _committed(state: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(state / "fedge.db") as db:
        return db.execute("SELECT round, sha256 FROM rounds ORDER BY round").fetchall()


# Rounds long enough (about 0.35 s here) that round 6 cannot commit between the log
# saying round 3 and the kill: at the task's 2 epochs a round takes 60 ms.
EPOCHS = 12
# The devices' reconnect delay capped at a second (not 30 s): the restarted server
# otherwise waits out their backoff, and lingers for the one it missed telling STOP.
RETRY = "backoff_max_s = 1\n"


@pytest.mark.slow
def test_a_server_killed_mid_round_resumes_and_devices_rejoin_alone(
        procs: Processes, tmp_path: Path) -> None:
    rounds = 6
    subprocess.run([sys.executable, "-m", "fedge.cli", "data", "partition", "--clients",
                    "2", "--out", "parts"], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    tokens = [enroll(tmp_path, f"dev-{k}") for k in range(2)]
    port = str(free_port())
    server_args = ["server", "--insecure", "--host", "127.0.0.1", "--port", port,
                   "--rounds", str(rounds), "--min-clients", "2", "--state-dir", "state",
                   "--poll-seconds", "1", "--round-timeout", "60", "--epochs", str(EPOCHS),
                   "--no-edge"]  # no edge artifact after the last round: not checked here
    (tmp_path / "retry.toml").write_text(RETRY)
    server = procs.start("server-1", *server_args)
    clients = [procs.start(f"client-{k}", "client", "--server", f"127.0.0.1:{port}",
                           "--data", f"parts/client-{k}", "--device-id", f"dev-{k}",
                           "--insecure", "--poll-seconds", "1", "--config", "retry.toml",
                           env={"FEDGE_TOKEN": tokens[k]}) for k in range(2)]
    procs.wait_for("server-1", f"round   3/{rounds}", timeout=180)
    server.send_signal(signal.SIGKILL)
    server.wait()
    before = _committed(tmp_path / "state")
    assert 3 <= len(before) - 1 < rounds  # killed mid-run, after round 3 committed

    time.sleep(1.0)  # the devices find the server gone and keep retrying
    server = procs.start("server-2", *server_args)
    assert server.wait(timeout=240) == 0, procs.log("server-2")
    for k, client in enumerate(clients):
        assert client.wait(timeout=60) == 0, procs.log(f"client-{k}")
        assert procs.log(f"client-{k}").count("joined") >= 2  # rejoined, never restarted
    assert f"resuming from committed round {len(before) - 1}" in procs.log("server-2")

    after = _committed(tmp_path / "state")
    assert [r for r, _ in after] == list(range(rounds + 1))  # none lost, none repeated
    assert after[: len(before)] == before  # committed rounds were not rewritten
    with sqlite3.connect(tmp_path / "state" / "fedge.db") as db:
        (accuracy,) = db.execute("SELECT accuracy FROM rounds WHERE round = ?",
                                 (rounds,)).fetchone()
    reference = simulate(SimulateConfig(clients=2, rounds=rounds, epochs=EPOCHS, edge=False,
                                         out=str(tmp_path / "ref")))
    assert abs(accuracy - reference["final"]["accuracy"]) <= 0.01, (accuracy, reference)


def test_a_driver_that_cannot_commit_stops_the_server_with_exit_status_1(
        procs: Processes, tmp_path: Path) -> None:
    token = enroll(tmp_path, "dev-0")
    port = free_port()
    server = procs.start("server", "server", "--insecure", "--host", "127.0.0.1", "--port",
                         str(port), "--rounds", "2", "--min-clients", "1", "--state-dir",
                         "state", "--poll-seconds", "1")
    procs.wait_for("server", "serving task")
    # The disk goes away under the running server: round 1's checkpoint cannot be written.
    shutil.rmtree(tmp_path / "state" / "checkpoints")
    device = RawDevice(port, "dev-0", token)
    try:
        device.join()
        task = device.poll_train()
        device.submit(device.stream(task, digits_weights()))
        assert server.wait(timeout=60) == 1, procs.log("server")
    finally:
        device.close()
    log = procs.log("server")
    assert "the round driver failed" in log and "Traceback" in log
    assert "FileNotFoundError" in log
    assert not _committed(tmp_path / "state")[1:]  # round 1 was never recorded
