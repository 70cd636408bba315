"""Personalization on the device: after the last round, fine-tune the final global model
on this device's own training examples and measure both models on its held-out slice.

Two modes. ``head`` trains only the model's head (the last module that has parameters)
and keeps the shared body as the federation learnt it, as FedPer does (Arivazhagan et
al., "Federated Learning with Personalization Layers", 2019); ``full`` fine-tunes every
parameter. The held-out slice (fedge.client.data.holdout) is never trained on, in the
global rounds or here. The personalized weights stay in MODEL_DIR/personal; only the
accuracies are reported. Imports torch: loaded when a PERSONALIZE task arrives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import torch
from torch import nn

from fedge.client.channel import refusal_of
from fedge.client.session import Session
from fedge.client.transfers import decode_weights, download
from fedge.config import ClientConfig
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2
from fedge.tasks import Task
from fedge.tasks.training import evaluate, load_weights, weights_of
from fedge.tensors import to_blob

if TYPE_CHECKING:
    from fedge.client.daemon import Daemon

log = logging.getLogger(__name__)

PERSONAL_DIR = "personal"  # under the device's model_dir
WEIGHTS_FILE = "weights.safetensors"
REPORT_FILE = "personalization.json"
ARTIFACT_DIR = "artifact"  # the device-local int8 artifact (personal_artifact)


@dataclass(frozen=True)
class Examples:
    """A device's labelled examples split by holdout_mask: trained on, and held out."""

    train_x: np.ndarray
    train_y: np.ndarray
    held_x: np.ndarray
    held_y: np.ndarray


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's last module that holds any (its classifier)."""
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise ValueError("the model has no parameters")
    return list(owners[-1].parameters(recurse=False))


def fine_tune(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
              mode: str, seed: int) -> float:
    """Trains model in place on (x, y) for epochs of SGD with the task's defaults, only
    its head when mode is "head"; returns the mean training loss."""
    chosen = head_parameters(model) if mode == "head" else list(model.parameters())
    ids = {id(p) for p in chosen}
    frozen = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    for p in frozen:  # the body keeps what the federation learnt
        p.requires_grad_(False)
    d = task.defaults
    optimizer = torch.optim.SGD(chosen, lr=d.lr, momentum=d.momentum)
    generator = torch.Generator().manual_seed(seed)
    batches = max(1, -(-len(x) // d.batch_size))
    losses: list[float] = []
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator).to(x.device)
            for batch in torch.tensor_split(order, batches):
                losses.append(task.train_step(model, x[batch], y[batch], optimizer))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    model.eval()
    return float(np.mean(losses)) if losses else 0.0


def personalize(task: Task, model: nn.Module, weights: dict[str, np.ndarray],
                examples: Examples, epochs: int, mode: str, seed: int = 0
                ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Loads the global weights into model, measures them on the held-out slice, fine-
    tunes on the training part and measures again; returns the personalized weights and
    the metrics (global_* and personal_* accuracy and loss, holdout_examples)."""
    device = next(model.parameters()).device
    load_weights(model, weights)
    before = evaluate(task, model, examples.held_x, examples.held_y, device)
    x = torch.from_numpy(np.ascontiguousarray(examples.train_x)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(examples.train_y)).to(device)
    torch.manual_seed(seed)
    loss = fine_tune(task, model, x, y, epochs, mode, seed)
    after = evaluate(task, model, examples.held_x, examples.held_y, device)
    return weights_of(model), {
        "global_accuracy": before["accuracy"], "global_loss": before["loss"],
        "personal_accuracy": after["accuracy"], "personal_loss": after["loss"],
        "personal_train_loss": loss, "holdout_examples": float(len(examples.held_y)),
        "personal_head_only": float(mode == "head"), "personal_epochs": float(epochs)}


def personalize_on_device(config: ClientConfig, task: Task, model: nn.Module,
                          weights: dict[str, np.ndarray], version: int,
                          examples: Examples) -> dict[str, float]:
    """The PERSONALIZE task's work: personalize, keep the weights and the metrics in
    MODEL_DIR/personal, and return the metrics to report ({"personal_skipped": 1} when
    the device has no held-out or no training examples)."""
    if len(examples.held_y) == 0 or len(examples.train_y) == 0:
        log.warning("%s: %d training and %d held-out examples: cannot personalize",
                    config.device_id, len(examples.train_y), len(examples.held_y))
        return {"personal_skipped": 1.0}
    personal, metrics = personalize(task, model, weights, examples,
                                    config.personalize_epochs, config.personalize,
                                    seed=version)
    out = Path(config.model_dir) / PERSONAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS_FILE).write_bytes(to_blob(personal, {"round": str(version)}))
    (out / REPORT_FILE).write_text(json.dumps({"round": version, **metrics}, indent=2))
    log.info("%s: personalized the model of round %d (%s, %d epochs): held-out accuracy "
             "%.4f, global %.4f, on %d examples", config.device_id, version,
             config.personalize, config.personalize_epochs, metrics["personal_accuracy"],
             metrics["global_accuracy"], len(examples.held_y))
    return metrics


def export_personal(config: ClientConfig, task: Task, calibration: np.ndarray) -> None:
    """Writes the personalized weights kept in MODEL_DIR/personal as a device-local int8
    artifact beside them (run after the daemon's loop: the server is not needed). A
    failed export is logged: the personalization itself stands."""
    from fedge.tensors import from_blob

    out = Path(config.model_dir) / PERSONAL_DIR
    try:
        from fedge.edge.compiler.local import build_local_artifact

        weights, meta = from_blob((out / WEIGHTS_FILE).read_bytes())
        build_local_artifact(task, weights, int(meta["round"]), out / ARTIFACT_DIR,
                             calibration, config.device_id)
    except Exception:
        log.exception("%s: could not export the personalized model as an artifact",
                      config.device_id)
        return
    log.info("%s: the personalized model is a device-local artifact in %s",
             config.device_id, out / ARTIFACT_DIR)


def personalize_task(daemon: Daemon, session: Session, task: fedge_pb2.Task) -> None:
    """The PERSONALIZE handler (after the last round): fetch the final model, fine-tune
    it on the device's training examples, and report held-out accuracy personalized vs
    global. The personalized weights stay on this device."""
    blob = download(session, task.model_version)
    daemon.stats.bytes_down += len(blob)
    trainer = daemon.trainer
    x, y = trainer.x.cpu().numpy(), trainer.y.cpu().numpy()  # the training part
    config = daemon.config
    try:
        weights = decode_weights(blob, task.model_version, daemon.specs, daemon.task.name)
        metrics = personalize_on_device(config, daemon.task, trainer.model, weights,
                                        task.model_version, Examples(
                                            x, y, daemon.held_out.x, daemon.held_out.y))
    except (FedgeError, ValueError, RuntimeError) as exc:  # torch raises RuntimeError
        log.error("%s: could not personalize the model of round %d: %s",
                  config.device_id, task.model_version, exc)
        metrics = {"personal_skipped": 1.0}
    daemon.stats.personal = metrics
    if config.personal_artifact and "personal_accuracy" in metrics:
        # Slow (export, quantize) and local: done once the loop ends, not while the
        # server waits to tell this device STOP.
        daemon.after_run = lambda: export_personal(config, daemon.task, x)
    try:
        daemon.report_metrics(session, task, metrics)
    except grpc.RpcError as exc:  # training is over: the server may be gone
        log.warning("%s: could not report the personalization (%s); it is kept in "
                    "%s/personal", config.device_id, refusal_of(exc), config.model_dir)
        daemon.stop()
