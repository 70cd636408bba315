"""The asynchronous driver: one thread that commits each full buffer of an AsyncRounds
as the next model version, with the same durability as a round.

For each full buffer: the strategy aggregates its staleness-weighted updates, the
aggregate is scaled to FedBuff's step (fedge.server.staleness.step_scale) and the
strategy's server step (FedAvg, FedAvgM, FedAdam, ...) makes the next model; the version
is evaluated every ``eval_every`` versions (and the last), then committed by
fedge.server.commit.write_commit (optimizer state, checkpoint, row: a ``kill -9`` loses
at most the updates of buffers not yet committed, and a restart resumes from the last
version). Edge artifacts follow the deployments' schedule of versions. Like the round
driver, it is the error boundary: an unexpected exception ends the run with a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedge.server.commit import model_blob, write_commit
from fedge.server.driver import Driver
from fedge.server.staleness import step_scale
from fedge.server.store import RoundRecord

if TYPE_CHECKING:
    from fedge.server.async_rounds import AsyncRounds, Buffer

log = logging.getLogger(__name__)


def scaled(gradient: Mapping[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """gradient times scale (floating tensors only; the arrays are the caller's)."""
    out = dict(gradient)
    if scale != 1.0:
        for name, array in out.items():
            if array.dtype.kind == "f":
                out[name] = array * np.asarray(scale, dtype=array.dtype)
    return out


class AsyncDriver(Driver):
    """Moves an AsyncRounds forward from its driver thread."""

    def __init__(self, rounds: AsyncRounds) -> None:
        super().__init__(rounds)
        self._async = rounds
        self._metrics: dict[str, float] | None = None  # the last evaluation

    def _drive(self) -> None:
        rounds = self._async
        log.info("asynchronous training: %d devices at once, a version every %d updates, "
                 "staleness %s, at most %d versions", rounds.asynchronous.concurrency,
                 rounds.asynchronous.buffer_size, rounds.asynchronous.staleness,
                 rounds.asynchronous.max_staleness)
        while True:
            buffer = rounds.next_full()
            if buffer is None:
                break
            self._commit_buffer(buffer)
        self._wait_for_edge()
        rounds.linger()

    def _evaluate(self, version: int, weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The version's accuracy and loss: measured every eval_every versions and at the
        last; between, the last measured values."""
        rounds = self._async
        every = rounds.asynchronous.eval_every
        if self._metrics is None or version % every == 0 or version >= rounds.settings.rounds:
            self._metrics = rounds.evaluate(weights)
        return self._metrics

    def _commit_buffer(self, buffer: Buffer) -> None:
        rounds = self._async
        version = rounds.model_version + 1
        started = time.perf_counter()
        with buffer.fold_lock:  # its folds have ended; the lock says so
            gradient = rounds.strategy.aggregate(buffer.fold)
        gradient = scaled(gradient, step_scale(buffer.weight, buffer.examples))
        weights = rounds.strategy.step(rounds.global_model, gradient)
        metrics = self._evaluate(version, weights)
        blob = model_blob(weights, rounds.task_name, version)
        record = write_commit(rounds.store, rounds.strategy, RoundRecord(
            round=version, accuracy=metrics["accuracy"], loss=metrics["loss"],
            clients=buffer.fold.count, examples=buffer.examples, bytes_up=buffer.bytes_up,
            bytes_down=buffer.bytes_down, seconds=time.monotonic() - buffer.started,
            sampled=buffer.reserved), blob)
        last = version >= rounds.settings.rounds
        if rounds.deploy is not None and rounds.deploy.due(version, last):
            rounds.deploy.request(version, weights)  # before DONE: polls wait for it
        rounds.install_version(record, weights, blob, buffer.distances)
        mean = sum(buffer.staleness) / max(1, len(buffer.staleness))
        log.info("version %d committed: accuracy %.4f, loss %.4f, %d update(s), mean "
                 "staleness %.2f, %.2f s", version, record.accuracy, record.loss,
                 record.clients, mean, time.perf_counter() - started,
                 extra={"event": "round.committed", "round": version,
                        "accuracy": record.accuracy, "clients": record.clients})
        if rounds.on_commit is not None:
            rounds.on_commit(record)
