"""Central DP around the FedAvg family (fedge.server.strategies.dp) and the run's
privacy budget (fedge.server.budget), without gRPC: the noise a round's aggregate
carries, each device's bounded influence, adaptive clipping, the checkpointed clip norm,
and epsilon against dp-accounting, also after a restart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedge.config import ServerConfig, SimulateConfig
from fedge.errors import ConfigError
from fedge.privacy.mechanisms import l2_norm, split_noise_multiplier
from fedge.server.budget import PrivacyBudget, default_delta
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.dp import CentralDP, LocalDP, with_privacy
from fedge.server.strategies.fedadam import FedAdam
from fedge.server.strategies.fedavg import FedAvg
from fedge.server.strategies.median import Median
from tests.fedge.test_privacy import spread_ok

dp_accounting = pytest.importorskip("dp_accounting")


def aggregate(strategy: CentralDP, updates: list[dict[str, np.ndarray]],
              weights: list[float] | None = None) -> dict[str, np.ndarray]:
    fold = strategy.new_accumulator()
    for k, update in enumerate(updates):
        fold.add({n: a.copy() for n, a in update.items()}, (weights or [1.0] * 99)[k])
    return strategy.aggregate(fold)


def test_the_aggregate_of_zero_updates_carries_noise_of_z_c_over_n() -> None:
    z, clip, n = 0.7, 2.5, 8
    zeros = [{"w": np.zeros(120_000, np.float32)} for _ in range(n)]
    dp = CentralDP(FedAvg(), z, clip, rng=np.random.default_rng(3))
    mean = aggregate(dp, zeros)["w"]
    assert spread_ok(mean, z * clip / n)  # std z C on the sum, divided by n
    assert not spread_ok(mean, z * clip)  # a noise that forgot to divide
    assert dp.last is not None and dp.last.sum_std == pytest.approx(z * clip)


def test_with_adaptive_clipping_the_sum_carries_the_split_noise() -> None:
    z, clip, n = 1.0, 1.0, 4
    dp = CentralDP(FedAvg(), z, clip, adaptive=True, rng=np.random.default_rng(4))
    mean = aggregate(dp, [{"w": np.zeros(120_000, np.float32)} for _ in range(n)])["w"]
    assert spread_ok(mean, split_noise_multiplier(z)[0] * clip / n)
    assert not spread_ok(mean, z * clip / n)


def test_one_device_moves_the_aggregate_by_at_most_c_over_n() -> None:
    """Neighbouring rounds (one device's update replaced by anything, however large,
    and with any example count) give aggregates at most C/n apart before noise."""
    rng = np.random.default_rng(5)
    clip, n = 1.5, 5
    honest = [{"w": rng.normal(0, 0.1, 1000).astype(np.float32)} for _ in range(n - 1)]
    for other in ({"w": np.zeros(1000, np.float32)},
                  {"w": np.full(1000, 1e6, np.float32)},
                  {"w": rng.normal(0, 50, 1000).astype(np.float32)}):
        base = aggregate(CentralDP(FedAvg(), 0.0, clip), [*honest, {"w": np.zeros(1000,
                                                                                np.float32)}])
        moved = aggregate(CentralDP(FedAvg(), 0.0, clip), [*honest, other],
                          weights=[1.0] * (n - 1) + [1e9])  # a huge example count too
        assert l2_norm({"w": moved["w"] - base["w"]}) <= clip / n * (1 + 1e-5)
    # Without the clip the large one would have dominated: the bound is the clip's doing.
    plain = FedAvg().new_accumulator()
    for update in [*honest, {"w": np.full(1000, 1e6, np.float32)}]:
        plain.add(update, 1.0)
    assert l2_norm(plain.result()) > 1000 * clip


def test_adaptive_clipping_moves_c_to_the_target_quantile_of_the_norms() -> None:
    rng = np.random.default_rng(6)
    # Update norms around 10 (log-normal): C starts at 0.1 and climbs to their median;
    # then with quantile 0.9 it settles higher, near their 90th percentile.
    norms = np.exp(rng.normal(np.log(10.0), 0.3, 20_000))
    for quantile in (0.5, 0.9):
        dp = CentralDP(FedAvg(), 0.1, 0.1, adaptive=True, target_quantile=quantile,
                       clip_lr=0.2, rng=rng)
        for _ in range(150):
            picks = rng.choice(norms, 20)
            aggregate(dp, [{"w": np.array([x, 0.0], np.float32)} for x in picks])
        want = float(np.quantile(norms, quantile))
        assert dp.clip == pytest.approx(want, rel=0.15), (quantile, dp.clip, want)


def test_the_clip_norm_and_the_inner_state_are_checkpointed() -> None:
    dp = CentralDP(FedAdam(), 1.0, 0.5, adaptive=True, rng=np.random.default_rng(7))
    grad = aggregate(dp, [{"w": np.ones(4, np.float32)} for _ in range(3)])
    dp.step({"w": np.zeros(4, np.float32)}, grad)
    state = dp.state()
    again = CentralDP(FedAdam(), 1.0, 0.5, adaptive=True)
    again.load_state(state)
    assert again.clip == dp.clip != 0.5
    assert again.inner.state().keys() == dp.inner.state().keys()
    assert dp.name == "dp+fedadam"


def test_central_dp_refuses_robust_strategies_and_local_dp_takes_them() -> None:
    with pytest.raises(ValueError, match="FedAvg family"):
        CentralDP(Median(), 1.0, 1.0)
    local = LocalDP(Median(), 0.5, 2.0)
    assert local.client_config() == {"dp_clip": 2.0, "dp_noise_multiplier": 0.5}
    with pytest.raises(ConfigError, match="cannot protect strategy 'median'"):
        ServerConfig(insecure=True, dp="central", strategy="median")
    with pytest.raises(ConfigError, match="needs differential privacy on"):
        SimulateConfig(target_epsilon=3.0)
    with pytest.raises(ConfigError, match="applies to --dp central"):
        SimulateConfig(dp="local", dp_adaptive_clip=True)
    config = SimulateConfig(dp="local", strategy="median")
    assert isinstance(with_privacy(Median(), config), LocalDP)


def _commit(store: StateStore, round_: int) -> None:
    store.commit(RoundRecord(round_, 0.5, 1.0, 1, 1, 0, 0, 0.0), b"blob%d" % round_)


def theirs(rounds: list[tuple[int, int]], z: float, delta: float) -> float:
    """epsilon by dp-accounting for rounds of (sampled, fleet) drawn without
    replacement, computed here (rounds alike composed at once: composition does not
    depend on order)."""
    relation = dp_accounting.privacy_accountant.NeighboringRelation.REPLACE_ONE
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    gaussian = dp_accounting.GaussianDpEvent(z)
    for (sampled, fleet), count in Counter(rounds).items():
        accountant.compose(gaussian if sampled == fleet else
                           dp_accounting.SampledWithoutReplacementDpEvent(
                               fleet, sampled, gaussian), count)
    return float(accountant.get_epsilon(delta))


def test_the_budget_reports_dp_accountings_epsilon_and_survives_a_restart(
        tmp_path: Path) -> None:
    z = 0.9
    rounds = [(10, 100), (20, 100), (8, 80), (20, 100)]  # 10% twice, then 20%
    store = StateStore(tmp_path)
    _commit(store, 0)
    budget = PrivacyBudget("central", z, None, 0.0, store)
    for k, (sampled, fleet) in enumerate(rounds[:3], start=1):
        entry = budget.record(k, sampled, fleet, clip=1.0)
        _commit(store, k)
        assert entry.delta == default_delta(100) == 1e-5
        assert entry.epsilon > (budget.entries[-2].epsilon if k > 1 else 0.0)
    assert budget.epsilon == pytest.approx(theirs(rounds[:3], z, 1e-5), rel=1e-12)
    store.close()
    store = StateStore(tmp_path)  # a restart rebuilds the accountant from the rows
    resumed = PrivacyBudget("central", z, None, 0.0, store)
    assert resumed.epsilon == budget.epsilon and resumed.delta == 1e-5
    entry = resumed.record(4, *rounds[3], clip=1.0)
    assert entry.epsilon == pytest.approx(theirs(rounds, z, 1e-5), rel=1e-12)
    store.close()


def test_the_budget_says_when_a_round_would_exceed_the_target(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    z, delta = 1.0, 1e-5
    two, three = theirs([(5, 5)] * 2, z, delta), theirs([(5, 5)] * 3, z, delta)
    budget = PrivacyBudget("central", z, delta, (two + three) / 2, store)
    assert not budget.exceeds(5, 5)
    budget.record(1, 5, 5, 1.0)
    assert not budget.exceeds(5, 5)
    budget.record(2, 5, 5, 1.0)
    assert budget.exceeds(5, 5)
    assert not PrivacyBudget("central", z, delta, 0.0, store).exceeds(5, 5)
    # Local DP: no amplification by sampling, whatever share of the fleet is sampled.
    local = PrivacyBudget("local", z, delta, 0.0, store)
    assert local.event(1, 100).sampling_rate == 1.0
    store.close()


def test_the_server_settings_ask_for_dp_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(ConfigError, match=r"pip install 'fedge\[privacy\]'"):
        ServerConfig(insecure=True, dp="local")
    ServerConfig(insecure=True)  # without DP the package is not needed
