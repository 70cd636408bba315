"""Server-side evaluation of a global model on the task's fixed test split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedge.tasks import Task
from fedge.tasks.training import evaluate, load_weights


class Evaluator:
    """Loads given weights into one resident model and scores it on the test split."""

    def __init__(self, task: Task, device: str = "cpu") -> None:
        self._task = task
        self._device = torch.device(device)
        self._model = task.build_model().to(self._device)
        splits = task.load_data()
        task.schema.check(splits.test_x, splits.test_y, f"task {task.name} test split")
        self._x, self._y = splits.test_x, splits.test_y

    def __call__(self, weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        load_weights(self._model, dict(weights))
        return evaluate(self._task, self._model, self._x, self._y, self._device)
