"""A host of simulated clients: one daemon thread per ClientSpec, in this process.

Every backend runs clients through run_group: the threads backend in the simulate
process itself, the processes backend in ``python -m simulations.host SPECS.json
RESULTS.json`` workers, the Ray backend inside actors. Specs come in and results go out
as JSON (nothing is pickled).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported once the host's signal handlers are in (main)
    from fedge.simulations.device import ClientSpec, SimulatedDaemon

log = logging.getLogger(__name__)


def run_group(specs: list[ClientSpec], stop: threading.Event) -> list[dict[str, Any]]:
    """Runs one daemon thread per spec until each is told STOP (or stop is set);
    returns one JSON-able result per client: its data scan, what it did, and its error
    (None when it ended cleanly)."""
    import torch

    from fedge.simulations.device import build_daemon
    from fedge.simulations.report import client_data
    from fedge.tasks import load_task

    if not specs:
        return []
    torch.set_num_threads(1)  # many trainers share the cores: one intra-op thread each
    task = load_task(specs[0].task)
    daemons = [build_daemon(spec, task) for spec in specs]
    errors: dict[str, str] = {}

    def run(daemon: SimulatedDaemon) -> None:
        try:
            daemon.run()
        except Exception as exc:  # reported in the result, not lost in a thread
            errors[daemon.config.device_id] = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed", daemon.config.device_id)

    threads = [threading.Thread(target=run, args=(d,), name=d.config.device_id, daemon=True)
               for d in daemons]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if stop.wait(0.2):
            for daemon in daemons:
                daemon.stop()
            break
    for thread in threads:
        thread.join(timeout=30)
    return [{**client_data(d), "rounds_trained": d.stats.rounds_trained,
             "dropped_rounds": d.dropped_rounds, "delay_seconds": d.delay_seconds,
             "bytes_up": d.stats.bytes_up, "bytes_down": d.stats.bytes_down,
             "edge_installed": d.stats.edge_installed,
             "error": errors.get(d.config.device_id)} for d in daemons]


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.host SPECS.json RESULTS.json``: runs the specs (a JSON
    list), writes the results (a JSON list); SIGTERM or SIGINT stops the clients."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m simulations.host SPECS.json RESULTS.json\n")
        return 2
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # First: a host stopped while it still imports torch (the run may end before a slow
    # host is up) must still end cleanly and write its results, not die of SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    from fedge.simulations.device import ClientSpec

    specs = [ClientSpec.from_json(v) for v in json.loads(Path(args[0]).read_text())]
    results = run_group(specs, stop)
    Path(args[1]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
