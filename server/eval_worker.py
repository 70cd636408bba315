"""The server's test evaluation, off the round's critical path (synchronous rounds).

A committed round's model is handed to one background thread that scores it on the
task's test split and attaches accuracy and loss to the round's row
(StateStore.set_metrics); the driver opens the next round meanwhile. What is exact:

* **Which rounds.** Rounds whose number is a multiple of ``eval_every`` (1: every round),
  and always the run's last committed round. The others stay *not evaluated*: their row's
  accuracy and loss are NULL (None in a RoundRecord, "-" in tables, absent from plots).
* **At most one in flight, one waiting.** While an evaluation runs, one more committed
  round may wait for it. A commit that finds that slot taken (evaluation slower than a
  round) waits for the evaluation in flight to end before the driver goes on: rounds
  then slow to evaluation's pace instead of falling behind it (``eval_every`` is the
  knob for that, and a warning names it). Chosen over skipping to the newest model so
  that every due round gets its accuracy whatever the machine's load (the curve, the
  report and ``eval_every``'s contract stay exact), and over a longer queue because the
  measured accuracy would lag ever further behind the model and each queued round
  would hold a model copy: at most two models are held here. A large model (one the
  spool sums into the next blob) gets no waiting slot (``queue`` 0): a commit waits for
  the evaluation in flight, so the server holds the evaluated model, the new one and
  the next blob, never a fourth copy (the under-3x memory target).
* **When it shows.** A round's record reaches ``on_commit`` twice: at commit (accuracy
  None unless it was evaluated there) and again when its metrics are attached. The state
  row, ``fedge status``, status.json and the metrics endpoint show them from then on.
* **The end of a run.** :meth:`EvalWorker.finish` (the driver calls it before the run
  ends, however it ends but a crash) waits for the evaluation in flight, then evaluates
  the last committed round if it has no metrics yet: the final accuracy is always there
  before ``fedge server`` prints it and before a simulation writes its report.
* **A crash** between a commit and its evaluation leaves the round committed with NULL
  metrics; a restart evaluates the round it resumes from (commit.starting_point), and
  earlier rounds whose evaluation was lost stay not evaluated.
* **Threads.** The worker sets its own torch intra-op thread count (``threads``; 0: the
  machine's cores). With torch's OpenMP build that count is per thread: the driver, the
  gRPC handlers and a simulation's trainers keep the process's count (one, in a
  simulation); only the global default that threads started later inherit is shared,
  and it is put back at once (see _pin_threads).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from fedge.server.store import RoundRecord, StateStore

log = logging.getLogger(__name__)

Evaluate = Callable[[Mapping[str, np.ndarray]], dict[str, float]]


def due(round_: int, every: int, last: bool) -> bool:
    """Whether a committed round is evaluated: every N-th round, and the last."""
    return last or round_ % max(1, every) == 0


def _pin_threads(threads: int) -> None:
    """Gives the calling thread its own torch intra-op thread count and leaves the
    process's default as it was.

    torch.set_num_threads sets the calling thread's OpenMP count and a process-wide
    default that each thread reads the first time it runs an op. Reading the count first
    fixes this thread's own; a short-lived thread then puts the default back, so threads
    started later (a simulation's trainers) keep the count the process chose.
    """
    import torch

    before = torch.get_num_threads()  # initializes this thread's count (see above)
    wanted = threads if threads > 0 else (os.cpu_count() or 1)
    if wanted == before:
        return
    torch.set_num_threads(wanted)
    restore = threading.Thread(target=torch.set_num_threads, args=(before,),
                               name="eval-threads-restore")
    restore.start()
    restore.join()


class EvalWorker:
    """One background thread that evaluates committed rounds (see the module docstring).

    on_evaluated: called with the round's record once its metrics are attached.
    """

    def __init__(self, store: StateStore, evaluate: Evaluate, every: int = 1,
                 threads: int = 0,
                 on_evaluated: Callable[[RoundRecord], None] | None = None) -> None:
        self._store, self._evaluate = store, evaluate
        self.every, self.threads = every, threads
        self.queue = 1  # rounds that may wait for the evaluation in flight: 1 or 0
        self.on_evaluated = on_evaluated
        self._cond = threading.Condition()
        self._waiting: tuple[RoundRecord, Mapping[str, np.ndarray]] | None = None
        self._running: int | None = None  # the round being evaluated
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # an evaluation that raised

    def submit(self, record: RoundRecord, weights: Mapping[str, np.ndarray],
               last: bool = False) -> None:
        """Queues a committed round's model for evaluation if it is due; returns at once.
        weights must not change afterwards (a committed model's views are read-only)."""
        if self.error is not None:  # the driver's error boundary ends the run
            raise RuntimeError(f"the server's test evaluation failed: {self.error}")
        if not due(record.round, self.every, last):
            return
        with self._cond:
            if self._slot_taken():
                log.warning("round %d waits for the evaluation of round %d: evaluating "
                            "takes longer than a round (--eval-every N evaluates less "
                            "often)", record.round,
                            self._waiting[0].round if self._waiting else self._running,
                            extra={"event": "round.eval_behind", "round": record.round})
            while self._slot_taken():
                self._cond.wait()
            self._waiting = (record, weights)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="evaluate",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _slot_taken(self) -> bool:
        """Whether a due round must wait to be queued (call under the condition)."""
        return self._waiting is not None or (self.queue == 0 and self._running is not None)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no evaluation runs or waits; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._running is not None or self._waiting is not None:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def finish(self, round_: int, weights: Mapping[str, np.ndarray]) -> None:
        """Before the run ends: waits for the evaluation in flight, then makes sure the last
        committed round (round_, its model weights) is evaluated. Raises if an
        evaluation failed."""
        self.wait_idle()
        rows = [r for r in self._store.rounds() if r.round == round_]
        if rows and rows[0].accuracy is None and self.error is None:
            self.submit(rows[0], weights, last=True)
            self.wait_idle()
        if self.error is not None:
            raise RuntimeError(f"the server's test evaluation failed: {self.error}")

    def _work(self) -> None:
        _pin_threads(self.threads)
        while True:
            with self._cond:
                while self._waiting is None:
                    self._cond.wait()
                record, weights = self._waiting
                self._waiting, self._running = None, record.round
                self._cond.notify_all()  # a commit waiting for the slot may take it
            try:
                started = time.perf_counter()
                metrics = self._evaluate(weights)
                del weights  # the worker holds no model between evaluations
                self._store.set_metrics(record.round, metrics["accuracy"], metrics["loss"])
                done = dataclasses.replace(record, accuracy=metrics["accuracy"],
                                           loss=metrics["loss"])
                log.info("round %d evaluated: accuracy %.4f, loss %.4f (%.2f s)",
                         record.round, metrics["accuracy"], metrics["loss"],
                         time.perf_counter() - started,
                         extra={"event": "round.evaluated", "round": record.round,
                                "accuracy": metrics["accuracy"]})
                if self.on_evaluated is not None:
                    self.on_evaluated(done)
            except Exception as exc:  # kept for finish(): the driver's error boundary
                log.exception("evaluating round %d failed", record.round)
                self.error = exc
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
