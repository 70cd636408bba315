"""fedge's strategies as Flower strategies: the same model as Flower's FedAvg under
run_simulation, and a robust one holding out a hostile node there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'fedge[flower]'")

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedge.flower.strategy import fold_round
from fedge.server.strategies.catalog import build_strategy

NODES = 4

APPS = f'''
import os
import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.simulation import run_simulation

from fedge.flower.strategy import FedAdam, FedAvg, Median

NODES = {NODES}
client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """A deterministic local step toward the node's own target; node 3 is hostile."""
    k = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    rng = np.random.default_rng(100 * k + rnd)
    arrays = {{n: a.numpy() for n, a in msg.content["arrays"].items()}}
    new = {{}}
    for name, w in arrays.items():
        step = 0.5 * ((k + 1) - w) + rng.normal(0, 0.01, w.shape)
        if k == NODES - 1:
            step = step + 100.0
        new[name] = Array((w + step).astype(np.float32))
    reply = RecordDict({{"arrays": ArrayRecord(new),
                        "metrics": MetricRecord({{"num-examples": 10 * (k + 1)}})}})
    return Message(content=reply, reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    initial = ArrayRecord({{"w": Array(np.zeros((3, 4), np.float32)),
                           "b": Array(np.zeros(4, np.float32))}})
    common = dict(fraction_evaluate=0.0, min_train_nodes=NODES, min_available_nodes=NODES)
    for name, strategy in (("flower-fedavg", FlowerFedAvg(**common)),
                           ("fedge-fedavg", FedAvg(**common)),
                           ("fedge-median", Median(**common)),
                           ("fedge-fedadam", FedAdam(server_lr=0.1, **common))):
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=3)
        np.savez(os.path.join(os.environ["OUT"], name + ".npz"),
                 **{{n: a.numpy() for n, a in result.arrays.items()}})


if __name__ == "__main__":
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=NODES,
                   backend_config={{"client_resources": {{"num_cpus": 1, "num_gpus": 0.0}}}})
'''


def _record(arrays: dict[str, np.ndarray], count: int) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord({n: Array(a) for n, a in arrays.items()}),
                       "metrics": MetricRecord({"num-examples": count})})


def test_the_fold_is_flowers_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    global_ = {"w": rng.normal(size=(5, 3)).astype(np.float32)}
    clients = [({"w": (global_["w"] + rng.normal(0, 0.1, (5, 3))).astype(np.float32)}, n)
               for n in (3, 10, 7)]
    ours = fold_round(build_strategy("fedavg"), global_, clients)
    theirs = aggregate_arrayrecords([_record(w, n) for w, n in clients], "num-examples")
    np.testing.assert_allclose(ours["w"], theirs["w"].numpy(), rtol=0, atol=1e-6)


def test_a_robust_fold_ignores_one_outlier() -> None:
    global_ = {"w": np.zeros(4, np.float32)}
    clients = [({"w": np.full(4, v, np.float32)}, 1) for v in (1.0, 1.1, 0.9, 1e6)]
    new = fold_round(build_strategy("median"), global_, clients)
    assert np.all(np.abs(new["w"] - 1.05) < 1e-5), new


@pytest.mark.slow
def test_fedge_strategies_under_flowers_run_simulation(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="run_simulation needs Ray: pip install 'fedge[flower]'")
    (tmp_path / "apps.py").write_text(APPS)
    run = subprocess.run([sys.executable, "apps.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=400, env={**os.environ, "OUT": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    final = {name: dict(np.load(tmp_path / f"{name}.npz")) for name in (
        "flower-fedavg", "fedge-fedavg", "fedge-median", "fedge-fedadam")}
    for tensor in ("w", "b"):
        np.testing.assert_allclose(final["fedge-fedavg"][tensor],
                                   final["flower-fedavg"][tensor], rtol=1e-5, atol=1e-4)
    # The hostile node (+100 a round) drags the mean far off; the median stays with the
    # honest nodes, whose targets are 1, 2 and 3.
    assert np.all(final["flower-fedavg"]["w"] > 50)
    assert np.all((final["fedge-median"]["w"] > 1) & (final["fedge-median"]["w"] < 4))
    assert not np.allclose(final["fedge-fedadam"]["w"], final["fedge-fedavg"]["w"])
