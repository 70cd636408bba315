"""A Flower NumPyClient, written the Flower way, trains under a real fedge server and
reaches the accuracy it reaches under Flower's run_simulation on the same partitions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import free_port
from tests.flower.project import ROUNDS, write_project
from tests.processes import Processes

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'fedge[flower]'")

EVALUATED = re.compile(r"round (\d+) evaluated: accuracy ([0-9.]+)")


def run_fedge(project: Path) -> float:
    """The project's client_fn under `fedge server` and two `fedge client`s; the last
    round's accuracy on the task's test split."""
    procs = Processes(project)
    port = str(free_port())
    task = ["--task", "task:fedge_task"]
    try:
        server = procs.start("server", "server", *task, "--insecure", "--allow-anonymous",
                             "--host", "127.0.0.1", "--port", port, "--rounds", str(ROUNDS),
                             "--min-clients", "2", "--no-edge", "--state-dir", "state",
                             "--seed", "0", "--epochs", "2", "--lr", "0.1",
                             "--batch-size", "32")
        clients = [procs.start(f"client-{k}", "client", *task, "--server",
                               f"127.0.0.1:{port}", "--device-id", f"device-{k}",
                               "--insecure", "--flower-client", "client:client_fn",
                               "--flower-node-config", f"partition-id={k} num-partitions=2")
                   for k in range(2)]
        for k, client in enumerate(clients):
            assert client.wait(timeout=240) == 0, procs.log(f"client-{k}")
        assert server.wait(timeout=60) == 0, procs.log("server")
        rounds = dict(EVALUATED.findall(procs.log("server")))
    finally:
        procs.close()
    assert sorted(rounds, key=int) == [str(r) for r in range(1, ROUNDS + 1)], rounds
    return float(rounds[str(ROUNDS)])


def run_flower(project: Path) -> float:
    """The same project under Flower's run_simulation (Ray); the last round's accuracy."""
    results = project / "flower.jsonl"
    run = subprocess.run([sys.executable, "simulate.py"], cwd=project, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "RESULTS": str(results)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(ROUNDS + 1)), rows
    return float(rows[-1]["accuracy"])


@pytest.mark.slow
def test_a_flower_client_reaches_its_flower_accuracy_under_fedge(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="run_simulation needs Ray: pip install 'fedge[flower]'")
    fedge_dir = write_project(tmp_path / "under-fedge")
    flower_dir = write_project(tmp_path / "under-flower")
    fedge_accuracy = run_fedge(fedge_dir)
    flower_accuracy = run_flower(flower_dir)
    print(f"final accuracy: fedge {fedge_accuracy:.4f}, Flower {flower_accuracy:.4f}")
    assert fedge_accuracy > 0.6, fedge_accuracy  # it learned: 10 classes, chance is 0.1
    assert abs(fedge_accuracy - flower_accuracy) <= 0.01, (fedge_accuracy, flower_accuracy)
