"""The daemon's hand-off of a shipped edge artifact to ``edge.runtime``: verify it
against the trusted key, check that this device runs it, install it atomically, and
measure it on the device's own labelled data (the held-out slice when there is one).

A canary (server/rollout.py) measures the model it was running (the incumbent) on the
same examples first, and rolls back to it by itself when the new model's accuracy falls
below the incumbent's minus the margin the server gave. A ROLLBACK task rolls back from
a halted artifact. Needs numpy and onnxruntime only (imported when a task arrives)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.config import ClientConfig
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2

if TYPE_CHECKING:
    from fedge.client.daemon import Daemon
    from fedge.client.session import Session

log = logging.getLogger(__name__)


def _round_of(path: Path | None) -> int:
    """The round an installed version was built from (its directory's name says)."""
    if path is None:
        return 0
    return int(path.name.split("-")[1])


def _measure(model: Any, manifest: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """A model's mean batch-1 latency and (with labels) accuracy on x, y."""
    # A device without labelled data still times the model, on zeros of its input.
    sample = (x[: min(len(x), 50)] if len(x) else
              np.zeros((10, *(int(d) for d in manifest.input_shape[1:])),
                       manifest.input_dtype))
    started = time.perf_counter()
    for row in range(len(sample)):
        model.logits(sample[row : row + 1])
    metrics = {"latency": (time.perf_counter() - started) / max(len(sample), 1) * 1e3}
    if len(y):
        metrics["accuracy"] = model.accuracy(x, y)
    return metrics


def _incumbent(model_dir: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How the model installed now does on x, y ({} if none, or it cannot be run)."""
    from fedge.edge.runtime import ArtifactError, EdgeModel

    current = model_dir.current()
    if current is None:
        return {}
    try:
        model = EdgeModel.open(current, threads=1)
        return {**_measure(model, model.manifest, x, y), "round": float(_round_of(current))}
    except ArtifactError as exc:
        log.warning("cannot measure the installed edge model %s: %s", current.name, exc)
        return {}


def install_and_evaluate(blob: bytes, config: ClientConfig, x: np.ndarray,
                         y: np.ndarray, canary_margin: float | None = None
                         ) -> dict[str, float]:
    """Installs the packed artifact blob into config.model_dir and returns on-device
    metrics (accuracy on x, y and the mean batch-1 latency, and the same of the model it
    replaced); canary_margin (a canary only) rolls back to the replaced model when the
    new one's accuracy is below the old one's minus the margin.

    Raises ArtifactError (a FedgeError) for an artifact that does not verify, needs a
    newer onnxruntime, or does not load and run here; the model that was installed
    before keeps serving. A model installed but not measurable on the local data (its
    inputs do not fit) is reported installed, without accuracy.
    """
    from fedge.edge.runtime import ArtifactError, EdgeModel, ModelDir, load_public_key
    from fedge.edge.runtime.artifact import unpack

    if not config.trust_key:
        raise FedgeError("no trusted key configured (--trust-key): refusing the artifact")
    key = load_public_key(config.trust_key)
    files = unpack(blob)
    model_dir = ModelDir(config.model_dir)
    before = _incumbent(model_dir, x, y)
    manifest = model_dir.install(files, key)  # loads and runs it first
    metrics = {"edge_examples": float(len(y)), "edge_installed": 1.0}
    if before and before["round"] != manifest.round:
        metrics["edge_incumbent_round"] = before["round"]
        metrics["edge_incumbent_latency_ms_batch1"] = before["latency"]
        if "accuracy" in before:
            metrics["edge_incumbent_accuracy"] = before["accuracy"]
    try:
        now = _measure(EdgeModel(files, manifest, threads=1), manifest, x, y)
    except ArtifactError as exc:
        log.error("%s: installed the edge model of round %d, but cannot measure it on the "
                  "local data: %s", config.device_id, manifest.round, exc)
        return metrics
    metrics["edge_latency_ms_batch1"] = now["latency"]
    if "accuracy" not in now:
        log.info("%s: installed the edge model of round %d; no labelled data to "
                 "measure it on", config.device_id, manifest.round)
        return metrics
    metrics["edge_accuracy"] = now["accuracy"]
    log.info("%s: installed the edge model of round %d; on-device accuracy %.4f on %d "
             "examples", config.device_id, manifest.round, now["accuracy"], len(y))
    old = metrics.get("edge_incumbent_accuracy")
    if canary_margin is not None and old is not None and now["accuracy"] < old - canary_margin:
        model_dir.rollback()
        metrics["edge_rolled_back"] = 1.0
        metrics["edge_round"] = before["round"]
        log.warning("%s: canary: the edge model of round %d scores %.4f on the held-out "
                    "data against %.4f for round %d (margin %g): rolled back",
                    config.device_id, manifest.round, now["accuracy"], old,
                    int(before["round"]), canary_margin)
    return metrics


def roll_back(config: ClientConfig, round_: int) -> dict[str, float]:
    """Rolls the installed edge model back from the artifact of round_ to the one it
    replaced; what to report (edge_rolled_back 0 when it does not run that artifact or
    keeps no previous model)."""
    from fedge.edge.runtime import ArtifactError, ModelDir

    model_dir = ModelDir(config.model_dir)
    current = model_dir.current()
    if current is None or _round_of(current) != round_:
        return {"edge_rolled_back": 0.0, "edge_round": float(_round_of(current))}
    try:
        back = model_dir.rollback()
    except ArtifactError as exc:
        log.error("%s: told to roll back from the edge model of round %d, but: %s",
                  config.device_id, round_, exc)
        return {"edge_rolled_back": 0.0, "edge_round": float(round_)}
    log.warning("%s: rolled back from the edge model of round %d to round %d",
                config.device_id, round_, _round_of(back))
    return {"edge_rolled_back": 1.0, "edge_round": float(_round_of(back))}


def deploy_task(daemon: Daemon, session: Session, task: fedge_pb2.Task) -> None:
    """The DEPLOY handler: fetch, verify, load and install an edge artifact, and report
    how it does on this device's data; a refused artifact is reported and the old model
    kept."""
    from fedge.client.transfers import download
    from fedge.tensors import sha256_hex

    config, stats = daemon.config, daemon.stats
    if not config.trust_key:  # a choice, not a fault: say so once, calmly
        if not stats.edge_refused:
            log.info("%s: no --trust-key: this device does not install edge models (give "
                     "it the server's public key to install them)", config.device_id)
        stats.edge_refused += 1
        daemon.report_metrics(session, task, {"edge_refused": 1.0})
        return
    try:
        blob = download(session, task.model_version, artifact=True)
        stats.bytes_down += len(blob)
        if task.artifact_sha256 and sha256_hex(blob) != task.artifact_sha256:
            raise FedgeError("the artifact is not the one the DEPLOY task named")
        x, y = daemon.labelled_examples()
        metrics = install_and_evaluate(bytes(blob), config, x, y, (
            task.canary_margin if task.canary else None))
        stats.edge_installed += 1
        stats.edge_version = int(metrics.get("edge_round", task.model_version))
    except (FedgeError, ImportError) as exc:
        log.error("%s: refused the edge artifact of round %d, keeping the installed model: "
                  "%s", config.device_id, task.model_version, exc)
        stats.edge_refused += 1
        metrics = {"edge_refused": 1.0}
    daemon.report_metrics(session, task, metrics)


def rollback_task(daemon: Daemon, session: Session, task: fedge_pb2.Task) -> None:
    """The ROLLBACK handler: roll back from the halted artifact and report."""
    metrics = roll_back(daemon.config, task.model_version)
    if metrics["edge_rolled_back"]:
        daemon.stats.edge_version = int(metrics["edge_round"])
    report = fedge_pb2.MetricsReport(session_id=session.id, round=task.model_version,
                                     model_version=task.model_version, metrics=metrics)
    session.call(session.stub.ReportMetrics.future(report, timeout=30))
