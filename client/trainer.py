"""Local training with torch: CUDA when present, the CPU otherwise.

On CUDA the trainer runs the task's step under bf16 autocast where the GPU supports it
(Ampere and later), keeps the local examples on the GPU, copied once from pinned memory
without blocking, and returns float32 weights either way. fp16 is not offered: the task's
own train_step calls backward() and step(), so a GradScaler could not be slipped in, and
fp16 without one underflows small gradients.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from fedge.tasks import Task
from fedge.tasks.training import load_weights, weights_of

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" is the first CUDA device when torch sees one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


PRECISIONS = ("auto", "fp32", "bf16")


def pick_precision(device: torch.device, requested: str = "auto") -> torch.dtype | None:
    """The autocast dtype for training on device, or None for plain float32: "auto" is
    bf16 on a CUDA device that supports it and float32 everywhere else (on a CPU, bf16
    autocast is slower than float32 for the small models edge devices train)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{requested!r}")
    if requested == "bf16":
        return torch.bfloat16
    if requested == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def describe(device: torch.device, precision: torch.dtype | None = None) -> str:
    """The accelerator as a device announces it: "cpu", "cuda:NAME", plus " bf16" when
    it trains under bf16 autocast."""
    name = f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" \
        else device.type
    return name + (" bf16" if precision is torch.bfloat16 else "")


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """array as a tensor on device; to a GPU through pinned memory, without blocking
    (the copy overlaps with whatever the host does next, and the stream orders it
    before the first kernel that reads it)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class Trainer:
    """Holds one model and the device's data on the chosen device; trains on request."""

    def __init__(self, task: Task, x: np.ndarray, y: np.ndarray, device: str = "auto",
                 precision: str = "auto") -> None:
        self.task = task
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision)
        self.model = task.build_model().to(self.device)
        self.x = to_device(x, self.device)
        self.y = to_device(y, self.device)
        # A process's first optimizer imports torch._dynamo, which takes about as long as
        # importing torch; paid here, before the device joins, it no longer holds up the
        # first round it trains in (see bench/round_latency.py).
        torch.optim.SGD(self.model.parameters(), lr=0.0)

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def set_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Replaces the local examples (after a rescan found the data changed)."""
        self.x = to_device(x, self.device)
        self.y = to_device(y, self.device)

    def _autocast(self) -> torch.autocast:
        """The precision context of one training step (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.precision or torch.float32,
                              enabled=self.precision is not None)

    def train(self, weights: dict[str, np.ndarray], epochs: int, lr: float, batch_size: int,
              seed: int, proximal_mu: float = 0.0, momentum: float | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Trains from weights for some epochs of SGD; returns new weights and metrics.

        proximal_mu: FedProx's coefficient; > 0 adds mu/2 * ||w - weights||^2 to the loss
        (as its gradient, mu * (w - weights), added to each parameter's gradient).
        momentum: SGD momentum; None takes the task's default.
        """
        load_weights(self.model, weights)
        self.model.train()
        hooks = self._proximal_hooks(proximal_mu) if proximal_mu > 0 else []
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr,
                                    momentum=self.task.defaults.momentum if momentum is None
                                    else momentum)
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        losses: list[float] = []
        # Near-equal batches of at most batch_size: a runt last batch (one example of
        # 225 at batch 32) takes a wild step that momentum then amplifies.
        num_batches = max(1, -(-len(self.x) // batch_size))
        for _ in range(epochs):
            order = torch.randperm(len(self.x), generator=generator).to(self.device)
            for batch in torch.tensor_split(order, num_batches):
                with self._autocast():
                    losses.append(self.task.train_step(self.model, self.x[batch],
                                                       self.y[batch], optimizer))
        for hook in hooks:
            hook.remove()
        metrics = {"train_loss": float(np.mean(losses)) if losses else 0.0,
                   "train_seconds": time.perf_counter() - started}
        return weights_of(self.model), metrics

    def _proximal_hooks(self, mu: float) -> list[torch.utils.hooks.RemovableHandle]:
        """Gradient hooks adding mu * (w - w_start) to every trainable parameter's
        gradient, which is FedProx's proximal term without touching the task's step."""
        hooks = []
        for param in self.model.parameters():
            if not param.requires_grad:
                continue
            start = param.detach().clone()

            def add_proximal(grad: torch.Tensor, param: torch.Tensor = param,
                             start: torch.Tensor = start) -> torch.Tensor:
                return grad + mu * (param.detach() - start)

            hooks.append(param.register_hook(add_proximal))
        return hooks

    def gradient(self, weights: dict[str, np.ndarray], batch_size: int, seed: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The mean loss gradient at weights over the local batches (FedSGD: no step).

        Runs the task's own train_step with an optimizer that records each batch's
        gradient instead of stepping, so the loss is the task's. Returns a gradient for
        every tensor of the model's state (zero for buffers that are not trained).
        """
        load_weights(self.model, weights)
        self.model.train()
        recorder = _GradientRecorder(self.model.parameters())
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        num_batches = max(1, -(-len(self.x) // batch_size))
        order = torch.randperm(len(self.x), generator=generator).to(self.device)
        losses = []
        for batch in torch.tensor_split(order, num_batches):
            with self._autocast():
                losses.append(self.task.train_step(self.model, self.x[batch], self.y[batch],
                                                   recorder))
        by_param = {id(p): g for p, g in recorder.sums.items()}
        named = dict(self.model.named_parameters())
        out = {}
        for name, value in self.model.state_dict().items():
            total = by_param.get(id(named[name])) if name in named else None
            out[name] = ((total / recorder.steps).cpu().numpy() if total is not None
                         else np.zeros_like(value.detach().cpu().numpy()))
        metrics = {"train_loss": float(np.mean(losses)) if losses else 0.0,
                   "train_seconds": time.perf_counter() - started}
        return out, metrics


class _GradientRecorder(torch.optim.Optimizer):
    """An "optimizer" whose step sums the parameters' gradients and leaves them be."""

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        super().__init__(params, {})
        self.sums: dict[torch.Tensor, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Adds each parameter's gradient to its running sum."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    acc = self.sums.get(p)
                    self.sums[p] = p.grad.detach().clone() if acc is None else acc + p.grad
        self.steps += 1
