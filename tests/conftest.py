"""Fixtures shared by every room's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedge.config import ServerConfig
from fedge.server.app import FedgeServer
from tests.fleet import Fleet
from tests.processes import Processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """fedge commands as OS processes, killed at teardown if still running."""
    p = Processes(tmp_path)
    yield p
    p.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Servers and client daemon threads, all stopped at teardown."""
    fleet = Fleet(tmp_path)
    yield fleet
    fleet.close()


# The fault and secure-aggregation tests' servers: a real FedgeServer on 127.0.0.1. No
# edge artifact after the last round (distilled, timed and signed: seconds a server)
# unless a test asks for one, as the fleet's servers.
BASE = dict(host="127.0.0.1", port=0, rounds=1, min_clients=2, insecure=True,
            poll_seconds=1.0, linger_s=0.5, edge=False)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., FedgeServer]]:
    """make_server(**settings): a server with these defaults and state in
    tmp_path (not started); every one made is shut down at teardown."""
    made: list[FedgeServer] = []

    def make(**overrides: object) -> FedgeServer:
        settings: dict[str, object] = {**BASE, "state_dir": str(tmp_path / "state"),
                                       **overrides}
        server = FedgeServer(ServerConfig(**settings))  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.shutdown(grace=0.1)
