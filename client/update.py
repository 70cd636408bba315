"""What a device sends back for a TRAIN task: its update, computed and encoded.

The task's TrainConfig says which update kind (weights, delta or gradient) and which
encoding (f32, f16, int8, topk) the server wants; this module computes the update with
the trainer and encodes it, carrying top-k's dropped entries to the next round through
the device's :class:`~fedge.encodings.ErrorFeedback`. The steps run in a fixed,
visible order: train (or take the gradient), subtract the global weights (delta), with
local DP clip and noise the change (:func:`privatize`), add the carried residual
(top-k), encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.encodings import ErrorFeedback, encode
from fedge.errors import FedgeError
from fedge.privacy.mechanisms import add_gaussian_noise, clip_in_place
from fedge.protos import fedge_pb2
from fedge.tensors import fingerprint

if TYPE_CHECKING:  # the daemon imports this module without torch (inference-only)
    from fedge.client.trainer import Trainer

KIND_NAMES = {fedge_pb2.WEIGHTS: "weights", fedge_pb2.DELTA: "delta",
              fedge_pb2.GRADIENT: "gradient", fedge_pb2.UPDATE_KIND_UNSPECIFIED: "weights"}
ENCODING_NAMES = {fedge_pb2.F32: "f32", fedge_pb2.F16: "f16", fedge_pb2.INT8: "int8",
                  fedge_pb2.TOPK: "topk", fedge_pb2.ENCODING_UNSPECIFIED: "f32"}


@dataclass(frozen=True)
class UpdatePlan:
    """A TRAIN task's training settings, off the wire."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    proximal_mu: float = 0.0
    kind: str = "weights"
    encoding: str = "f32"
    topk_fraction: float = 0.1
    dp_clip: float = 0.0  # local DP: the clip norm of the update's change (0: off)
    dp_noise_multiplier: float = 0.0
    momentum: float | None = None  # None: the task's default

    @classmethod
    def from_proto(cls, cfg: fedge_pb2.TrainConfig) -> UpdatePlan:
        """Converts a TrainConfig, refusing kinds and encodings this client lacks."""
        if cfg.update_kind not in KIND_NAMES or cfg.encoding not in ENCODING_NAMES:
            raise FedgeError(f"the server asks for update kind {cfg.update_kind} / encoding "
                             f"{cfg.encoding}, which this client does not know; upgrade it")
        return cls(cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed, cfg.proximal_mu,
                   KIND_NAMES[cfg.update_kind], ENCODING_NAMES[cfg.encoding],
                   cfg.topk_fraction or 0.1, cfg.dp_clip, cfg.dp_noise_multiplier,
                   cfg.momentum if cfg.HasField("momentum") else None)


def compute_update(trainer: Trainer, weights: dict[str, np.ndarray], plan: UpdatePlan
                   ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The raw (unencoded) update of plan.kind from the global weights, and metrics."""
    if plan.kind == "gradient":
        gradient, metrics = trainer.gradient(weights, plan.batch_size, plan.seed)
        return privatize(gradient, weights, plan), metrics
    new, metrics = trainer.train(weights, epochs=plan.epochs, lr=plan.lr,
                                 batch_size=plan.batch_size, seed=plan.seed,
                                 proximal_mu=plan.proximal_mu, momentum=plan.momentum)
    if plan.kind == "delta":
        for name, w in new.items():
            np.subtract(w, weights[name], out=w, casting="unsafe")
    return privatize(new, weights, plan), metrics


def privatize(update: dict[str, np.ndarray], weights: dict[str, np.ndarray],
              plan: UpdatePlan, rng: np.random.Generator | None = None
              ) -> dict[str, np.ndarray]:
    """Local DP (when the task asks for it): the update's change from the global model
    clipped to L2 norm plan.dp_clip, plus Gaussian noise of std noise multiplier x clip;
    in place, returned. The change is the delta, the gradient, or new minus global
    weights; integer tensors (counters) are left alone. rng: the OS's entropy unless a
    test gives one (noise from a known seed could be subtracted).
    """
    if plan.dp_clip <= 0:
        return update
    floats = [n for n, x in update.items() if x.dtype.kind == "f"]
    change = ({n: update[n] - weights[n] for n in floats} if plan.kind == "weights"
              else {n: update[n] for n in floats})
    clip_in_place(change, plan.dp_clip)
    add_gaussian_noise(change, plan.dp_noise_multiplier * plan.dp_clip,
                       rng if rng is not None else np.random.default_rng())
    if plan.kind == "weights":
        for n in floats:
            np.add(weights[n], change[n], out=update[n], casting="unsafe")
    return update


def encode_update(update: dict[str, np.ndarray], plan: UpdatePlan,
                  feedback: ErrorFeedback) -> dict[str, np.ndarray]:
    """The arrays to send: top-k goes through error feedback, the rest straight."""
    if plan.encoding == "topk":
        return feedback.encode(update, fingerprint(update), "topk", plan.topk_fraction)
    return encode(update, plan.encoding, plan.topk_fraction)
