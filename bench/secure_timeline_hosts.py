"""bench.secure_timeline with the processes backend: the device hooks inside each client
host process; and the CPU, from /proc, of the hosts and of gRPC's C threads.

The hosts are ``python -m fedge.simulations.host`` processes that the simulation starts;
nothing in them knows of this bench. A ``sitecustomize`` module on the PYTHONPATH they
inherit installs secure_timeline's hooks at their start-up (only when this bench's
environment variable names a folder) and writes their events there when they exit.
``time.perf_counter`` is the system's monotonic clock, so the hosts' events share the
server's time axis once they start from the same origin.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FOLDER = "FEDGE_BENCH_TIMELINE"  # where each host writes <pid>.json
ORIGIN = "FEDGE_BENCH_TIMELINE_T0"  # the server timeline's perf_counter origin

_SITECUSTOMIZE = f"""import os
if os.environ.get({FOLDER!r}):
    from bench.secure_timeline_hosts import install
    install()
"""
_KEPT: list[Any] = []
_ROOT = Path(__file__).resolve().parent.parent  # where `bench` imports from


def install() -> None:
    """In a host process: hooks on for its whole life; its events written at exit."""
    from bench.secure_timeline import Timeline, hooked

    timeline = Timeline()
    timeline.t0 = float(os.environ[ORIGIN])
    hooks = hooked(timeline)
    hooks.__enter__()
    _KEPT.append(hooks)  # collected, its generator would close and take the hooks off

    def write() -> None:
        folder = Path(os.environ[FOLDER])
        (folder / f"{os.getpid()}.json").write_text(json.dumps(timeline.events))

    atexit.register(write)


@contextmanager
def hosts_hooked(t0: float) -> Iterator[Path]:
    """For the duration: client hosts started from this process run the hooks, on the
    timeline whose origin is t0; yields the folder their events land in."""
    saved = {k: os.environ.get(k) for k in (FOLDER, ORIGIN, "PYTHONPATH")}
    with tempfile.TemporaryDirectory() as tmp:
        site, events = Path(tmp, "site"), Path(tmp, "events")
        site.mkdir()
        events.mkdir()
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        os.environ[FOLDER], os.environ[ORIGIN] = str(events), repr(t0)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), str(_ROOT), saved["PYTHONPATH"]) if p)
        try:
            yield events
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def host_events(folder: Path) -> list[dict[str, Any]]:
    """The events every host wrote, each tagged with its host's pid."""
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        out.extend({**e, "host": int(path.stem)} for e in json.loads(path.read_text()))
    return out


def _stat_cpu(path: str) -> float | None:
    """User + system CPU seconds of a /proc stat file (10 ms ticks); None when the
    process or thread ended meanwhile."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's live child processes, from /proc."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        total += sum(filter(None, (_stat_cpu(f"/proc/{pid}/stat") for pid in pids)))
    return total


def native_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads that Python does not know (gRPC's C
    threads), by their OS name, and of its child processes (client hosts), from /proc
    (10 ms ticks)."""
    python = {t.native_id for t in threading.enumerate()}
    out: dict[str, float] = {"host processes": children_cpu()}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in python:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        cpu = _stat_cpu(f"/proc/self/task/{tid}/stat")
        if cpu is not None:
            out[name] = out.get(name, 0.0) + cpu
    return out
