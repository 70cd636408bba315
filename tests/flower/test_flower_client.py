"""The Flower client adapter without a server: naming, config and the calls it makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'fedge[flower]'")

from flwr.client import NumPyClient

from fedge.errors import FedgeError
from fedge.flower.client import FlowerTrainer, load_flower_client, parse_node_config
from fedge.tasks import load_task
from fedge.tasks.training import weights_of
from tests.flower.project import write_project
from tests.processes import FEDGE


class PlusOne(NumPyClient):
    """Adds one to every parameter; evaluates to the sum of the first array."""

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []

    def fit(self, parameters: Any, config: Any) -> Any:
        self.configs.append(dict(config))
        return [p + 1 for p in parameters], 42, {"train_loss": 0.5, "note": "text"}

    def evaluate(self, parameters: Any, config: Any) -> Any:
        return float(parameters[0].sum()), 7, {"accuracy": 0.25}


def test_a_numpy_client_trains_as_the_daemons_trainer() -> None:
    task = load_task("digits-mlp")
    client = PlusOne()
    trainer = FlowerTrainer(task, client)
    start = weights_of(task.build_model())
    trainer.round = 3
    new, metrics = trainer.train(start, epochs=2, lr=0.1, batch_size=16, seed=9)
    assert list(new) == list(start)  # named, in the state_dict order
    for name in start:
        np.testing.assert_allclose(new[name], start[name] + 1)
    assert trainer.num_examples == 42
    assert metrics["train_loss"] == 0.5 and "note" not in metrics
    assert metrics["flower_eval_accuracy"] == 0.25
    assert metrics["flower_eval_loss"] == pytest.approx(float(start["0.weight"].sum()))
    config = client.configs[0]
    assert (config["server-round"], config["local-epochs"], config["lr"],
            config["batch-size"], config["seed"]) == (3, 2, 0.1, 16, 9)


def test_a_client_of_another_model_is_refused_by_name() -> None:
    class Wrong(PlusOne):
        def fit(self, parameters: Any, config: Any) -> Any:
            return [np.zeros(3, np.float32)], 1, {}

    trainer = FlowerTrainer(load_task("digits-mlp"), Wrong())
    with pytest.raises(FedgeError, match="same model"):
        trainer.train(weights_of(trainer.model), 1, 0.1, 32, 0)


def test_node_config_and_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_node_config("partition-id=1, num-partitions=4 name='a'") == {
        "partition-id": 1, "num-partitions": 4, "name": "a"}
    with pytest.raises(FedgeError, match="key=value"):
        parse_node_config("partition-id")
    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the project first
    for name in ("client", "task"):  # the project's modules leave with the test
        monkeypatch.delitem(sys.modules, name, raising=False)
    client = load_flower_client("client:client_fn", {"partition-id": 0, "num-partitions": 2})
    assert hasattr(client, "fit")
    with pytest.raises(FedgeError, match="give the client_fn"):
        load_flower_client("client:app")
    with pytest.raises(FedgeError, match="module:attr"):
        load_flower_client("client")
    for name in ("client", "task"):
        sys.modules.pop(name, None)


MESSAGE_APP = """
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg, context):
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    keys = list(msg.content["arrays"].keys())
    step = float(msg.content["config"]["lr"]) * (1 + context.node_config["partition-id"])
    new = ArrayRecord({k: Array(a + step) for k, a in zip(keys, arrays)})
    return Message(RecordDict({"arrays": new, "metrics": MetricRecord(
        {"num-examples": 5, "train_loss": 0.25})}), reply_to=msg)
"""


def test_a_message_api_client_app_trains(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "message_app.py").write_text(MESSAGE_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "message_app", raising=False)
    task = load_task("digits-mlp")
    trainer = FlowerTrainer(task, load_flower_client("message_app:app", {"partition-id": 1}))
    start = weights_of(task.build_model())
    new, metrics = trainer.train(start, epochs=1, lr=0.5, batch_size=16, seed=0)
    for name in start:  # lr 0.5 * (1 + partition 1)
        np.testing.assert_allclose(new[name], start[name] + 1.0, rtol=1e-6)
    assert trainer.num_examples == 5 and metrics["train_loss"] == 0.25
    sys.modules.pop("message_app", None)


@pytest.mark.slow
def test_simulate_runs_a_flower_client(tmp_path: Path) -> None:
    write_project(tmp_path)
    run = subprocess.run([*FEDGE, "simulate", "--task", "task:fedge_task", "--clients", "2",
                          "--rounds", "2", "--no-edge", "--out", "out", "--flower-client",
                          "client:client_fn"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "final accuracy" in run.stdout
