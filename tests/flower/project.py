"""A Flower project written the Flower way (task.py, client.py, server.py), as files a
test writes into a directory and runs from there: under Flower's run_simulation and,
unchanged but for how it is launched, under a fedge server and fedge clients."""

from __future__ import annotations

from pathlib import Path

ROUNDS = 3

TASK = '''
"""Model, data and training, as in Flower's quickstart-pytorch (digits instead of CIFAR)."""
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _digits():
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)


def load_data(partition_id, num_partitions):
    train_x, _, train_y, _ = _digits()
    parts = np.array_split(np.arange(len(train_y)), num_partitions)
    return train_x[parts[partition_id]], train_y[parts[partition_id]]


def load_test():
    _, test_x, _, test_y = _digits()
    return test_x, test_y


def train(net, x, y, epochs, lr, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=g).split(batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def test(net, x, y):
    logits = net(torch.from_numpy(x))
    y = torch.from_numpy(y)
    return (nn.functional.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).float().mean().item())


def get_weights(net):
    return [v.cpu().numpy() for v in net.state_dict().values()]


def set_weights(net, parameters):
    keys = net.state_dict().keys()
    net.load_state_dict(OrderedDict((k, torch.tensor(v)) for k, v in zip(keys, parameters)))


def fedge_task():
    """The one thing the move to fedge adds: the model and test split as a fedge Task."""
    from fedge.tasks import DataSchema, Splits, Task, TrainDefaults

    train_x, test_x, train_y, test_y = _digits()
    return Task(name="flower-digits",
                schema=DataSchema(input_shape=(64,), labels=tuple("0123456789")),
                build_model=Net,
                load_data=lambda: Splits(train_x, train_y, test_x, test_y),
                defaults=TrainDefaults(epochs=1, lr=0.1, batch_size=32))
'''

CLIENT = '''
"""The ClientApp: a NumPyClient, as Flower writes one."""
from flwr.client import ClientApp, NumPyClient

from task import Net, get_weights, load_data, load_test, set_weights, test, train


class FlowerClient(NumPyClient):
    def __init__(self, partition_id, num_partitions):
        self.net = Net()
        self.x, self.y = load_data(partition_id, num_partitions)

    def get_parameters(self, config):
        return get_weights(self.net)

    def fit(self, parameters, config):
        set_weights(self.net, parameters)
        loss = train(self.net, self.x, self.y, int(config["local-epochs"]),
                     float(config["lr"]), int(config["batch-size"]),
                     seed=int(config["server-round"]))
        return get_weights(self.net), len(self.x), {"train_loss": loss}

    def evaluate(self, parameters, config):
        set_weights(self.net, parameters)
        x, y = load_test()
        loss, accuracy = test(self.net, x, y)
        return loss, len(x), {"accuracy": accuracy}


def client_fn(context):
    return FlowerClient(int(context.node_config["partition-id"]),
                        int(context.node_config["num-partitions"])).to_client()


app = ClientApp(client_fn=client_fn)
'''

SERVER = f'''
"""The ServerApp: FedAvg with a central evaluation that writes each round's accuracy."""
import json
import os

import torch
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg

from task import Net, get_weights, load_test, set_weights, test

ROUNDS = {ROUNDS}
CLIENTS = 2


def fit_config(server_round):
    return {{"local-epochs": 2, "lr": 0.1, "batch-size": 32, "server-round": server_round}}


def central(server_round, parameters, config):
    net = Net()
    set_weights(net, parameters)
    loss, accuracy = test(net, *load_test())
    with open(os.environ["RESULTS"], "a") as f:
        f.write(json.dumps({{"round": server_round, "accuracy": accuracy}}) + "\\n")
    return loss, {{"accuracy": accuracy}}


def server_fn(context):
    torch.manual_seed(0)  # the initial model, as `fedge server --seed 0` makes it
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS,
                      min_available_clients=CLIENTS, on_fit_config_fn=fit_config,
                      initial_parameters=ndarrays_to_parameters(get_weights(Net())),
                      evaluate_fn=central)
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))


app = ServerApp(server_fn=server_fn)
'''

SIMULATE = '''
from flwr.simulation import run_simulation

from client import app as client_app
from server import CLIENTS, app as server_app

run_simulation(server_app=server_app, client_app=client_app, num_supernodes=CLIENTS,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
'''


def write_project(root: Path) -> Path:
    """Writes the project's files under root (made if need be); returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("task.py", TASK), ("client.py", CLIENT), ("server.py", SERVER),
                       ("simulate.py", SIMULATE)):
        (root / name).write_text(text.lstrip())
    return root
