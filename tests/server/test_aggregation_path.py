"""Every strategy x update kind the math allows, through the server's aggregation path
(decode -> pseudo-gradient, finite, norm -> accumulate -> aggregate -> server step) on
real updates from the torch trainer, without gRPC."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from fedge.client.trainer import Trainer
from fedge.client.update import UpdatePlan, compute_update
from fedge.encodings import decode, encode
from fedge.server.intake import prepare
from fedge.server.strategies.catalog import STRATEGIES, build_strategy
from fedge.simulations.partition import iid
from fedge.tasks import load_task
from fedge.tasks.training import evaluate, load_weights, weights_of
from fedge.tensors import fingerprint
from fedge.wire import UPDATE_KIND_NAMES as UPDATE_KINDS

TASK = load_task("digits-mlp")
CLIENTS = 5
OPTIONS = {"krum": {"byzantine_f": 1}, "multikrum": {"byzantine_f": 1}}
# FedSGD moves by one small gradient step; the adaptive methods by eta per coordinate.
SERVER_LR = {"gradient": 0.5}


@cache
def _setup() -> tuple[dict[str, np.ndarray], list[Trainer]]:
    torch.manual_seed(0)
    splits = TASK.load_data()
    parts = iid(len(splits.train_y), CLIENTS, seed=0)
    trainers = [Trainer(TASK, splits.train_x[p], splits.train_y[p], "cpu") for p in parts]
    return weights_of(TASK.build_model()), trainers


@cache
def _updates(kind: str) -> list[tuple[dict[str, np.ndarray], int]]:
    glob, trainers = _setup()
    plan = UpdatePlan(epochs=1, lr=0.1, batch_size=32, seed=1, kind=kind)
    return [(compute_update(t, {k: v.copy() for k, v in glob.items()}, plan)[0],
             t.num_examples) for t in trainers]


def _metrics(weights: dict[str, np.ndarray]) -> dict[str, float]:
    model = TASK.build_model()
    load_weights(model, weights)
    splits = TASK.load_data()
    return evaluate(TASK, model, splits.test_x, splits.test_y)


def _aggregate(strategy_name: str, kind: str, encoding: str = "f32") -> dict[str, np.ndarray]:
    """One round as the server runs it: decode, turn each update into a checked
    pseudo-gradient, accumulate, aggregate, step."""
    glob, _ = _setup()
    specs = fingerprint(glob)
    lr = SERVER_LR.get(kind) if strategy_name in ("fedavg", "median", "trimmed-mean", "krum",
                                                  "multikrum", "fedprox") else None
    strategy = build_strategy(strategy_name, server_lr=lr, **OPTIONS.get(strategy_name, {}))
    acc = strategy.new_accumulator()
    for update, n in _updates(kind):
        arrays = decode(encode({k: v.copy() for k, v in update.items()}, encoding), specs,
                        encoding)
        acc.add(prepare(arrays, glob, kind, 0.0, "refuse"), n)
    return strategy.step(glob, strategy.aggregate(acc))


COMBINATIONS = [(s, k) for s in STRATEGIES for k in UPDATE_KINDS
                if not (s == "fedprox" and k == "gradient")]


@pytest.mark.parametrize(("strategy", "kind"), COMBINATIONS,
                         ids=[f"{s}-{k}" for s, k in COMBINATIONS])
def test_every_strategy_and_update_kind_improves_the_model(strategy: str, kind: str) -> None:
    glob, _ = _setup()
    new = _aggregate(strategy, kind)
    assert fingerprint(new) == fingerprint(glob)
    assert all(np.isfinite(a).all() for a in new.values())
    before, after = _metrics(glob), _metrics(new)
    assert after["loss"] < before["loss"] - 0.01
    if kind != "gradient":  # a gradient update is one small step; local training is many
        assert after["accuracy"] > before["accuracy"] + 0.3


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_weights_and_deltas_give_the_same_global_model(strategy: str) -> None:
    """Each update becomes its pseudo-gradient against the global model before the
    fold: ``fl(w_g - w_k) == -fl(w_k - w_g)``, so every strategy lands on the very same
    model whichever of the two the clients send (folding weights and converting the
    aggregate, as the server once did, differed by float32 cancellation)."""
    from_weights = _aggregate(strategy, "weights")
    from_delta = _aggregate(strategy, "delta")
    for name in from_weights:
        np.testing.assert_array_equal(from_delta[name], from_weights[name])


def test_lossy_encodings_stay_close_to_f32() -> None:
    exact = _aggregate("fedavg", "delta")
    for encoding, tolerance in (("f16", 1e-3), ("int8", 2e-2)):
        approx = _aggregate("fedavg", "delta", encoding)
        for name in exact:
            np.testing.assert_allclose(approx[name], exact[name], atol=tolerance)
