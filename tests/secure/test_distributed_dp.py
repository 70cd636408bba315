"""Distributed DP under secure aggregation: each device adds its share of the noise before
masking. The unmasked aggregate minus the plain mean of the same clipped updates has the
spread the survivors' shares add up to (a statistical test, over real gRPC with real
daemons), and the epsilon reported is dp-accounting's for the noise really present."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.client.secure import SecureTask
from fedge.config import ServerConfig, SimulateConfig
from fedge.errors import ConfigError
from fedge.privacy.mechanisms import device_noise_std, present_noise_multiplier
from fedge.secure import quantize
from fedge.secure.masked_sum import MaskedSum
from fedge.server.registry import Device
from fedge.server.round_state import RoundSettings
from fedge.server.secure_round import make_params
from tests.fleet import Fleet
from tests.secure import rounds

dp_accounting = pytest.importorskip("dp_accounting")

Z, CLIP, DELTA = 1.0, 0.5, 1e-5


def spread_ok(values: np.ndarray, std: float) -> bool:
    """Whether values look like independent N(0, std^2) draws: sample mean and std, and
    the share within one std (0.6827), each within about 7 of its standard errors."""
    n = values.size
    within = float(np.mean(np.abs(values) <= std))
    return (abs(float(values.mean())) < 7 * std / math.sqrt(n)
            and abs(float(values.std()) / std - 1) < 7 / math.sqrt(2 * n)
            and abs(within - 0.6827) < 7 * math.sqrt(0.6827 * 0.3173 / n))


def gaussian_epsilon(z: float) -> float:
    """dp-accounting's epsilon at DELTA for one Gaussian release of multiplier z."""
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(z))
    return float(accountant.get_epsilon(DELTA))


def test_the_spread_check_tells_a_wrong_spread() -> None:
    rng = np.random.default_rng(3)
    draws = rng.normal(0.0, 1.0, 26_122)
    assert spread_ok(draws, 1.0)
    assert not spread_ok(draws, 1.05) and not spread_ok(draws, 0.95)
    assert not spread_ok(rng.laplace(0.0, 1 / math.sqrt(2), 26_122), 1.0)


def test_round_parameters_give_equal_weights_and_a_share_for_the_fewest_survivors() -> None:
    base = dict(rounds=1, min_clients=2, fraction=1.0, round_timeout_s=10.0,
                retry_backoff_s=1.0, epochs=1, lr=0.1, batch_size=8, seed=0, linger_s=0.0,
                secure=True, quorum_fraction=0.5, secure_clip=CLIP)
    settings = RoundSettings(**base, secure_noise_multiplier=Z)  # type: ignore[arg-type]
    sample = [Device(f"dev-{k}", "", 100 + k) for k in range(10)]
    params = make_params(settings, 1, sample, 1000)
    assert params.weight_cap == 1
    # A round commits with max(quorum 5, threshold) inputs: those must carry z C.
    fewest = max(5, params.threshold)
    assert params.noise_std == pytest.approx(Z * CLIP / math.sqrt(fewest))
    assert params.noise_std * math.sqrt(fewest) >= Z * CLIP * (1 - 1e-12)
    plain = make_params(RoundSettings(**base), 1, sample, 1000)  # type: ignore[arg-type]
    assert plain.noise_std == 0 and plain.weight_cap == 109
    # The headroom holds the clipped sum and 12 standard deviations of the noise.
    assert params.scale * (10 * CLIP + 12 * params.noise_std * math.sqrt(10)) == \
        pytest.approx(quantize.HEADROOM)


@pytest.mark.parametrize("dropped", [set(), {"d7", "d8"}])
def test_the_survivors_sum_carries_their_shares_and_no_more(dropped: set[str]) -> None:
    # In process: the devices' noised, quantized inputs through the masking protocol,
    # some vanishing after sharing keys (their noise is then missing from the sum).
    rng = np.random.default_rng(5)
    n, size = 10, 20_000
    params = rounds.params_for(n, size, clip=CLIP, cap=1)
    std = device_noise_std(Z * CLIP, 6)
    scale = quantize.round_scale(CLIP, 1, n, std)
    updates = {f"d{k}": quantize.clip_norm(rng.normal(0, 0.1, size), CLIP) for k in range(n)}
    inputs = {d: quantize.encode(u + rng.normal(0, std, size), 1.0, scale)
              for d, u in updates.items()}
    out = rounds.run(inputs, params, drop={2: dropped})
    assert out.total is not None, out.error
    survivors = len(out.survivors)
    assert survivors == n - len(dropped)
    plain = sum(updates[d] for d in out.survivors)
    noise = quantize.decode(out.total, scale) - plain
    assert spread_ok(noise, std * math.sqrt(survivors))
    assert quantize.in_range(out.total, CLIP, survivors, scale, survivors, std)
    z = present_noise_multiplier(std, survivors, CLIP)
    assert z == pytest.approx(Z * math.sqrt(survivors / 6))


def test_distributed_dp_needs_secure_aggregation_and_central_is_refused_with_it() -> None:
    with pytest.raises(ConfigError, match="needs --secure-aggregation"):
        ServerConfig(insecure=True, dp="distributed")
    with pytest.raises(ConfigError, match="needs --secure-aggregation"):
        SimulateConfig(dp="distributed")
    with pytest.raises(ConfigError, match="--dp distributed with"):
        ServerConfig(insecure=True, dp="central", secure_aggregation=True)
    assert SimulateConfig(dp="distributed", secure_aggregation=True).dp == "distributed"


def test_over_grpc_the_aggregate_carries_the_noise_present_and_epsilon_is_for_it(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    gradients: dict[str, np.ndarray] = {}  # what each device computed, before anything
    totals: list[np.ndarray] = []
    scales: list[float] = []
    encode, unmask = SecureTask.encode, MaskedSum.unmask

    def recording_encode(self: SecureTask, gradient: quantize.Blocks, *args: Any
                         ) -> np.ndarray:
        gradients[self.device.device_id] = np.concatenate([b.copy() for b in gradient()])
        return encode(self, gradient, *args)

    def recording_unmask(self: MaskedSum) -> np.ndarray:
        total = unmask(self)
        totals.append(total.copy())
        scales.append(self.params.scale)
        return total

    monkeypatch.setattr(SecureTask, "encode", recording_encode)
    monkeypatch.setattr(MaskedSum, "unmask", recording_unmask)
    parts = fleet.partitions("digits-mlp", 4)
    # 4 devices, quorum 2 (and threshold 2 of 3 neighbours): each device's share is
    # z C / sqrt(2), so the 4 survivors' sum carries z C sqrt(2), twice the variance.
    server = fleet.server(rounds=1, min_clients=4, quorum_fraction=0.5,
                          secure_aggregation=True, dp="distributed", dp_clip=CLIP,
                          dp_noise_multiplier=Z, dp_delta=DELTA)
    port = server.start()
    for k, part in enumerate(parts):
        fleet.client(port, part, f"dev-{k}")
    records = server.wait(120)
    fleet.join_clients()
    assert records[-1].round == 1 and records[-1].clients == 4
    assert sorted(gradients) == [f"dev-{k}" for k in range(4)] and len(totals) == 1
    clipped = [quantize.clip_norm(g, CLIP) for g in gradients.values()]
    assert max(float(np.linalg.norm(g)) for g in gradients.values()) > CLIP  # it clips
    plain_mean = np.mean(clipped, axis=0)  # unweighted: every device weighs 1
    aggregate = quantize.decode(totals[0], scales[0]) / 4
    share = Z * CLIP / math.sqrt(2)
    assert spread_ok(aggregate - plain_mean, share * math.sqrt(4) / 4)
    assert not spread_ok(aggregate - plain_mean, Z * CLIP / 4)  # the target alone
    budget = server.rounds.budget
    assert budget is not None and budget.entries[-1].noise_multiplier == pytest.approx(
        Z * math.sqrt(2))
    assert budget.epsilon == pytest.approx(gaussian_epsilon(Z * math.sqrt(2)), rel=1e-9)
    assert budget.epsilon < gaussian_epsilon(Z)


@pytest.mark.slow
def test_simulate_with_distributed_dp_reports_epsilon(tmp_path: Path) -> None:
    from fedge.simulations.runner import simulate

    report = simulate(SimulateConfig(
        out=str(tmp_path), clients=3, rounds=1, secure_aggregation=True, dp="distributed",
        dp_noise_multiplier=0.5, dp_clip=1.0, dp_delta=DELTA, edge=False))
    assert report["privacy"]["mode"] == "distributed"
    # The simulation's quorum is every sampled client: their shares sum to z C exactly.
    assert report["rounds"][0]["epsilon"] == pytest.approx(gaussian_epsilon(0.5), rel=1e-9)


@pytest.mark.slow
def test_a_device_lost_after_sharing_keys_takes_its_noise_and_epsilon_says_so(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # dev-3 vanishes after sharing keys: the sum holds 3 shares of std z C / sqrt(2),
    # z sqrt(3 / 2) in all, and the round's epsilon is for that, not for 4 shares.
    from tests.secure.test_secure_grpc import Spy

    spy = Spy(monkeypatch)
    spy.fleet, spy.victims = fleet, {"dev-3"}
    spy.vanish_at(monkeypatch, "mask")
    server = fleet.server(rounds=1, min_clients=4, quorum_fraction=0.5,
                          secure_aggregation=True, dp="distributed", dp_clip=CLIP,
                          dp_noise_multiplier=Z, dp_delta=DELTA, secure_stage_timeout_s=3.0,
                          round_timeout_s=12.0)
    port = server.start()
    for k, part in enumerate(fleet.partitions("digits-mlp", 4)):
        fleet.client(port, part, f"dev-{k}")
    records = server.wait(120)
    assert records[-1].round == 1 and records[-1].clients == 3
    budget = server.rounds.budget
    assert budget is not None
    assert budget.entries[-1].noise_multiplier == pytest.approx(Z * math.sqrt(3 / 2))
    assert budget.epsilon == pytest.approx(gaussian_epsilon(Z * math.sqrt(3 / 2)), rel=1e-9)
    assert budget.epsilon > gaussian_epsilon(Z * math.sqrt(2))  # less noise than 4 shares
