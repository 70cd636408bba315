"""One federated teacher and one signed artifact, built once for the edge tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.cli import main
from fedge.client.trainer import Trainer
from fedge.edge.compiler.artifact import BuildReport, read_report
from fedge.edge.compiler.keys import SigningKey
from fedge.server.store import RoundRecord, StateStore
from fedge.server.strategies.fedavg import weighted_mean
from fedge.simulations.partition import iid
from fedge.tasks import Splits, Task, load_task
from fedge.tasks.training import weights_of
from fedge.tensors import fingerprint, to_blob


@dataclass
class Built:
    task: Task
    splits: Splits
    teacher: dict[str, np.ndarray]
    key: SigningKey
    artifact: Path
    report: BuildReport
    root: Path


def federated_teacher(task: Task, clients: int = 3, rounds: int = 3) -> dict[str, np.ndarray]:
    """FedAvg in-process (no gRPC): the real trainers and the real weighted mean."""
    splits = task.load_data()
    torch.manual_seed(0)
    weights = weights_of(task.build_model())
    parts = iid(len(splits.train_y), clients, seed=0)
    trainers = [Trainer(task, splits.train_x[p], splits.train_y[p], "cpu") for p in parts]
    d = task.defaults
    for r in range(rounds):
        updates = [t.train(weights, d.epochs, d.lr, d.batch_size, seed=r)[0] for t in trainers]
        weights = weighted_mean(updates, [float(len(p)) for p in parts])
    return weights


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The federated teacher committed as round 3 of a state dir, and the artifact that
    `fedge edge build --state-dir STATE --out ART` makes of it."""
    torch.set_num_threads(1)  # two shared cores: one thread each is fastest
    root = tmp_path_factory.mktemp("edge")
    task = load_task("digits-mlp")
    teacher = federated_teacher(task)
    store = StateStore(root / "state")
    store.check_task(task.name, [str(s) for s in fingerprint(teacher)])
    for round_ in (0, 3):  # round 0 stands in for the initial model
        store.commit(RoundRecord(round_, 0.0, 0.0, 3, 0, 0, 0, 0.0),
                     to_blob(teacher, {"task": task.name, "round": str(round_)}))
    store.close()
    code = main(["edge", "build", "--state-dir", str(root / "state"), "--out",
                 str(root / "artifact")])
    assert code == 0
    key = SigningKey.load_or_create(root / "state")
    report = BuildReport(**read_report(root / "artifact"))
    return Built(task, task.load_data(), teacher, key, root / "artifact", report, root)
