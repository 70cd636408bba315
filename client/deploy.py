"""The daemon's hand-off of a shipped edge artifact to ``edge.runtime``: verify it
against the trusted key, check that this device runs it, install it atomically, and
measure it on the device's own labelled data. Needs numpy and onnxruntime only
(imported when a DEPLOY arrives)."""

from __future__ import annotations

import logging
import time

import numpy as np

from fedge.config import ClientConfig
from fedge.errors import FedgeError

log = logging.getLogger(__name__)


def install_and_evaluate(blob: bytes, config: ClientConfig, x: np.ndarray,
                         y: np.ndarray) -> dict[str, float]:
    """Installs the packed artifact blob into config.model_dir and returns on-device
    metrics (accuracy on x, y and the mean batch-1 latency).

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
    manifest = ModelDir(config.model_dir).install(files, key)  # loads and runs it first
    metrics = {"edge_examples": float(len(y)), "edge_installed": 1.0}
    try:
        model = EdgeModel(files, manifest, threads=1)
        # A device without labelled data still times the model, on zeros of its input.
        sample = (x[: min(len(x), 50)] if len(x) else
                  np.zeros((10, *(int(d) for d in manifest.input_shape[1:])),
                           manifest.input_dtype))
        started = time.perf_counter()
        for row in range(len(sample)):
            model.logits(sample[row : row + 1])
        metrics["edge_latency_ms_batch1"] = ((time.perf_counter() - started)
                                             / max(len(sample), 1) * 1e3)
        if len(y) == 0:
            log.info("%s: installed the edge model of round %d; no labelled data to "
                     "measure it on", config.device_id, manifest.round)
            return metrics
        accuracy = model.accuracy(x, y)
    except ArtifactError as exc:
        log.error("%s: installed the edge model of round %d, but cannot measure it on the "
                  "local data: %s", config.device_id, manifest.round, exc)
        return metrics
    log.info("%s: installed the edge model of round %d; on-device accuracy %.4f on %d "
             "examples", config.device_id, manifest.round, accuracy, len(y))
    return {"edge_accuracy": accuracy, **metrics}
