"""Server-side evaluation of a global model on the task's fixed test split."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedge.tasks import Task
from fedge.tasks.training import evaluate, load_weights


class Evaluator:
    """Scores given weights on the test split.

    The model is built without memory (on torch's meta device) and given the weights'
    own arrays, so evaluating holds no second copy of a large model. A model that keeps
    tensors outside its state (which the meta device cannot build) gets one resident
    copy instead, loaded for each evaluation.
    """

    def __init__(self, task: Task, device: str = "cpu") -> None:
        self._task = task
        self._device = torch.device(device)
        self._resident: nn.Module | None = None
        splits = task.load_data()
        task.schema.check(splits.test_x, splits.test_y, f"task {task.name} test split")
        self._x, self._y = splits.test_x, splits.test_y

    def _model(self, weights: Mapping[str, np.ndarray]) -> nn.Module:
        if self._resident is None and self._device.type == "cpu":
            with torch.device("meta"):
                model = self._task.build_model()
            with warnings.catch_warnings():
                # Read-only views of the model blob: evaluation never writes to them.
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                state = {k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in weights.items()}
            model.load_state_dict(state, strict=True, assign=True)
            if not any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
                return model
        if self._resident is None:
            self._resident = self._task.build_model().to(self._device)
        load_weights(self._resident, dict(weights))
        return self._resident

    def __call__(self, weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        return evaluate(self._task, self._model(weights), self._x, self._y, self._device)
