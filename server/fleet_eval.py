"""Federated evaluation: sampled devices measure the global model and their installed
edge model on their held-out slice, and the server keeps the weighted means per round.

An evaluation opens after every ``eval_every_rounds``-th commit (and the last one) for
the global model, and again for the edge models once a new edge artifact is ready. A
sampled device is handed an EVALUATE task at its polls, after any TRAIN or DEPLOY, until
it reports (at most MAX_OFFERS times); devices that cannot train measure only the edge
model. The reports land in the metrics table (source ``eval``), and the per-round means,
each device weighted by its held-out count, are computed from there by
:func:`weighted_means`, a pure function.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedge.refusals import StaleRequest
from fedge.server.registry import Device
from fedge.server.round_state import TaskView
from fedge.server.sampler import sample
from fedge.server.store import StateStore

log = logging.getLogger(__name__)

SOURCE = "eval"  # the metrics table's source of the devices' evaluation reports
MAX_OFFERS = 5  # as for DEPLOY: a device that never reports is not asked forever
# What a device reports: the two models' loss, accuracy and held-out count.
GLOBAL = ("global_loss", "global_accuracy", "global_examples")
EDGE = ("edge_loss", "edge_accuracy", "edge_examples")
# The sampler's attempt number for evaluations: their draws never repeat a round's.
EVAL_ATTEMPT = 1 << 20


@dataclass
class EvalTask:
    """One device's part in one evaluation."""

    task_id: str
    round: int  # the evaluation's round: the model version measured (and reported as)
    model_version: int  # the global model to measure
    evaluate_global: bool
    offers: int = 0
    done: bool = False


def weighted_means(reports: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The evaluation of one round from its devices' reports: for the global and the edge
    model, loss and accuracy averaged with each device weighted by its held-out count,
    and the total count. A model no device measured has count 0 and no means."""
    out: dict[str, float] = {}
    for (loss, accuracy, count), prefix in ((GLOBAL, "fed"), (EDGE, "fed_edge")):
        rows = [r for r in reports if r.get(count, 0) > 0 and loss in r and accuracy in r]
        total = sum(r[count] for r in rows)
        out[f"{prefix}_examples"] = total
        if total > 0:
            out[f"{prefix}_loss"] = sum(r[loss] * r[count] for r in rows) / total
            out[f"{prefix}_accuracy"] = sum(r[accuracy] * r[count] for r in rows) / total
    return out


def recorded(store: StateStore) -> dict[int, dict[str, float]]:
    """Every round's federated evaluation, from the reports in the state database."""
    by_round: dict[int, dict[str, dict[str, float]]] = {}
    for round_, device, name, value in store.metric_rows(SOURCE):
        by_round.setdefault(round_, {}).setdefault(device, {})[name] = value
    return {r: weighted_means(list(devices.values()))
            for r, devices in sorted(by_round.items())}


class FleetEvaluation:
    """The open evaluation of a run: which devices should measure what, and their
    reports (kept in the store as they arrive)."""

    def __init__(self, every: int, fraction: float, holdout: float, seed: int,
                 store: StateStore) -> None:
        self.every = every
        self.fraction = fraction
        self.holdout = holdout  # what devices hold out of training (JoinReply)
        self._seed = seed
        self._store = store
        self._lock = threading.Lock()
        self._tasks: dict[str, EvalTask] = {}  # by device id, of the open evaluation

    def due(self, round_: int, last: bool) -> bool:
        """Whether the commit of round_ opens an evaluation of the global model."""
        return round_ > 0 and (last or round_ % self.every == 0)

    def open(self, round_: int, model_version: int, devices: Iterable[Device],
             evaluate_global: bool) -> int:
        """Opens the evaluation of round_ on a sample of devices (returns its size).

        Opening the edge evaluation of the round whose global evaluation is still open
        keeps what its devices were still to measure.
        """
        live = [d for d in devices if d.polled or d.authenticated]
        size = max(1, round(self.fraction * len(live))) if live else 0
        chosen = sample(live, size, self._seed, round_, EVAL_ATTEMPT)
        with self._lock:
            old = self._tasks
            self._tasks = {}
            for device in chosen:
                before = old.get(device.device_id)
                still = (before is not None and before.round == round_ and not before.done
                         and before.evaluate_global)
                self._tasks[device.device_id] = EvalTask(
                    secrets.token_hex(8), round_, model_version,
                    (evaluate_global or still) and not device.inference_only)
        log.info("round %d: federated evaluation of the %s on %d device(s)", round_,
                 "global model" if evaluate_global else "edge models", len(chosen),
                 extra={"event": "eval.opened", "round": round_, "devices": len(chosen)})
        return len(chosen)

    def view(self, device: Device) -> TaskView | None:
        """The device's EVALUATE task, if it is to measure something now (counted)."""
        with self._lock:
            task = self._tasks.get(device.device_id)
            if task is None or task.done or task.offers >= MAX_OFFERS:
                return None
            task.offers += 1
        return TaskView("EVALUATE", model_version=task.model_version, task_id=task.task_id,
                        round=task.round, evaluate_global=task.evaluate_global,
                        message=f"evaluate on the held-out slice (round {task.round})")

    def report(self, device_id: str, task_id: str, round_: int,
               metrics: Mapping[str, float]) -> None:
        """Records a device's answer to its EVALUATE task (refuses any other)."""
        with self._lock:
            task = self._tasks.get(device_id)
            if task is None or task.task_id != task_id or task.round != round_:
                raise StaleRequest(f"evaluation task {task_id!r} of round {round_} is not "
                                   "this device's open evaluation")
            if task.done:
                return  # a resent report: the first one counts
            task.done = True
        wanted = set(EDGE) | ({"edge_round"}) | (set(GLOBAL) if task.evaluate_global else set())
        self._store.add_metrics(round_, device_id, SOURCE,
                                {k: v for k, v in metrics.items() if k in wanted})

    def pending(self) -> int:
        """Sampled devices of the open evaluation that have not reported."""
        with self._lock:
            return sum(not t.done and t.offers < MAX_OFFERS for t in self._tasks.values())


FED_KEYS = ("fed_accuracy", "fed_loss", "fed_examples", "fed_edge_accuracy", "fed_edge_loss",
            "fed_edge_examples")


def columns(means: Mapping[str, float] | None) -> dict[str, float | int]:
    """One round's evaluation as the status and report columns (0 where none)."""
    means = means or {}
    return {k: (int(means.get(k, 0)) if k.endswith("examples") else float(means.get(k, 0.0)))
            for k in FED_KEYS}


def latest_gauges(store: StateStore) -> dict[str, float]:
    """The metrics endpoint's gauges: the newest round's federated evaluation of the
    global model and of the edge models (each the newest round that measured it)."""
    out: dict[str, float] = {}
    for round_, means in recorded(store).items():
        for prefix, name in (("fed", "fedge_federated"), ("fed_edge", "fedge_federated_edge")):
            if means.get(f"{prefix}_examples", 0) > 0:
                out[f"{name}_round"] = float(round_)
                out[f"{name}_accuracy"] = means[f"{prefix}_accuracy"]
                out[f"{name}_loss"] = means[f"{prefix}_loss"]
                out[f"{name}_examples"] = means[f"{prefix}_examples"]
    return out
