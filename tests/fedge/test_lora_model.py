"""with_lora: the frozen base leaves the model's state but still computes; training moves
the adapters and the head only (needs the optional peft package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.tasks.lora import parameter_count
from fedge.tasks.lora_text import encoder, lora_encoder, lora_task, synthetic
from fedge.tasks.training import load_weights, weights_of

pytest.importorskip("peft")


def test_the_state_is_the_adapters_and_head_and_the_base_is_shared() -> None:
    model = lora_encoder()
    state, whole = parameter_count(model)
    assert state / whole < 0.01
    names = list(model.state_dict())
    assert all(".lora_A." in n or ".lora_B." in n or ".head." in n for n in names), names
    assert [n for n, _ in model.named_parameters()] == names  # what the optimizer steps
    # Two builds share the frozen base and the initial adapters (server and devices).
    again = lora_encoder()
    x = torch.from_numpy(synthetic(20, 4).test_x)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
        # Adapters start as B = 0: the wrapped model computes what the base does.
        assert torch.allclose(model(x), encoder()(x), atol=1e-6)


def test_training_moves_the_state_and_leaves_the_base() -> None:
    task = lora_task()
    model = task.build_model()
    frozen = {n: b.clone() for n, b in model.named_buffers()}
    start = weights_of(model)
    data = synthetic(64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        task.train_step(model, torch.from_numpy(data.train_x[:32]),
                        torch.from_numpy(data.train_y[:32]), optimizer)
    after = weights_of(model)
    assert all(not np.array_equal(start[n], after[n]) for n in after if ".lora_B." in n)
    assert all(torch.equal(b, frozen[n]) for n, b in model.named_buffers())
    fresh = task.build_model()
    load_weights(fresh, after)  # strict: the state's names are exactly the adapters'
    x = torch.from_numpy(data.test_x)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
