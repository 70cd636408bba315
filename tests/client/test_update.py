"""The client's side of the update algebra: gradients, deltas, FedProx's proximal term,
and the plan read off a TrainConfig."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedge.client.trainer import Trainer
from fedge.client.update import UpdatePlan, compute_update, encode_update
from fedge.encodings import ErrorFeedback, decode
from fedge.protos import fedge_pb2
from fedge.tasks import load_task
from fedge.tasks.training import load_weights, weights_of
from fedge.tensors import fingerprint

TASK = load_task("digits-mlp")


def _trainer(n: int = 96) -> tuple[Trainer, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    splits = TASK.load_data()
    trainer = Trainer(TASK, splits.train_x[:n], splits.train_y[:n], "cpu")
    return trainer, weights_of(TASK.build_model())


def test_gradient_is_the_mean_of_the_batch_gradients_and_takes_no_step() -> None:
    trainer, weights = _trainer(96)
    grad, metrics = trainer.gradient(weights, batch_size=32, seed=0)
    # Three equal batches: the mean of batch gradients is the full-data gradient.
    model = TASK.build_model()
    load_weights(model, weights)
    F.cross_entropy(model(trainer.x), trainer.y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None
        np.testing.assert_allclose(grad[name], p.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert metrics["train_loss"] > 2.0
    np.testing.assert_array_equal(weights_of(trainer.model)["0.weight"], weights["0.weight"])


def test_delta_is_new_weights_minus_global() -> None:
    trainer, weights = _trainer()
    plan = UpdatePlan(epochs=1, lr=0.1, batch_size=32, seed=3, kind="delta")
    delta, _ = compute_update(trainer, {k: v.copy() for k, v in weights.items()}, plan)
    trainer2, _ = _trainer()
    new, _ = trainer2.train(weights, epochs=1, lr=0.1, batch_size=32, seed=3)
    for name in weights:
        np.testing.assert_allclose(delta[name], new[name] - weights[name], atol=1e-6)


def test_the_proximal_term_pulls_toward_the_global_weights_and_is_removed_after() -> None:
    def drift(mu: float) -> float:
        trainer, weights = _trainer()
        new, _ = trainer.train(weights, epochs=2, lr=0.1, batch_size=32, seed=1,
                               proximal_mu=mu)
        return float(sum(np.sum((new[n] - weights[n]) ** 2) for n in weights))

    free, prox = drift(0.0), drift(5.0)
    assert prox < 0.5 * free
    # Hooks do not outlive the call: training again without mu matches a fresh trainer.
    trainer, weights = _trainer()
    trainer.train(weights, epochs=1, lr=0.1, batch_size=32, seed=1, proximal_mu=5.0)
    after, _ = trainer.train(weights, epochs=1, lr=0.1, batch_size=32, seed=2)
    fresh, _ = _trainer()[0].train(weights, epochs=1, lr=0.1, batch_size=32, seed=2)
    for name in weights:
        np.testing.assert_allclose(after[name], fresh[name], atol=1e-6)


def test_the_plan_comes_from_the_task_and_topk_carries_a_residual() -> None:
    cfg = fedge_pb2.TrainConfig(epochs=1, lr=0.1, batch_size=32, seed=5, proximal_mu=0.2,
                                update_kind=fedge_pb2.GRADIENT, encoding=fedge_pb2.TOPK,
                                topk_fraction=0.05)
    plan = UpdatePlan.from_proto(cfg)
    assert (plan.kind, plan.encoding, plan.topk_fraction, plan.proximal_mu) == (
        "gradient", "topk", 0.05, 0.2)
    assert UpdatePlan.from_proto(fedge_pb2.TrainConfig()).kind == "weights"
    trainer, weights = _trainer()
    grad, _ = compute_update(trainer, weights, plan)
    feedback = ErrorFeedback()
    wire = encode_update(grad, plan, feedback)
    sent = decode(wire, fingerprint(grad), "topk")
    for name in grad:
        np.testing.assert_allclose(sent[name] + feedback.residual[name], grad[name],
                                   atol=1e-7)


def test_the_task_s_momentum_applies_unless_the_server_sends_one() -> None:
    assert UpdatePlan.from_proto(fedge_pb2.TrainConfig(momentum=0.0)).momentum == 0.0
    assert UpdatePlan.from_proto(fedge_pb2.TrainConfig()).momentum is None  # an old server
    trainer, weights = _trainer(96)
    runs = {m: compute_update(trainer, {k: v.copy() for k, v in weights.items()},
                              UpdatePlan(epochs=1, lr=0.1, batch_size=32, seed=3, momentum=m))[0]
            for m in (None, 0.9, 0.0)}
    for name in weights:  # None is the task's 0.9; 0 is plain SGD, a different model
        np.testing.assert_array_equal(runs[None][name], runs[0.9][name])
    assert not np.allclose(runs[0.0]["0.weight"], runs[0.9]["0.weight"])
    # Plain SGD by hand: the same three batches, w -= lr * grad.
    model = TASK.build_model()
    load_weights(model, weights)
    order = torch.randperm(96, generator=torch.Generator().manual_seed(3))
    for batch in torch.tensor_split(order, 3):
        model.zero_grad()
        F.cross_entropy(model(trainer.x[batch]), trainer.y[batch]).backward()
        with torch.no_grad():
            for p in model.parameters():
                assert p.grad is not None
                p.sub_(0.1 * p.grad)
    for name, value in weights_of(model).items():
        np.testing.assert_allclose(runs[0.0][name], value, rtol=1e-5, atol=1e-6)
