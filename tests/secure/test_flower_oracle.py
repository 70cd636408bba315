"""Flower's SecAgg+ as the oracle of fedge's masked sum: the same quantized vectors
through Flower's own workflow and client mod (bench.flower_secagg) give exactly the sum
fedge unmasks."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.secure import quantize
from tests.secure import rounds

pytest.importorskip("flwr")
from bench.flower_secagg import secagg_plus_sum  # after the skip: it needs flwr


def test_flowers_secagg_plus_sums_fedges_quantized_inputs_alike() -> None:
    rng = np.random.default_rng(7)
    n, size, clip, cap = 6, 700, 2.0, 40
    scale = quantize.round_scale(clip, cap, n)
    # Weighted and clipped as devices do: entries up to clip * cap * scale = 2^30 / n.
    inputs = {f"dev-{k}": quantize.encode(quantize.clip_norm(rng.normal(0, 1, size), clip),
                                          float(rng.integers(1, cap + 1)), scale)
              for k in range(n)}
    inputs["dev-0"][:3] = quantize.encode(np.array([clip, -clip, 0.0]), cap, scale)  # extremes
    ours = rounds.run(inputs, rounds.params_for(n, size, clip=clip, cap=cap))
    assert ours.total is not None, ours.error
    flower = secagg_plus_sum(inputs, num_shares=5, threshold=3)
    assert np.array_equal(flower.total, ours.total.view(np.int32).astype(np.int64))
    # The oracle can tell: one entry of one input changed changes Flower's sum.
    inputs["dev-3"][10] += np.uint32(1)
    other = secagg_plus_sum(inputs, num_shares=5, threshold=3)
    assert not np.array_equal(other.total, flower.total)
    assert int(other.total[10] - flower.total[10]) == 1
