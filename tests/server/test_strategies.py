"""Strategies as pure math: each rule against a hand computation or its definition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from fedge.config import STRATEGIES as CONFIG_STRATEGIES
from fedge.server.intake import pseudo_gradient
from fedge.server.strategies.buffer import UpdateBuffer
from fedge.server.strategies.catalog import STRATEGIES, build_strategy
from fedge.server.strategies.fedadagrad import FedAdagrad
from fedge.server.strategies.fedadam import FedAdam
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold, sgd_step, weighted_mean
from fedge.server.strategies.fedavgm import FedAvgM
from fedge.server.strategies.fedprox import FedProx
from fedge.server.strategies.fedyogi import FedYogi
from fedge.server.strategies.krum import Krum, MultiKrum, krum_scores, krum_select
from fedge.server.strategies.median import Median, coordinate_median
from fedge.server.strategies.spec import Strategy
from fedge.server.strategies.trimmed_mean import TrimmedMean, trimmed_mean


def _a(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def _round(strategy: Strategy[Any], updates: list[dict[str, np.ndarray]],
           weights: list[float]) -> dict[str, np.ndarray]:
    acc = strategy.new_accumulator()
    for u, w in zip(updates, weights, strict=True):
        acc.add({k: v.copy() for k, v in u.items()}, w)
    return strategy.aggregate(acc)


def test_the_config_and_the_catalog_name_the_same_strategies() -> None:
    assert set(CONFIG_STRATEGIES) == set(STRATEGIES)


def test_pseudo_gradients_of_the_three_update_kinds_agree() -> None:
    glob = {"w": _a(1.0, 2.0), "n": np.array([5], np.int64)}
    client = {"w": _a(0.5, 3.0), "n": np.array([7], np.int64)}
    from_weights = pseudo_gradient("weights", glob, {k: v.copy() for k, v in client.items()})
    from_delta = pseudo_gradient("delta", glob, {k: v - glob[k] for k, v in client.items()})
    np.testing.assert_array_equal(from_weights["w"], [0.5, -1.0])
    np.testing.assert_array_equal(from_delta["w"], [0.5, -1.0])
    assert from_weights["n"].dtype == np.float64 and from_weights["n"][0] == -2
    gradient = {"w": _a(0.25, -0.5)}
    assert pseudo_gradient("gradient", glob, gradient)["w"] is gradient["w"]
    with pytest.raises(ValueError, match="update kind"):
        pseudo_gradient("sign", glob, gradient)


def test_fedavg_with_lr_1_on_pseudo_gradients_is_the_weighted_mean_of_models() -> None:
    glob = {"w": _a(1.0, 1.0, 1.0)}
    models = [{"w": _a(2.0, 0.0, 1.0)}, {"w": _a(4.0, 2.0, -3.0)}]
    strategy = FedAvg()
    acc = strategy.new_accumulator()
    for m, n in zip(models, [1, 3], strict=True):
        acc.add(pseudo_gradient("weights", glob, {"w": m["w"].copy()}), n)
    new = strategy.step(glob, strategy.aggregate(acc))
    np.testing.assert_allclose(new["w"], weighted_mean(models, [1, 3])["w"], rtol=1e-6)
    np.testing.assert_allclose(new["w"], [3.5, 1.5, -2.0], rtol=1e-6)
    assert isinstance(acc, FedAvgFold) and not strategy.buffers


def test_sgd_step_with_a_server_lr_and_integer_tensors() -> None:
    out = sgd_step({"w": _a(1.0, 2.0), "n": np.array([10], np.int64)},
                   {"w": _a(1.0, -1.0), "n": np.array([2.6])}, lr=0.5)
    np.testing.assert_array_equal(out["w"], [0.5, 2.5])
    assert out["n"].dtype == np.int64 and out["n"][0] == 9  # rint(10 - 1.3)


def test_fedavgm_accumulates_heavy_ball_momentum_and_checkpoints_it() -> None:
    s = FedAvgM(server_lr=0.5, server_momentum=0.9)
    w = {"w": _a(0.0)}
    w = s.step(w, {"w": _a(1.0)})  # m = 1, w = -0.5
    w = s.step(w, {"w": _a(1.0)})  # m = 0.9 + 1 = 1.9, w = -0.5 - 0.95 = -1.45
    np.testing.assert_allclose(w["w"], [-1.45], rtol=1e-6)
    resumed = FedAvgM(server_lr=0.5, server_momentum=0.9)
    resumed.load_state(s.state())
    np.testing.assert_allclose(resumed.step(w, {"w": _a(0.0)})["w"],
                               s.step(w, {"w": _a(0.0)})["w"])


def test_fedprox_is_fedavg_on_the_server_with_mu_for_the_clients() -> None:
    s = FedProx(mu=0.3)
    assert s.client_config() == {"proximal_mu": 0.3} and FedAvg().client_config() == {}
    updates = [{"w": _a(1.0, 2.0)}, {"w": _a(3.0, 4.0)}]
    np.testing.assert_allclose(_round(s, updates, [1, 1])["w"],
                               _round(FedAvg(), updates, [1, 1])["w"])


def test_fedadam_first_steps_by_hand() -> None:
    s = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-9)
    w = s.step({"w": _a(1.0, 1.0)}, {"w": _a(2.0, -0.5)})
    # m = 0.1 g, v = 0.01 g^2, bias-corrected eta = 0.1 * sqrt(0.01) / 0.1 = 0.1:
    # each coordinate moves eta * sign(g).
    np.testing.assert_allclose(w["w"], [0.9, 1.1], rtol=1e-6)
    w = s.step(w, {"w": _a(2.0, 0.0)})
    m = 0.9 * 0.1 * 2.0 + 0.1 * 2.0
    v = 0.99 * 0.01 * 4.0 + 0.01 * 4.0
    eta = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    assert w["w"][0] == pytest.approx(0.9 - eta * m / np.sqrt(v), rel=1e-5)
    assert s.state()["steps"][0] == 2


def test_fedyogi_and_fedadagrad_second_moments_by_hand() -> None:
    yogi = FedYogi(server_lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    w = yogi.step({"w": _a(0.0)}, {"w": _a(2.0)})
    # v = 0 - 0.01 * 4 * sign(0 - 4) = 0.04; m = 0.2; w = -0.01 * 0.2 / (0.2 + 1e-3)
    assert yogi.v["w"][0] == pytest.approx(0.04)
    assert w["w"][0] == pytest.approx(-0.01 * 0.2 / (0.2 + 1e-3), rel=1e-5)
    ada = FedAdagrad(server_lr=0.1, tau=1e-9)
    w = ada.step({"w": _a(0.0)}, {"w": _a(3.0)})
    w = ada.step(w, {"w": _a(4.0)})
    # v = 9 + 16 = 25, m = g (beta1 0): w = -0.1 * 1 - 0.1 * 4 / 5 = -0.18
    assert w["w"][0] == pytest.approx(-0.18, rel=1e-5)


def test_adaptive_state_survives_a_checkpoint_round_trip() -> None:
    for cls in (FedAdam, FedYogi, FedAdagrad):
        a, b = cls(), cls()
        w = a.step({"w": _a(1.0, -1.0)}, {"w": _a(0.3, 0.1)})
        b.load_state({k: v.copy() for k, v in a.state().items()})
        np.testing.assert_array_equal(a.step(w, {"w": _a(0.2, -0.4)})["w"],
                                      b.step(w, {"w": _a(0.2, -0.4)})["w"])


def test_median_ignores_weights_and_outliers() -> None:
    updates = [{"w": _a(1.0, 10.0)}, {"w": _a(2.0, 20.0)}, {"w": _a(1000.0, -1e6)}]
    np.testing.assert_array_equal(coordinate_median(updates)["w"], [2.0, 10.0])
    s = Median()
    assert s.buffers and isinstance(s.new_accumulator(), UpdateBuffer)
    np.testing.assert_array_equal(_round(s, updates, [100, 1, 1])["w"], [2.0, 10.0])


def test_trimmed_mean_cuts_each_end() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    updates = [{"w": _a(v, -v)} for v in values]
    # trim 0.2 of 5 cuts one value at each end: mean(2, 3, 4) = 3
    np.testing.assert_allclose(trimmed_mean(updates, 0.2)["w"], [3.0, -3.0])
    np.testing.assert_allclose(trimmed_mean(updates, 0.0)["w"], [22.0, -22.0])
    np.testing.assert_allclose(_round(TrimmedMean(trim=0.2), updates, [1] * 5)["w"],
                               [3.0, -3.0])
    with pytest.raises(ValueError, match="trim"):
        trimmed_mean(updates, 0.5)


def test_krum_picks_the_most_central_update_and_multikrum_averages_the_best() -> None:
    honest = [{"w": _a(1.0, 1.0)}, {"w": _a(1.1, 0.9)}, {"w": _a(0.9, 1.0)},
              {"w": _a(1.0, 1.2)}, {"w": _a(1.05, 1.0)}]
    hostile = [{"w": _a(-8.0, 9.0)}, {"w": _a(9.0, -9.0)}]
    updates = honest + hostile
    scores = krum_scores(updates, f=2)
    # n - f - 2 = 3 nearest: the hostile ones are far from everything.
    assert scores[5] > 100 and scores[6] > 100 and max(scores[:5]) < 1
    assert krum_select(updates, f=2) == [int(np.argmin(scores))]
    assert set(krum_select(updates, f=2, m=5)) == set(range(5))
    chosen = _round(Krum(byzantine_f=2), updates, [1] * 7)["w"]
    assert any(np.array_equal(chosen, u["w"]) for u in honest)
    multi = _round(MultiKrum(byzantine_f=2), updates, [1, 1, 1, 1, 2, 1, 1])
    np.testing.assert_allclose(multi["w"], weighted_mean(honest, [1, 1, 1, 1, 2])["w"],
                               rtol=1e-6)


def test_build_strategy_uses_defaults_and_settings() -> None:
    assert isinstance(build_strategy("fedavg"), FedAvg)
    s = build_strategy("fedavgm", server_lr=2.0, server_momentum=0.5)
    assert isinstance(s, FedAvgM) and s.server_lr == 2.0 and s.server_momentum == 0.5
    k = build_strategy("krum", byzantine_f=3)
    assert isinstance(k, Krum) and k.byzantine_f == 3
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy("fedsomething")
    with pytest.raises(ValueError, match="server_lr"):
        build_strategy("fedavg", server_lr=0.0)


class _Sum:
    """An accumulator that is no fold or buffer: a plain unweighted sum."""

    def __init__(self) -> None:
        self.total: dict[str, np.ndarray] = {}
        self.count, self.total_weight = 0, 0.0

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        for name, array in update.items():
            self.total[name] = self.total.get(name, 0) + array
        self.count += 1
        self.total_weight += weight


class _UnweightedMean(Strategy[_Sum]):
    """A strategy written against the spec alone, with its own accumulator type."""

    name = "unweighted"

    def new_accumulator(self) -> _Sum:
        return _Sum()

    def aggregate(self, accumulator: _Sum) -> dict[str, np.ndarray]:
        return {n: a / accumulator.count for n, a in accumulator.total.items()}

    def step(self, weights: Mapping[str, np.ndarray],
             gradient: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return sgd_step(weights, gradient, 1.0)


def test_a_strategy_needs_only_the_spec() -> None:
    glob = {"w": _a(1.0, 1.0)}
    strategy = _UnweightedMean()
    acc = strategy.new_accumulator()
    for model, n in (({"w": _a(2.0, 0.0)}, 1), ({"w": _a(4.0, 2.0)}, 99)):
        acc.add(pseudo_gradient("weights", glob, model), n)
    new = strategy.step(glob, strategy.aggregate(acc))
    np.testing.assert_array_equal(new["w"], [3.0, 1.0])  # unweighted: examples ignored
    assert strategy.client_config() == {} and strategy.state() == {}
    assert not strategy.buffers and "unweighted" in strategy.describe()
