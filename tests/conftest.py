"""Fixtures shared by every room's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
