"""Whole fedge programs as OS processes, started the way a person would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FEDGE = [sys.executable, "-m", "fedge.cli"]


class Processes:
    """Starts fedge commands with their output in files; kills leftovers at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None,
              background_job: bool = False) -> subprocess.Popen[bytes]:
        """background_job: start it as a shell starts `cmd &`, with SIGINT ignored."""
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([*FEDGE, *args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.tmp, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                   **(env or {})},
                                preexec_fn=_ignore_sigint if background_job else None)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_for(self, name: str, text: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while text not in self.log(name):
            assert time.monotonic() < end, f"{name} never said {text!r}:\n{self.log(name)}"
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def enroll(tmp: Path, device: str, state_dir: str = "state") -> str:
    """`fedge tokens create`, as an operator runs it: the token is the last line."""
    run = subprocess.run([*FEDGE, "tokens", "create", "--state-dir", state_dir, "--device",
                          device], cwd=tmp, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip().splitlines()[-1]
    assert token.startswith("fdg_") and len(token) > 40
    return token
