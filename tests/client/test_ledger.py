"""The daemon's task ledger: each task trained once (a few times at most), and never
again once settled on the device's side."""

from __future__ import annotations

from fedge.client.ledger import MAX_TRAININGS, REMEMBERED, TaskLedger


def test_a_settled_task_is_not_trained_again() -> None:
    ledger = TaskLedger()
    assert ledger.begin("t1")
    ledger.settle("t1")
    assert ledger.settled("t1") and not ledger.begin("t1")
    assert ledger.begin("t2")  # the next task is


def test_one_task_is_trained_a_bounded_number_of_times() -> None:
    ledger = TaskLedger()
    assert [ledger.begin("t") for _ in range(MAX_TRAININGS + 2)] == (
        [True] * MAX_TRAININGS + [False, False])


def test_the_ledger_forgets_old_tasks() -> None:
    ledger = TaskLedger()
    for k in range(REMEMBERED + 10):
        ledger.begin(f"t{k}")
        ledger.settle(f"t{k}")
    assert not ledger.settled("t0") and ledger.settled(f"t{REMEMBERED + 9}")
