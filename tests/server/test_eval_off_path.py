"""The server's test evaluation runs off the round's critical path (server/eval_worker.py):
the next round opens while it runs, its metrics reach the state afterwards, the last
round's always; every N rounds by option; a crash before it is made good on restart."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.config import SimulateConfig
from fedge.server.eval_worker import EvalWorker, due
from fedge.server.store import RoundRecord, StateStore
from fedge.simulations.runner import simulate
from tests.fleet import Fleet
from tests.server import slow_eval_task


def _events(caplog: pytest.LogCaptureFixture, event: str) -> dict[int, float]:
    """When each round's log event of that name was logged (the first per round)."""
    out: dict[int, float] = {}
    for r in caplog.records:
        if getattr(r, "event", "") == event:
            out.setdefault(int(r.__dict__["round"]), r.created)
    return out


def test_the_next_round_opens_while_the_slow_evaluation_runs(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(task="tests.server.slow_eval_task:task", rounds=3)
    seen: list[tuple[int, float | None]] = []
    server.rounds.on_commit = server.rounds.evaluations.on_evaluated = \
        lambda r: seen.append((r.round, r.accuracy))
    port = server.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    records = server.wait(timeout=120)
    fleet.join_clients()

    opened, evaluated = _events(caplog, "round.opened"), _events(caplog, "round.evaluated")
    # Round 2 opened before round 1's evaluation (DELAY_S seconds) ended.
    assert opened[2] < evaluated[1], (opened, evaluated)
    assert evaluated[1] - opened[2] > 0.5 * slow_eval_task.DELAY_S
    # Every round's metrics reached the state afterwards, the last one before wait().
    assert [r.round for r in records] == [0, 1, 2, 3]
    assert all(r.accuracy is not None and r.loss is not None for r in records), records
    assert records[-1].accuracy is not None and records[-1].accuracy > 0.5
    # Each round came to on_commit at its commit without metrics, then with them.
    for round_ in (1, 2, 3):
        calls = [a for r, a in seen if r == round_]
        assert calls[0] is None and calls[-1] is not None, seen


def test_eval_every_n_rounds_in_sync_mode(tmp_path: Path) -> None:
    report = simulate(SimulateConfig(task="digits-mlp", clients=2, rounds=3, eval_every=2,
                                     out=str(tmp_path), edge=False, backend="threads"))
    accuracy = {r["round"]: r["accuracy"] for r in report["rounds"]}
    assert accuracy[1] is None  # not due
    assert accuracy[2] is not None and accuracy[3] is not None  # due, and the last
    assert report["final"]["accuracy"] == accuracy[3]
    assert "| 1 | - | - |" in (tmp_path / "summary.md").read_text()
    store = StateStore(tmp_path / "state")
    try:
        assert [r.accuracy is None for r in store.rounds()] == [False, True, False, False]
    finally:
        store.close()


def test_a_round_committed_but_not_evaluated_is_evaluated_on_restart(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    first = fleet.server(rounds=1)
    port = first.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    assert first.wait(timeout=60)[-1].round == 1
    fleet.join_clients()
    # What a crash between the commit and its evaluation leaves: the row, no metrics.
    with sqlite3.connect(fleet.tmp / "state" / "fedge.db") as db:
        db.execute("UPDATE rounds SET accuracy=NULL, loss=NULL WHERE round=1")
    db.close()

    second = fleet.server(rounds=1)  # resumes from round 1, the run's last
    assert second.rounds.model_version == 1
    (row,) = [r for r in second.store.rounds() if r.round == 1]
    assert row.accuracy is not None and row.accuracy > 0.5 and row.loss is not None


def _store_with_rounds(root: Path, count: int) -> StateStore:
    store = StateStore(root)
    for k in range(count):
        store.commit(RoundRecord(k, None, None, 0, 0, 0, 0, 0.0), b"model %d" % k)
    return store


def test_at_most_one_evaluation_runs_and_one_waits(tmp_path: Path) -> None:
    store = _store_with_rounds(tmp_path, 4)
    running: list[int] = []
    at_once: list[int] = []

    def slow(weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        running.append(1)
        at_once.append(len(running))
        time.sleep(0.4)
        running.pop()
        return {"accuracy": float(weights["r"][0]) / 10, "loss": 1.0}

    worker = EvalWorker(store, slow)
    records = store.rounds()
    started = time.monotonic()
    worker.submit(records[1], {"r": np.array([1.0])})  # runs
    worker.submit(records[2], {"r": np.array([2.0])})  # waits
    assert time.monotonic() - started < 0.3
    worker.submit(records[3], {"r": np.array([3.0])}, last=True)  # waits for round 1
    assert time.monotonic() - started >= 0.3
    worker.finish(3, {"r": np.array([3.0])})
    assert max(at_once) == 1
    assert [r.accuracy for r in store.rounds()] == [None, 0.1, 0.2, 0.3]
    store.close()


def test_a_large_model_commit_waits_for_the_evaluation_in_flight(tmp_path: Path) -> None:
    """queue 0 (the spool sums a large model into the next blob): no second model waits
    beside the one being evaluated, so the server never holds a fourth copy."""
    store = _store_with_rounds(tmp_path, 3)
    held: list[int] = []

    def slow(weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        time.sleep(0.4)
        return {"accuracy": float(weights["r"][0]) / 10, "loss": 1.0}

    worker = EvalWorker(store, slow)
    worker.queue = 0
    records = store.rounds()
    started = time.monotonic()
    worker.submit(records[1], {"r": np.array([1.0])})  # runs
    held.append(int(time.monotonic() - started >= 0.3))
    worker.submit(records[2], {"r": np.array([2.0])}, last=True)  # waits for round 1
    held.append(int(time.monotonic() - started >= 0.3))
    worker.finish(2, {"r": np.array([2.0])})
    assert held == [0, 1]
    assert [r.accuracy for r in store.rounds()] == [None, 0.1, 0.2]
    store.close()


def test_rounds_not_due_are_skipped_and_the_last_never() -> None:
    assert [r for r in range(1, 8) if due(r, 3, last=False)] == [3, 6]
    assert due(7, 3, last=True) and due(5, 1, last=False)


def test_the_evaluation_thread_has_its_own_torch_thread_count(tmp_path: Path) -> None:
    store = _store_with_rounds(tmp_path, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a simulation's process-wide count
    try:
        inside: list[int] = []

        def measure(weights: Mapping[str, np.ndarray]) -> dict[str, float]:
            inside.append(torch.get_num_threads())
            return {"accuracy": 0.5, "loss": 1.0}

        worker = EvalWorker(store, measure, threads=3)
        worker.finish(1, {})
        later: list[int] = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert inside == [3]  # the evaluation's own count...
        assert torch.get_num_threads() == 1 and later == [1]  # ...and nobody else's
    finally:
        torch.set_num_threads(before)
        store.close()
