"""Child processes for the deployment benchmarks: started as a person would start them,
their output in log files, every one (and what it spawns) stopped on close."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class Processes:
    """Child processes with their output in log files; all killed on close()."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Starts argv with stdout and stderr in LOGS/name.log."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed by the child)
        # A session of its own, so that close() also reaches what it spawns (Flower's
        # SuperLink and SuperNodes start flwr-serverapp and flwr-clientapp processes).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What the named process has written so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self, *names: str) -> None:
        """Raises with the log tail if one of the named processes has exited."""
        for name in names:
            code = self.procs[name].poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with {code}:\n{self.log(name)[-3000:]}")

    def close(self) -> None:
        """Terminates every child's process group (SIGKILL after 5 s) and reaps it."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # what it spawned, if still there


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)  # the child leads its group (start_new_session)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def program(name: str) -> str:
    """The path of a console script installed beside this Python."""
    return str(Path(sys.executable).parent / name)


def wait_for_port(port: int, timeout: float, procs: Processes, name: str) -> None:
    """Returns once 127.0.0.1:port accepts connections; raises if name exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.check_alive(name)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on port {port} in {timeout:.0f} s")
