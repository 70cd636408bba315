"""Flower as an oracle: the same arrays and weights through Flower's implementation and
ours must agree to float32 tolerance.

Flower comes with the flower extra (``pip install 'fedge[flower]'``), which the dev
extra, and so CI, includes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip(
    "flwr", reason="Flower is not installed: pip install 'fedge[flower]'")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters  # noqa: E402
from flwr.common import parameters_to_ndarrays as to_arrays  # noqa: E402
from flwr.server.strategy import FedAdagrad as FlwrFedAdagrad  # noqa: E402
from flwr.server.strategy import FedAdam as FlwrFedAdam  # noqa: E402
from flwr.server.strategy import FedAvgM as FlwrFedAvgM  # noqa: E402
from flwr.server.strategy import FedYogi as FlwrFedYogi  # noqa: E402
from flwr.server.strategy.aggregate import (  # noqa: E402
    aggregate,
    aggregate_inplace,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

from fedge.server.intake import pseudo_gradient  # noqa: E402
from fedge.server.strategies.fedadagrad import FedAdagrad  # noqa: E402
from fedge.server.strategies.fedadam import FedAdam  # noqa: E402
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold  # noqa: E402
from fedge.server.strategies.fedavgm import FedAvgM  # noqa: E402
from fedge.server.strategies.fedyogi import FedYogi  # noqa: E402
from fedge.server.strategies.krum import Krum, MultiKrum  # noqa: E402
from fedge.server.strategies.median import Median  # noqa: E402
from fedge.server.strategies.spec import Strategy  # noqa: E402
from fedge.server.strategies.trimmed_mean import TrimmedMean  # noqa: E402

NAMES = ("a.weight", "a.bias", "b.weight")
SHAPES = ((16, 8), (16,), (4, 16))
RTOL, ATOL = 1e-5, 1e-6


def _models(seed: int, count: int = 7, hostile: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    models = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES]
              for _ in range(count)]
    for k in range(hostile):  # far-off updates, to give robust rules something to do
        models[k] = [10 * (rng.standard_normal(s) + 3).astype(np.float32) for s in SHAPES]
    return models


def _named(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {n: a.copy() for n, a in zip(NAMES, arrays, strict=True)}


def _fit_res(arrays: list[np.ndarray], n: int) -> tuple[Any, FitRes]:
    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {})


def _ours(strategy: Strategy[Any], glob: list[np.ndarray], models: list[list[np.ndarray]],
          counts: list[int]) -> dict[str, np.ndarray]:
    """One round of ours, from client models, as the server runs it."""
    acc = strategy.new_accumulator()
    for m, n in zip(models, counts, strict=True):
        acc.add(pseudo_gradient("weights", _named(glob), _named(m)), n)
    return strategy.step(_named(glob), strategy.aggregate(acc))


def _close(ours: dict[str, np.ndarray], theirs: list[np.ndarray]) -> None:
    for name, expected in zip(NAMES, theirs, strict=True):
        np.testing.assert_allclose(ours[name], expected, rtol=RTOL, atol=ATOL)


COUNTS = [10, 250, 33, 71, 5, 120, 64]


def test_fedavg_matches_flower_aggregate_and_aggregate_inplace() -> None:
    models, glob = _models(1), _models(2, 1)[0]
    theirs = aggregate([(m, n) for m, n in zip(models, COUNTS, strict=True)])
    inplace = aggregate_inplace([_fit_res(m, n) for m, n in zip(models, COUNTS, strict=True)])
    _close(_ours(FedAvg(), glob, models, COUNTS), theirs)
    _close(_ours(FedAvg(), glob, models, COUNTS), inplace)
    fold = FedAvgFold()
    for m, n in zip(models, COUNTS, strict=True):
        fold.add(_named(m), n)
    _close(fold.result(), theirs)


def test_median_matches_flower() -> None:
    models, glob = _models(3, hostile=2), _models(4, 1)[0]
    theirs = aggregate_median([(m, n) for m, n in zip(models, COUNTS, strict=True)])
    _close(_ours(Median(), glob, models, COUNTS), theirs)


@pytest.mark.parametrize("trim", [0.0, 0.15, 0.3])
def test_trimmed_mean_matches_flower(trim: float) -> None:
    models, glob = _models(5, hostile=2), _models(6, 1)[0]
    theirs = aggregate_trimmed_avg([(m, n) for m, n in zip(models, COUNTS, strict=True)],
                                   proportiontocut=trim)
    _close(_ours(TrimmedMean(trim=trim), glob, models, COUNTS), theirs)


@pytest.mark.parametrize("f", [1, 2])
def test_krum_and_multikrum_match_flower(f: int) -> None:
    models, glob = _models(7, hostile=f), _models(8, 1)[0]
    results = [(m, n) for m, n in zip(models, COUNTS, strict=True)]
    _close(_ours(Krum(byzantine_f=f), glob, models, COUNTS),
           aggregate_krum(results, num_malicious=f, to_keep=0))
    keep = len(models) - f
    _close(_ours(MultiKrum(byzantine_f=f), glob, models, COUNTS),
           aggregate_krum(results, num_malicious=f, to_keep=keep))


def _flower_rounds(strategy: Any, rounds: list[list[list[np.ndarray]]],
                   round_numbers: list[int]) -> list[np.ndarray]:
    params = None
    for models, number in zip(rounds, round_numbers, strict=True):
        params, _ = strategy.aggregate_fit(
            number, [_fit_res(m, n) for m, n in zip(models, COUNTS, strict=True)], [])
    assert params is not None
    return to_arrays(params)


def _our_rounds(strategy: FedAvg, glob: list[np.ndarray],
                rounds: list[list[list[np.ndarray]]]) -> dict[str, np.ndarray]:
    weights = _named(glob)
    for models in rounds:
        weights = _ours(strategy, [weights[n] for n in NAMES], models, COUNTS)
    return weights


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_server_optimizers_match_flower_over_three_rounds(name: str) -> None:
    """Clients' models are drawn near the current global model each round, as training
    would leave them; both sides run three rounds of their server optimizer."""
    glob = _models(9, 1)[0]
    rng = np.random.default_rng(10)
    # Client models relative to the global of each round: the same offsets on both sides.
    offsets = [[[0.1 * rng.standard_normal(s).astype(np.float32) for s in SHAPES]
                for _ in COUNTS] for _ in range(3)]
    initial = ndarrays_to_parameters(glob)
    ours: FedAvg
    if name == "fedavgm":
        theirs: Any = FlwrFedAvgM(initial_parameters=initial, server_learning_rate=0.7,
                                  server_momentum=0.8)
        ours, numbers = FedAvgM(server_lr=0.7, server_momentum=0.8), [1, 2, 3]
    elif name == "fedadam":
        theirs = FlwrFedAdam(initial_parameters=initial, eta=0.05, beta_1=0.9, beta_2=0.99,
                             tau=1e-3)
        # Flower's bias correction uses exponent round + 1; ours counts steps from 1.
        ours, numbers = FedAdam(server_lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3), [0, 1, 2]
    elif name == "fedyogi":
        theirs = FlwrFedYogi(initial_parameters=initial, eta=0.02, beta_1=0.9, beta_2=0.99,
                             tau=1e-3)
        ours, numbers = FedYogi(server_lr=0.02, tau=1e-3), [1, 2, 3]
    else:
        theirs = FlwrFedAdagrad(initial_parameters=initial, eta=0.1, tau=1e-3)
        ours, numbers = FedAdagrad(server_lr=0.1, tau=1e-3), [1, 2, 3]

    # Flower needs the client models before it has stepped: run both in lockstep.
    weights = _named(glob)
    flower_weights = [a.copy() for a in glob]
    for offset, number in zip(offsets, numbers, strict=True):
        models = [[w + o for w, o in zip([weights[n] for n in NAMES], off, strict=True)]
                  for off in offset]
        flower_models = [[w + o for w, o in zip(flower_weights, off, strict=True)]
                         for off in offset]
        weights = _ours(ours, [weights[n] for n in NAMES], models, COUNTS)
        flower_weights = _flower_rounds(theirs, [flower_models], [number])
        _close(weights, flower_weights)
