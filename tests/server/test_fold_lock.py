"""Folding an update holds the accumulator's lock, not the round's: polls, progress and
byte counts go on while a fold runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedge.server.registry import Registry
from fedge.server.rounds import Rounds, RoundSettings
from fedge.server.store import StateStore
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold
from fedge.tensors import fingerprint
from tests.faults.rawdevice import digits_weights


class HeldFold(FedAvgFold):
    """A fold that takes as long as the test says (a very large model, in effect)."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self._entered, self._release = entered, release

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        self._entered.set()
        assert self._release.wait(30)
        super().add(update, weight)


class HeldFedAvg(FedAvg):
    """FedAvg whose folds wait for the test."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def new_accumulator(self) -> FedAvgFold:
        return HeldFold(self.entered, self.release)


def test_polls_and_progress_do_not_wait_behind_a_fold(tmp_path: Path) -> None:
    initial = digits_weights()
    settings = RoundSettings(rounds=1, min_clients=2, fraction=1.0, round_timeout_s=60,
                             retry_backoff_s=0.1, epochs=1, lr=0.1, batch_size=8, seed=0,
                             linger_s=0.0)
    registry = Registry(60.0)
    store = StateStore(tmp_path)
    strategy = HeldFedAvg()
    rounds = Rounds(settings, fingerprint(initial), registry, store,
                    lambda _: {"accuracy": 0.0, "loss": 0.0}, initial, "digits-mlp",
                    strategy=strategy)
    # Enrolled: an anonymous device is sampled only once it has polled (the service
    # marks that), and b polls only after a's task is handed out.
    a, b = (registry.join(name, 10, {}, authenticated=True) for name in ("a", "b"))
    driver = threading.Thread(target=rounds.run, daemon=True)
    driver.start()
    try:
        train = rounds.poll(a, 10.0)
        assert train.kind == "TRAIN" and train.assignment is not None
        assignment = rounds.check_submission(a, train.assignment.task_id, 1, 10)
        folding = threading.Thread(
            target=rounds.accept, args=(assignment, {k: v.copy() for k, v in initial.items()},
                                        10), daemon=True)
        folding.start()
        assert strategy.entered.wait(10)
        started = time.monotonic()
        assert rounds.poll(b, 0.0).kind == "TRAIN"
        rounds.count_bytes(up=100)
        assert rounds.progress().reported == 0  # the fold has not ended
        assert time.monotonic() - started < 1.0
        strategy.release.set()
        folding.join(10)
        assert rounds.progress().reported == 1
    finally:
        strategy.release.set()
        rounds.stop()
        driver.join(10)
        store.close()
