"""The device's side of federated evaluation: its held-out slice, kept out of training,
and the EVALUATE task, which measures the global model (a device that trains) and the
installed edge model (every device) on that slice and reports loss, accuracy and count.

The slice is chosen per example by a hash of its content (fedge.client.data.holdout),
at the share the server gives at Join; a rescan splits the new data the same way, so an
example never moves between the training part and the held-out part. The edge part
needs numpy and onnxruntime only; torch is imported only to measure the global model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedge.client.data.holdout import split_holdout
from fedge.client.session import Session
from fedge.client.transfers import decode_weights, download
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2

if TYPE_CHECKING:
    from fedge.client.daemon import Daemon

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The held-out slice of the device's examples (empty while fraction is 0)."""

    fraction: float = 0.0
    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def split(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keeps the held-out slice of (x, y) and returns the rest, the part to train on."""
        if self.fraction <= 0 or len(y) == 0:
            self.x, self.y = x[:0], y[:0]
            return x, y
        (x_train, y_train), (self.x, self.y) = split_holdout(x, y, self.fraction)
        return x_train, y_train


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of integer labels y under logits (numerically stable)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(y)), y]))


def edge_metrics(model_dir: str, x: np.ndarray, y: np.ndarray,
                 batch_size: int = 1024) -> dict[str, float]:
    """Loss, accuracy and count of the installed edge model on (x, y), and the round it
    was built from; {} when no model is installed or there is nothing to measure."""
    from fedge.edge.runtime import ArtifactError, EdgeModel, ModelDir

    current = ModelDir(model_dir).current()
    if current is None or len(y) == 0:
        return {}
    try:  # installed after its signature was checked: its files are ours
        model = EdgeModel.open(current, threads=1)
        logits = np.concatenate([model.logits(x[i:i + batch_size])
                                 for i in range(0, len(x), batch_size)])
    except ArtifactError as exc:
        log.error("cannot measure the installed edge model %s: %s", current.name, exc)
        return {}
    return {"edge_loss": cross_entropy(logits.astype(np.float64), y),
            "edge_accuracy": float((logits.argmax(axis=1) == y).mean()),
            "edge_examples": float(len(y)), "edge_round": float(model.manifest.round)}


def global_metrics(daemon: Daemon, session: Session, version: int, x: np.ndarray,
                   y: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and count of the global model version on (x, y)."""
    from fedge.tasks.training import evaluate, load_weights

    blob = download(session, version)
    daemon.stats.bytes_down += len(blob)
    trainer = daemon.trainer
    weights = decode_weights(blob, version, daemon.specs, daemon.task.name)
    load_weights(trainer.model, weights)  # each TRAIN loads its own weights again
    scores = evaluate(daemon.task, trainer.model, x, y, trainer.device)
    return {"global_loss": scores["loss"], "global_accuracy": scores["accuracy"],
            "global_examples": float(len(y))}


def evaluate_task(daemon: Daemon, session: Session, task: fedge_pb2.Task) -> None:
    """The EVALUATE handler: measure on the held-out slice, report (naming the task)."""
    held = daemon.held_out
    metrics: dict[str, float] = {}
    try:
        if task.evaluate_global and not daemon.inference_only and len(held.y):
            metrics.update(global_metrics(daemon, session, task.model_version, held.x,
                                          held.y))
        metrics.update(edge_metrics(daemon.config.model_dir, held.x, held.y))
    except (FedgeError, ImportError) as exc:
        log.error("%s: round %d: evaluation failed: %s", daemon.config.device_id,
                  task.round, exc)
    log.info("%s: round %d: evaluated on %d held-out examples: %s", daemon.config.device_id,
             task.round, len(held.y),
             ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) or "nothing")
    report = fedge_pb2.MetricsReport(session_id=session.id, round=task.round,
                                     model_version=task.model_version, metrics=metrics,
                                     task_id=task.task_id)
    session.call(session.stub.ReportMetrics.future(report, timeout=30))
