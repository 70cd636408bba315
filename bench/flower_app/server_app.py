"""The ServerApp: FedAvg over every connected node for ``num-server-rounds`` rounds, with
centralized evaluation of each round's global model on the task's test split (what a
fedge server does at each commit) and no federated evaluation (fedge has none).

After each round's aggregation and evaluation it appends the wall-clock time (and the
round's slowest node's ``train_seconds``) to the
JSON file named by the ``timestamps`` setting (if any): the counterpart of the
``committed_at`` time fedge's server records with each round. Settings come from the
run config (``flwr run``) or from :func:`build`'s argument (``run_simulation``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedge.tasks import load_task
from fedge.tasks.training import evaluate, load_weights, weights_of


def run(grid: Grid, context: Context, fixed: Mapping[str, Any]) -> None:
    """Runs the rounds and records when each one ended."""
    settings = {**context.run_config, **fixed}
    task = load_task(str(settings["task"]))
    nodes = int(settings["nodes"])
    splits = task.load_data()
    torch.manual_seed(int(settings["seed"]))  # the initial model, seeded as fedge's is
    model = task.build_model()
    stamps_path = Path(str(settings["timestamps"])) if settings.get("timestamps") else None
    stamps: list[dict[str, object]] = []
    slowest: list[float] = []  # the round just aggregated: its slowest node's training

    def slowest_training(replies: list[RecordDict], key: str) -> MetricRecord:
        seconds = [float(str(r.metric_records["metrics"]["train_seconds"]))
                   for r in replies]
        slowest[:] = [max(seconds)]
        return MetricRecord({"slowest_train_s": max(seconds)})

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        state = arrays.to_torch_state_dict()
        load_weights(model, {name: tensor.numpy() for name, tensor in state.items()})
        metrics: dict[str, int | float | list[int] | list[float]] = dict(
            evaluate(task, model, splits.test_x, splits.test_y))
        stamps.append({"round": server_round, "time": time.time(), **metrics,
                       **({"slowest_train_s": slowest[0]} if slowest else {})})
        if stamps_path is not None:
            stamps_path.write_text(json.dumps(stamps))
        return MetricRecord(metrics)

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes,
                      min_available_nodes=nodes, train_metrics_aggr_fn=slowest_training)
    initial = ArrayRecord({name: torch.from_numpy(a)
                           for name, a in weights_of(model).items()})
    strategy.start(grid=grid, initial_arrays=initial,
                   num_rounds=int(settings["num-server-rounds"]),
                   train_config=ConfigRecord({}), evaluate_fn=central)


def build(fixed: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose settings are fixed (over the run config's)."""
    server_app = ServerApp()
    given = dict(fixed or {})

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run(grid, context, given)

    return server_app


app = build()
