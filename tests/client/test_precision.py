"""Training precision: float32 by default on a CPU, bf16 autocast when asked (and by
default on a CUDA device that supports it); the weights a device sends stay float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.client.trainer import Trainer, describe, pick_precision
from fedge.config import ClientConfig
from fedge.errors import ConfigError
from fedge.tasks import load_task
from fedge.tasks.training import evaluate, weights_of


def test_auto_is_float32_on_a_cpu_and_bf16_when_asked() -> None:
    cpu = torch.device("cpu")
    assert pick_precision(cpu, "auto") is None
    assert pick_precision(cpu, "fp32") is None
    assert pick_precision(cpu, "bf16") is torch.bfloat16
    assert describe(cpu, torch.bfloat16) == "cpu bf16" and describe(cpu) == "cpu"
    with pytest.raises(ValueError, match="precision"):
        pick_precision(cpu, "fp16")
    with pytest.raises(ConfigError, match="precision"):
        ClientConfig(precision="fp16")


def test_bf16_autocast_trains_and_returns_float32_weights() -> None:
    task = load_task("digits-mlp")
    splits = task.load_data()
    x, y = splits.train_x[:600], splits.train_y[:600]
    start = weights_of(task.build_model())
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(task, x, y, "cpu", precision)
        weights, _ = trainer.train(start, epochs=5, lr=0.1, batch_size=32, seed=1)
        assert all(v.dtype == np.float32 for v in weights.values())
        model = task.build_model()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        runs[precision] = evaluate(task, model, splits.test_x, splits.test_y)["accuracy"]
    # bf16 really ran (the weights differ from fp32's) and learned as well, near enough.
    assert runs["bf16"] > 0.85 and abs(runs["bf16"] - runs["fp32"]) < 0.05, runs
    bf16 = Trainer(task, x, y, "cpu", "bf16")
    fp32 = Trainer(task, x, y, "cpu", "fp32")
    a, _ = bf16.train(start, epochs=1, lr=0.05, batch_size=32, seed=1)
    b, _ = fp32.train(start, epochs=1, lr=0.05, batch_size=32, seed=1)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_fedsgd_gradients_under_bf16_are_float32_and_close() -> None:
    task = load_task("digits-mlp")
    splits = task.load_data()
    start = weights_of(task.build_model())
    grads = {p: Trainer(task, splits.train_x[:256], splits.train_y[:256], "cpu",
                        p).gradient(start, batch_size=64, seed=0)[0]
             for p in ("fp32", "bf16")}
    for name, g in grads["fp32"].items():
        assert grads["bf16"][name].dtype == np.float32
        assert np.linalg.norm(grads["bf16"][name] - g) <= 0.05 * np.linalg.norm(g) + 1e-6
