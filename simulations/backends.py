"""Where the simulated clients run: threads of this process, worker processes, or Ray
actors. The server is always the one in the simulate process; clients always reach it
over gRPC with their own channel and session, whatever the backend.

A backend takes groups of ClientSpecs (one group per host), starts them, and returns
each client's JSON result when they are done.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fedge.errors import FedgeError
from fedge.simulations.device import ClientSpec
from fedge.simulations.host import run_group

log = logging.getLogger(__name__)


OnExit = Callable[[bool], None]


def _clean(results: list[dict[str, Any]]) -> bool:
    return not any(r["error"] for r in results)


class Backend(Protocol):
    """Runs groups of simulated clients."""

    name: str

    def start(self, groups: list[list[ClientSpec]], on_exit: OnExit) -> None:
        """Starts every group's clients; returns at once. on_exit(ok) is called as each
        host ends, ok False when it failed or one of its clients did."""

    def stop(self) -> None:
        """Tells every client to stop at its next step."""

    def join(self, timeout: float) -> list[dict[str, Any]]:
        """Waits for the clients to end; returns their results, raising if a host
        failed."""


def split_groups(specs: list[ClientSpec], hosts: int) -> list[list[ClientSpec]]:
    """Deals specs round-robin into at most hosts non-empty groups."""
    hosts = max(1, min(hosts, len(specs)))
    return [specs[k::hosts] for k in range(hosts)]


# Above this many clients `auto` moves them out of the server's process (see choose).
THREADS_UP_TO = 256


def choose(name: str, clients: int) -> str:
    """The backend `auto` stands for: threads up to THREADS_UP_TO clients, processes
    above. Measured on the 2-core development box (see README "Backends"), the default
    run takes longer in processes, each paying torch's import and its own gRPC stack,
    and the clients' training is short next to the round's fixed costs. But a thousand
    client threads in the server's process starve the server of the GIL: its polls and
    joins missed their deadlines and no round committed in 10 minutes, while the same
    thousand clients in two worker processes committed each round in 23-46 s."""
    if name != "auto":
        return name
    return "threads" if clients <= THREADS_UP_TO else "processes"


class ThreadBackend:
    """Every client a daemon thread of the simulate process."""

    name = "threads"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._results: list[dict[str, Any]] = []
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def start(self, groups: list[list[ClientSpec]], on_exit: OnExit) -> None:
        specs = [s for group in groups for s in group]

        def host() -> None:
            try:
                self._results.extend(run_group(specs, self._stop))
            except BaseException as exc:  # raised again by join()
                self._errors.append(exc)
            on_exit(not self._errors and _clean(self._results))

        self._thread = threading.Thread(target=host, name="clients", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> list[dict[str, Any]]:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._errors:
            raise self._errors[0]
        return self._results


class ProcessBackend:
    """Each group a worker process, ``python -m simulations.host``, its clients threads
    there; specs and results travel as JSON files under folder."""

    name = "processes"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
        self._terminated: set[int] = set()  # pids stop() sent SIGTERM

    def start(self, groups: list[list[ClientSpec]], on_exit: OnExit) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for k, group in enumerate(groups):
            specs = self.folder / f"host-{k}.json"
            results = self.folder / f"host-{k}.results.json"
            logs = self.folder / f"host-{k}.log"
            results.unlink(missing_ok=True)
            specs.write_text(json.dumps([s.to_json() for s in group]))
            with open(logs, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "fedge.simulations.host", str(specs),
                                         str(results)], stdout=out, stderr=subprocess.STDOUT)
            self._procs.append((proc, results, logs))

            def watch(proc: subprocess.Popen[bytes] = proc, results: Path = results) -> None:
                code = proc.wait()
                on_exit(code == 0 and results.exists()
                        and _clean(json.loads(results.read_text())))

            threading.Thread(target=watch, name=f"host-{k}", daemon=True).start()
        log.info("started %d client host process(es)", len(groups))

    def stop(self) -> None:
        for proc, _, _ in self._procs:
            if proc.poll() is None:
                proc.terminate()
                self._terminated.add(proc.pid)

    def join(self, timeout: float) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        for proc, results, logs in self._procs:
            try:
                code = proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            # A host this stop() ended after it wrote its results may still die of the
            # SIGTERM: Python restores the default handler while it shuts down.
            stopped = code == -signal.SIGTERM and proc.pid in self._terminated
            if (code != 0 and not stopped) or not results.exists():
                tail = logs.read_text(errors="replace")[-2000:]
                raise FedgeError(f"client host {logs.stem} exited with {code}; its log "
                                 f"({logs}) ends:\n{tail}")
            out.extend(json.loads(results.read_text()))
        return out


class RayHost:
    """A Ray actor hosting a group of clients (threads inside the actor's process)."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def run(self, specs_json: str) -> str:
        """Runs the group (a JSON list of specs); returns the results as JSON."""
        specs = [ClientSpec.from_json(v) for v in json.loads(specs_json)]
        return json.dumps(run_group(specs, self._stop))

    def stop(self) -> None:
        """Stops the group's clients (the actor takes this call while run() works)."""
        self._stop.set()


def import_ray() -> Any:
    """The ray module, or an error naming the extra that installs it."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise FedgeError("backend 'ray' needs Ray, which is not installed: "
                         "pip install 'fedge[ray]'") from exc
    return ray


class RayBackend:
    """Each group a Ray actor. address "" starts a local Ray instance (and stops it at
    the end); otherwise the driver joins that cluster, whose nodes need fedge installed."""

    name = "ray"

    def __init__(self, address: str = "") -> None:
        self.ray = import_ray()
        self.address = address
        self._started_ray = False
        self._actors: list[Any] = []
        self._runs: list[Any] = []
        self.connect()

    def connect(self) -> None:
        """Starts or joins Ray: no dashboard, no usage report, worker logs kept off the
        console (they stay in Ray's session folder)."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.ray.is_initialized():
            return
        with warnings.catch_warnings():  # a tip about a future GPU default, not ours
            warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
            self.ray.init(address=self.address or None, include_dashboard=False,
                          log_to_driver=False, logging_level=logging.WARNING,
                          configure_logging=True)
        self._started_ray = True

    def cpus(self) -> int:
        """The CPUs the cluster offers (at least 1)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def start(self, groups: list[list[ClientSpec]], on_exit: OnExit) -> None:
        actor = self.ray.remote(num_cpus=1, max_concurrency=2)(RayHost)
        self._actors = [actor.remote() for _ in groups]
        self._runs = [a.run.remote(json.dumps([s.to_json() for s in group]))
                      for a, group in zip(self._actors, groups, strict=True)]

        def watch() -> None:
            pending = list(self._runs)
            while pending:
                ready, pending = self.ray.wait(pending, num_returns=1)
                try:
                    ok = _clean(json.loads(self.ray.get(ready[0])))
                except Exception:  # join() reports it
                    ok = False
                on_exit(ok)

        threading.Thread(target=watch, name="ray-hosts", daemon=True).start()
        log.info("started %d Ray actor(s)", len(groups))

    def stop(self) -> None:
        for a in self._actors:
            a.stop.remote()

    def join(self, timeout: float) -> list[dict[str, Any]]:
        try:
            done = self.ray.get(self._runs, timeout=timeout)
        except Exception as exc:
            raise FedgeError(f"a Ray client host failed: {exc}") from exc
        finally:
            for a in self._actors:
                self.ray.kill(a)
            if self._started_ray:
                self.ray.shutdown()
        return [r for text in done for r in json.loads(text)]


def make_backend(name: str, folder: Path, ray_address: str = "") -> Backend:
    """The backend called name (not 'auto': see choose)."""
    if name == "threads":
        return ThreadBackend()
    if name == "processes":
        return ProcessBackend(folder)
    if name == "ray":
        return RayBackend(ray_address)
    raise FedgeError(f"unknown backend {name!r}")
