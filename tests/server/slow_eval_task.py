"""A test task: digits-mlp whose test-split evaluation is slow (each batch sleeps), so
that a test can see the server's evaluation run beside the next round. Loaded by the
server as ``tests.server.slow_eval_task:task``; devices train plain digits-mlp (same name,
model and data)."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from fedge.tasks import Task, load_task
from fedge.tasks.training import classification_eval_step

DELAY_S = 1.5  # per evaluation: the digits test split is one batch


def _slow_eval_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    time.sleep(DELAY_S)
    return classification_eval_step(model, x, y)


def task() -> Task:
    """digits-mlp with a sleeping eval_step."""
    return dataclasses.replace(load_task("digits-mlp"), eval_step=_slow_eval_step)
