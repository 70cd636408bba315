"""The commit pipeline: a closed round's accumulator becomes the next global model, which
is written to the state directory (and measured on the test split afterwards, by
fedge.server.eval_worker).

Order on disk: the server optimizer's state (if the strategy has any), then the round's
checkpoint (temp file, fsync, rename), then its row in one SQLite transaction. A row is
what makes a round committed, so a crash at any point leaves the last commit whole: a
state file or checkpoint without a row is ignored and overwritten by the retry. Nothing
here takes the round's lock.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np

from fedge.server.next_blob import filled_blob
from fedge.server.round_state import RoundState
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.spec import Strategy
from fedge.tensors import from_blob, to_blob

log = logging.getLogger(__name__)


def model_blob(arrays: Mapping[str, np.ndarray], task_name: str, round_: int) -> bytes:
    """A model as its checkpoint and download bytes (safetensors with the run's names)."""
    return to_blob(arrays, {"task": task_name, "round": str(round_)})


def next_model(strategy: Strategy[Any], global_model: Mapping[str, np.ndarray],
               state: RoundState) -> dict[str, np.ndarray]:
    """The global model after a round: the strategy's aggregate of the round's
    pseudo-gradients (the intake folded differences against global_model), then its
    server step."""
    with state.fold_lock:  # folds have ended when a round closes; the lock says so
        gradient = strategy.aggregate(state.fold)
    return strategy.step(global_model, gradient)


def write_commit(store: StateStore, strategy: Strategy[Any], record: RoundRecord,
                 blob: bytes) -> RoundRecord:
    """Writes the optimizer's state, then the checkpoint and the row (see module doc)."""
    # The optimizer's state goes to disk before the round's row, so that a restart from
    # this round resumes it (a state file without a row is ignored).
    optimizer_state = strategy.state()
    if optimizer_state:
        store.write_server_state(record.round, to_blob(
            optimizer_state, {"strategy": strategy.name}))
    return store.commit(record, blob)


def commit_round(store: StateStore, strategy: Strategy[Any], task_name: str,
                 global_model: Mapping[str, np.ndarray], state: RoundState, sampled: int,
                 ) -> tuple[RoundRecord, dict[str, np.ndarray], bytes]:
    """Computes and durably commits a closed round, not yet evaluated (its accuracy and
    loss are None until fedge.server.eval_worker attaches them); returns its record, the
    new global model (views of its blob: the model is held once) and its blob."""
    weights = next_model(strategy, global_model, state)
    # A laid-out blob is a bytearray, read as bytes from here on: nothing writes it.
    blob = (cast(bytes, filled_blob(state.next_blob, weights))
            if state.next_blob is not None else model_blob(weights, task_name, state.number))
    del weights  # the blob's views replace them
    weights, _ = from_blob(blob, copy=False)
    for array in weights.values():  # a laid-out blob is a bytearray: keep the model fixed
        array.flags.writeable = False
    record = RoundRecord(
        round=state.number, accuracy=None, loss=None, clients=state.fold.count,
        examples=state.examples, bytes_up=state.bytes_up, bytes_down=state.bytes_down,
        seconds=time.monotonic() - state.started, sampled=sampled)
    return write_commit(store, strategy, record, blob), weights, blob


def restore_strategy(store: StateStore, strategy: Strategy[Any], round_: int) -> None:
    """Loads the server optimizer's state saved with round_, if this strategy's."""
    saved = store.read_server_state(round_)
    if saved is None:
        return
    arrays, meta = from_blob(saved)
    if meta.get("strategy") != strategy.name:
        log.warning("round %d was committed by strategy %r; %s starts with fresh "
                    "optimizer state", round_, meta.get("strategy"), strategy.name)
        return
    strategy.load_state(arrays)
    if arrays:
        log.info("resumed %s optimizer state from round %d", strategy.name, round_)


def starting_point(store: StateStore, evaluate: Callable[[Mapping[str, np.ndarray]],
                                                         dict[str, float]],
                   initial: Mapping[str, np.ndarray], task_name: str,
                   ) -> tuple[RoundRecord, bytes]:
    """The committed round a server starts from: the last one in store (a resume), or
    round 0, the initial model, evaluated and committed first. A resumed round that was
    committed but not evaluated (a crash before its evaluation ended) is evaluated now."""
    latest = store.latest()
    if latest is not None:
        record, blob = latest
        if record.accuracy is None:
            metrics = evaluate(from_blob(blob, copy=False)[0])
            store.set_metrics(record.round, metrics["accuracy"], metrics["loss"])
            record = dataclasses.replace(record, accuracy=metrics["accuracy"],
                                         loss=metrics["loss"])
            log.info("round %d was committed but not evaluated; evaluated now",
                     record.round, extra={"event": "round.evaluated", "round": record.round})
        log.info("resuming from committed round %d (accuracy %.4f)", record.round,
                 record.accuracy, extra={"event": "run.resumed", "round": record.round})
        return record, blob
    metrics = evaluate(initial)
    blob = model_blob(initial, task_name, 0)
    record = store.commit(RoundRecord(0, metrics["accuracy"], metrics["loss"], 0, 0, 0, 0,
                                      0.0), blob)
    log.info("round 0 (initial model): accuracy %.4f", record.accuracy,
             extra={"event": "round.initial", "accuracy": record.accuracy})
    return record, blob
