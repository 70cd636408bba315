"""A server in async mode killed mid-buffer (kill -9) and restarted loses no committed
model version, and resumes from the last one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.test_crashes import RETRY, _committed
from tests.fleet import free_port
from tests.processes import Processes, enroll


@pytest.mark.slow
def test_an_async_server_killed_mid_buffer_keeps_every_committed_version(
        procs: Processes, tmp_path: Path) -> None:
    versions = 8
    subprocess.run([sys.executable, "-m", "fedge.cli", "data", "partition", "--clients",
                    "3", "--out", "parts"], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    tokens = [enroll(tmp_path, f"dev-{k}") for k in range(3)]
    port = str(free_port())
    # FedAvgM: its server momentum is state that must come back with the version.
    server_args = ["server", "--insecure", "--host", "127.0.0.1", "--port", port,
                   "--mode", "async", "--rounds", str(versions), "--concurrency", "3",
                   "--buffer-size", "2", "--max-staleness", "50", "--strategy", "fedavgm",
                   "--state-dir", "state", "--poll-seconds", "1", "--round-timeout", "60",
                   "--epochs", "8", "--no-edge"]
    (tmp_path / "retry.toml").write_text(RETRY)
    server = procs.start("server-1", *server_args)
    for k in range(3):
        procs.start(f"client-{k}", "client", "--server", f"127.0.0.1:{port}", "--data",
                    f"parts/client-{k}", "--device-id", f"dev-{k}", "--insecure",
                    "--poll-seconds", "1", "--config", "retry.toml",
                    env={"FEDGE_TOKEN": tokens[k]})
    procs.wait_for("server-1", f"round   3/{versions}", timeout=180)
    server.send_signal(signal.SIGKILL)
    server.wait()
    before = _committed(tmp_path / "state")
    assert 3 <= len(before) - 1 < versions, before  # killed mid-run, after version 3

    time.sleep(1.0)  # the devices find the server gone and keep retrying
    server = procs.start("server-2", *server_args)
    assert server.wait(timeout=240) == 0, procs.log("server-2")
    log = procs.log("server-2")
    # Devices rejoined by themselves and trained on (one alone may fill the buffers, and
    # one still in its backoff when the last version commits misses its STOP: the run
    # waits for no particular device).
    assert "device dev-" in log and " joined (" in log, log
    assert f"resuming from committed round {len(before) - 1}" in log
    assert "resumed fedavgm optimizer state" in log
    after = _committed(tmp_path / "state")
    assert [r for r, _ in after] == list(range(versions + 1))  # none lost, none repeated
    assert after[: len(before)] == before  # committed versions were not rewritten
