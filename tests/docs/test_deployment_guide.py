"""docs/deployment.md, run: every `sh` block in order, as one script, on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import free_port

GUIDE = Path(__file__).parents[2] / "docs" / "deployment.md"
pytestmark = pytest.mark.slow


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def test_the_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(GUIDE.read_text())
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    script = script.replace("50051", str(free_port())).replace("9464", str(free_port()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=400)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{logs}"
    assert "resuming from committed round" in (tmp_path / "server-restarted.log").read_text()
    status = json.loads((tmp_path / "status.json").read_text())
    assert sorted(d["device_id"] for d in status["devices"]) == ["cam-1", "cam-2"]
    assert "phase done" in run.stdout and "round 13/12" in run.stdout
    assert "fedge_devices_connected 2.0" in run.stdout
    for k in (1, 2):
        assert "joined" in (tmp_path / f"cam-{k}.log").read_text()
        assert (tmp_path / "models" / f"cam-{k}" / "current.json").exists()
    assert (tmp_path / "rollout" / "model.onnx").exists()
