"""Secure rounds with real client processes killed by SIGKILL at each stage: the round
commits with the survivors (their masks removed, the range check passed), and with too
few survivors the round is retried instead of committed or hung."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedge.server.app import FedgeServer
from fedge.server.secure_round import MASKED, SHARE, UNMASK, SecureRound
from tests.fleet import Fleet
from tests.processes import Processes

CLIENTS = 6
LOGS: list[Path] = []  # where the client processes write (for a failure's message)


def _secure(server: FedgeServer) -> SecureRound | None:
    with server.rounds.cond:
        return server.rounds.current.secure


def _when(server: FedgeServer, ready: Callable[[SecureRound], bool],
          timeout: float = 240) -> SecureRound:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        secure = _secure(server)
        if secure is not None:
            with server.rounds.cond:
                if ready(secure):
                    return secure
        time.sleep(0.005)
    logs = "".join(p.read_text(errors="replace")[-1500:]
                   for p in sorted(Path(LOGS[0]).glob("dev-*.log"))[:2]) if LOGS else ""
    raise AssertionError(f"the secure round never reached the awaited point\n{logs}")


def _fleet(fleet: Fleet, procs: Processes, tmp: Path, **server: object
           ) -> tuple[FedgeServer, dict[str, subprocess.Popen[bytes]]]:
    parts = fleet.partitions("digits-mlp", CLIENTS)
    LOGS[:] = [procs.tmp]
    # linger_s: the killed devices stay live (unheard of for less than the device
    # timeout), so the server would linger its whole time after the round for their STOP.
    s = fleet.server(rounds=1, min_clients=CLIENTS, secure_aggregation=True,
                     secure_stage_timeout_s=4.0, round_timeout_s=40.0, linger_s=0.2, **server)
    port = s.start()
    clients = {}
    for i, part in enumerate(parts):
        device = f"dev-{i}"
        clients[device] = procs.start(
            device, "client", "--server", f"127.0.0.1:{port}", "--data", str(part),
            "--device-id", device, "--insecure", "--token", s.tokens.create(device))
    return s, clients


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["advertised", "shared", "masked"])
def test_sigkill_30_percent_at_each_stage(fleet: Fleet, procs: Processes, tmp_path: Path,
                                          stage: str) -> None:
    server, clients = _fleet(fleet, procs, tmp_path, quorum_fraction=0.5)
    victims = ["dev-1", "dev-4"]  # a third of the round
    if stage == "advertised":  # their polls brought keys: the round's roster lists them
        _when(server, lambda s: s.stage >= SHARE)
    elif stage == "shared":
        _when(server, lambda s: s.stage >= MASKED)
    else:
        _when(server, lambda s: set(victims) <= set(s.sum.weights) or s.stage >= UNMASK)
    for v in victims:
        clients[v].send_signal(signal.SIGKILL)
    secure = _when(server, lambda s: s.stage > UNMASK)
    records = server.wait(120)
    assert records[-1].round == 1, server.rounds.failure
    survivors = set(secure.sum.weights)
    assert records[-1].clients == len(survivors)
    if stage != "masked":  # killed before training ended: their inputs never came
        assert not survivors & set(victims)
        assert len(survivors) == CLIENTS - len(victims)
    else:
        assert survivors == {f"dev-{i}" for i in range(CLIENTS)}


@pytest.mark.slow
def test_sigkill_below_threshold_retries(fleet: Fleet, procs: Processes,
                                         tmp_path: Path) -> None:
    server, clients = _fleet(fleet, procs, tmp_path, quorum_fraction=0.5,
                             max_round_attempts=1)
    _when(server, lambda s: s.stage >= MASKED)
    for v in ["dev-0", "dev-1", "dev-2", "dev-3"]:
        clients[v].send_signal(signal.SIGKILL)
    records = server.wait(120)
    assert [r.round for r in records] == [0]
    assert "missed its quorum" in server.rounds.failure
    assert "secure round" in server.rounds.failure
