"""Client training on CUDA, where a GPU is present (CI has none: skipped there).

A real server and two real `fedge client --device cuda` processes over loopback gRPC:
the devices announce their GPU, train on it, and the server commits every round.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import torch

from tests.fleet import free_port
from tests.processes import FEDGE, Processes

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_clients_train_on_cuda_and_the_rounds_commit(procs: Processes) -> None:
    port = str(free_port())
    subprocess.run([*FEDGE, "data", "partition", "--clients", "2", "--out", "parts"],
                   cwd=procs.tmp, check=True, capture_output=True, timeout=120)
    server = procs.start("server", "server", "--task", "digits-cnn", "--insecure",
                         "--allow-anonymous", "--host", "127.0.0.1", "--port", port,
                         "--rounds", "3", "--min-clients", "2", "--no-edge",
                         "--state-dir", "state")
    clients = [procs.start(f"client-{k}", "client", "--task", "digits-cnn", "--server",
                           f"127.0.0.1:{port}", "--data", f"parts/client-{k}",
                           "--device-id", f"gpu-{k}", "--device", "cuda", "--insecure")
               for k in range(2)]
    for k, client in enumerate(clients):
        assert client.wait(timeout=300) == 0, procs.log(f"client-{k}")
    assert server.wait(timeout=120) == 0, procs.log("server")
    log = procs.log("server")
    assert len(re.findall(r"device gpu-\d joined \(cuda:", log)) == 2, log
    accuracies = [float(a) for a in re.findall(r"round \d evaluated: accuracy ([0-9.]+)", log)]
    assert len(accuracies) == 3 and accuracies[-1] >= 0.8, log
