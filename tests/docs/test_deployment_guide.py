"""docs/deployment.md, run: every `sh` block in order, as one script, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import free_port

GUIDE = Path(__file__).parents[2] / "docs" / "deployment.md"
pytestmark = pytest.mark.slow
# Well inside pytest's own 300 s timeout, so a stuck guide fails here, with its logs,
# instead of being killed by pytest-timeout with nothing to read.
GUIDE_TIMEOUT_S = 240


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def logs_of(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                     for p in sorted(folder.glob("*.log")))


def test_the_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(GUIDE.read_text())
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    script = script.replace("50051", str(free_port())).replace("9464", str(free_port()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    # The script's output goes to a file, not a pipe: a background process it leaves
    # behind would hold a pipe open and hang the wait. Its own process group lets a
    # timeout end everything it started.
    out = tmp_path / "guide.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(["bash", "-euxo", "pipefail", "-c", script], cwd=tmp_path,
                                env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=GUIDE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running
            proc.wait()
    stdout = out.read_text(errors="replace")
    assert returncode == 0, (f"guide {'timed out' if returncode is None else 'failed'} "
                             f"(rc={returncode})\n{stdout[-6000:]}\n{logs_of(tmp_path)}")
    assert "resuming from committed round" in (tmp_path / "server-restarted.log").read_text()
    status = json.loads((tmp_path / "status.json").read_text())
    assert sorted(d["device_id"] for d in status["devices"]) == ["cam-1", "cam-2"]
    assert "phase done" in stdout and "round 12/12" in stdout
    assert "fedge_devices_connected 2.0" in stdout
    for k in (1, 2):
        assert "joined" in (tmp_path / f"cam-{k}.log").read_text()
        assert (tmp_path / "models" / f"cam-{k}" / "current.json").exists()
    assert (tmp_path / "rollout" / "model.onnx").exists()
