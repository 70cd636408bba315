"""Which TRAIN tasks this daemon has finished, so that one handed out again is not
trained again.

The server hands a device its open task on every poll until the round stops waiting for
it. A daemon whose upload was refused, or could not get through before the deadline,
would otherwise retrain and resend in a loop until the round closes (hundreds of times
when the server is busy). The ledger settles a task on the device's side once its
update was accepted, refused for good, or given up on; and bounds how often one task is
trained at all (a daemon that must join again mid-task trains it again, a few times at
most).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_TRAININGS = 3  # times one task may be trained (after a rejoin, say)
REMEMBERED = 64  # tasks kept; older ones belong to rounds long closed


class TaskLedger:
    """Task ids this daemon trained, how often, and whether it is done with them."""

    def __init__(self) -> None:
        self._tasks: OrderedDict[str, tuple[int, bool]] = OrderedDict()  # trainings, done

    def begin(self, task_id: str) -> bool:
        """Whether to train task_id now (counting it if so): not when it is settled here
        or has been trained MAX_TRAININGS times."""
        trainings, done = self._tasks.get(task_id, (0, False))
        if done or trainings >= MAX_TRAININGS:
            return False
        self._remember(task_id, (trainings + 1, False))
        return True

    def settle(self, task_id: str) -> None:
        """The daemon is done with task_id: accepted, refused for good, or given up."""
        trainings, _ = self._tasks.get(task_id, (1, False))
        self._remember(task_id, (trainings, True))

    def settled(self, task_id: str) -> bool:
        """Whether the daemon is done with task_id."""
        return self._tasks.get(task_id, (0, False))[1]

    def _remember(self, task_id: str, entry: tuple[int, bool]) -> None:
        self._tasks[task_id] = entry
        self._tasks.move_to_end(task_id)
        while len(self._tasks) > REMEMBERED:
            self._tasks.popitem(last=False)
