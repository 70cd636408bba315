"""The ClientApp: trains the fedge task model on this node's partition with fedge's own
:class:`client.trainer.Trainer` (same epochs, lr, batch size and seed per round as a
``fedge client`` gets from its TRAIN task) and returns the weights and example count.

A node's partition is the ``data-dir`` of its ``--node-config`` (deployment), or
``DATA-ROOT/client-K`` for the ``partition-id`` K Flower's simulation gives each node;
it is read with the same reader ``fedge client`` uses. Settings come from the run config
(``flwr run``) or, for ``run_simulation`` (which takes no run config), from
:func:`build`'s argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedge.client.data import LocalData
from fedge.client.trainer import Trainer
from fedge.server.round_state import shuffle_seed
from fedge.tasks import load_task

# Kept between messages when Flower reuses the ClientApp's process.
_TRAINERS: dict[str, Trainer] = {}


def _trainer(task_name: str, data_dir: str) -> Trainer:
    key = f"{task_name}:{data_dir}"
    if key not in _TRAINERS:
        task = load_task(task_name)
        data = LocalData((data_dir,), task.schema)
        data.rescan()
        x, y = data.arrays()
        _TRAINERS[key] = Trainer(task, x, y, "cpu")
    return _TRAINERS[key]


def _data_dir(node: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    if "data-dir" in node:
        return str(node["data-dir"])
    return str(Path(str(settings["data-root"])) / f"client-{int(node['partition-id'])}")


def train(msg: Message, context: Context, fixed: Mapping[str, Any]) -> Message:
    """Trains from the received global weights; replies with the new ones."""
    settings = {**context.run_config, **fixed}
    data_dir = _data_dir(context.node_config, settings)
    trainer = _trainer(str(settings["task"]), data_dir)
    config = msg.content.config_records["config"]
    state = msg.content.array_records["arrays"].to_torch_state_dict()
    weights = {name: tensor.numpy() for name, tensor in state.items()}
    # fedge seeds each device's shuffle from the run's seed, the device's id and the
    # round (fedge.server.round_state.shuffle_seed); the benches name device K after its
    # partition's folder, client-K, as fedge simulate does.
    seed = shuffle_seed(int(settings["seed"]), Path(data_dir).name,
                        int(str(config["server-round"])))
    new, metrics = trainer.train(weights, epochs=int(settings["epochs"]),
                                 lr=float(settings["lr"]),
                                 batch_size=int(settings["batch-size"]), seed=seed)
    reply = RecordDict({
        "arrays": ArrayRecord({name: torch.from_numpy(a) for name, a in new.items()}),
        # train_seconds: Trainer.train's own clock around its loop, as a fedge client
        # reports it, so that both systems' overhead is measured around the same call.
        "metrics": MetricRecord({"num-examples": trainer.num_examples,
                                 "train_loss": metrics["train_loss"],
                                 "train_seconds": metrics["train_seconds"]}),
    })
    return Message(content=reply, reply_to=msg)


def build(fixed: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose settings are fixed (over the run config's)."""
    client_app = ClientApp()
    given = dict(fixed or {})

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, given)

    return client_app


app = build()
