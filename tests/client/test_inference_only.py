"""`fedge client` on a device without torch: refused unless told --inference-only, and
then a real daemon (torch unimportable in its process) that joins a real server, never
trains while a training daemon does, and exits when the run is over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.cli import main
from tests.fleet import Fleet

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "


def fedge_without_torch(*args: str, env: dict[str, str] | None = None,
                        ) -> subprocess.CompletedProcess[str]:
    code = BLOCK_TORCH + f"from fedge.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90, env=env)


def test_a_device_without_torch_must_say_inference_only(tmp_path: Path) -> None:
    refused = fedge_without_torch("client", "--insecure", "--data", str(tmp_path))
    assert refused.returncode == 2
    assert "cannot train: torch is not installed" in refused.stderr
    assert "--inference-only" in refused.stderr
    keyless = fedge_without_torch("client", "--insecure", "--inference-only")
    assert keyless.returncode == 2 and "inference_only needs trust_key" in keyless.stderr


def test_inference_only_daemon_without_torch_joins_and_never_trains(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=1, min_clients=1, fraction=1.0)
    port = server.start()
    key = fleet.tmp / "key.pem"
    key.write_text("unused: this run ships no edge artifact\n")
    args = ["client", "--inference-only", "--server", f"127.0.0.1:{port}", "--insecure",
            "--device-id", "viewer", "--trust-key", str(key), "--data", str(dirs[1]),
            "--poll-seconds", "1"]
    viewer = subprocess.Popen(
        [sys.executable, "-c", BLOCK_TORCH + f"from fedge.cli import main; sys.exit(main("
         f"{args!r}))"],
        env={**os.environ, "FEDGE_TOKEN": server.tokens.create("viewer")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(d.device_id == "viewer" for d in server.registry.all()):
            assert viewer.poll() is None, viewer.communicate()[0]
            assert time.monotonic() < deadline, "the inference-only daemon never joined"
            time.sleep(0.05)
        trainer = fleet.client(port, dirs[0], "trainer")
        records = server.wait(timeout=60)
        fleet.join_clients(timeout=30)
        output, _ = viewer.communicate(timeout=30)
    finally:
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait()
    assert viewer.returncode == 0, output
    assert "viewer: installed 0 edge model(s), refused 0" in output
    assert [r.clients for r in records if r.round > 0] == [1]
    assert trainer.stats[0].rounds_trained == 1
    status = json.loads((fleet.tmp / "state" / "status.json").read_text())
    (viewer_status,) = [d for d in status["devices"] if d["device_id"] == "viewer"]
    assert viewer_status["inference_only"] and viewer_status["num_examples"] > 0
    assert main(["status", "--state-dir", str(fleet.tmp / "state")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]
            if line.startswith("  ")}
    assert rows["viewer"].endswith("[inference only]")
    assert not rows["trainer"].endswith("[inference only]")
