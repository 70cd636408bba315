"""The privacy math (fedge.privacy): clipping, the Gaussian noise's spread, adaptive
clipping's step, the noise split and the per-device noise share, and the accountant
against dp-accounting driven directly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedge.errors import ConfigError
from fedge.privacy import accounting
from fedge.privacy.accounting import Accountant, RoundEvent
from fedge.privacy.mechanisms import (
    add_gaussian_noise,
    clip_in_place,
    device_noise_std,
    l2_norm,
    next_clip,
    present_noise_multiplier,
    split_noise_multiplier,
)

dp_accounting = pytest.importorskip("dp_accounting")


def spread_ok(x: np.ndarray, std: float) -> bool:
    """Whether x looks like i.i.d. N(0, std^2): its sum of squares over std^2 is
    chi-square with x.size degrees of freedom, within 5 of its standard deviations
    (sqrt(2 d)), and its mean within 5 standard errors of 0."""
    d = x.size
    chi2 = float(np.sum(x.astype(np.float64) ** 2)) / std**2
    return abs(chi2 - d) < 5 * math.sqrt(2 * d) and abs(float(x.mean())) < 5 * std / d**0.5


def test_clip_scales_down_to_the_bound_and_leaves_short_updates_and_counters() -> None:
    long: dict[str, np.ndarray] = {"w": np.full(100, 1.0, np.float32),
                                   "n": np.array([7], np.int64)}
    assert clip_in_place(long, 2.0) == pytest.approx(10.0)
    assert l2_norm(long) == pytest.approx(2.0, rel=1e-6)
    assert long["n"][0] == 7
    short = {"w": np.full(4, 0.25, np.float32)}
    assert clip_in_place(short, 2.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(short["w"], 0.25)


def test_gaussian_noise_has_the_asked_spread_and_the_test_sees_a_wrong_one() -> None:
    rng = np.random.default_rng(1)
    arrays = {"a": np.zeros((300, 300), np.float32), "b": np.zeros(10_000, np.float32)}
    add_gaussian_noise(arrays, 0.37, rng)
    x = np.concatenate([a.ravel() for a in arrays.values()])
    assert spread_ok(x, 0.37)
    # The check is sharp enough to tell a 2% error in the std (or in z).
    assert not spread_ok(x, 0.37 * 1.02) and not spread_ok(x, 0.37 * 0.98)


def test_adaptive_step_moves_toward_the_quantile() -> None:
    assert next_clip(1.0, 1.0, 0.5, 0.2) == pytest.approx(math.exp(-0.1))  # all under
    assert next_clip(1.0, 0.0, 0.5, 0.2) == pytest.approx(math.exp(0.1))  # all clipped
    assert next_clip(3.0, 0.5, 0.5, 0.2) == 3.0


def test_the_split_costs_what_one_release_of_z_costs() -> None:
    for z in (0.5, 1.0, 3.0):
        updates, count = split_noise_multiplier(z)
        assert updates > z and count > z
        assert updates**-2 + count**-2 == pytest.approx(z**-2)


def test_device_shares_sum_to_the_target_noise() -> None:
    rng = np.random.default_rng(2)
    target, n = 0.8, 16
    share = device_noise_std(target, n)
    total = rng.normal(0.0, share, (n, 50_000)).sum(axis=0)
    assert spread_ok(total, target)
    # Fewer survivors carry less noise: what the accountant must then be told.
    assert present_noise_multiplier(share, n, 2.0) == pytest.approx(target / 2.0)
    assert present_noise_multiplier(share, n // 4, 2.0) == pytest.approx(target / 4.0)


def test_epsilon_is_dp_accountings_for_the_same_rounds() -> None:
    # (sampled, fleet) of each round: fedge samples a fixed number without replacement.
    rounds = [(10, 100), (10, 100), (7, 28), (3, 60), (5, 5), (333, 1000)]
    z, delta = 1.1, 1e-5
    ours = Accountant()
    for m, n in rounds:
        ours.add(RoundEvent(m / n, z))
    relation = dp_accounting.privacy_accountant.NeighboringRelation.REPLACE_ONE
    theirs = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    poisson = dp_accounting.rdp.RdpAccountant()
    for m, n in rounds:
        event = dp_accounting.GaussianDpEvent(z)
        theirs.compose(event if m == n else
                       dp_accounting.SampledWithoutReplacementDpEvent(n, m, event))
        poisson.compose(event if m == n else dp_accounting.PoissonSampledDpEvent(m / n, event))
    assert ours.epsilon(delta) == pytest.approx(theirs.get_epsilon(delta), rel=1e-12)
    # The Poisson shortcut (fedge's accounting before) would report less than is true.
    assert poisson.get_epsilon(delta) < ours.epsilon(delta) * 0.95
    # A look ahead changes nothing and answers what adding would.
    ahead = ours.epsilon_after(RoundEvent(0.1, z), delta)
    assert len(ours.events) == len(rounds)
    ours.add(RoundEvent(0.1, z))
    assert ours.epsilon(delta) == pytest.approx(ahead, rel=1e-12)


def test_a_missing_dp_accounting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(ConfigError) as info:
        accounting.require()
    assert "pip install 'fedge[privacy]'" in str(info.value)
    assert "\n" not in str(info.value)
