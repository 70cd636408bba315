"""``fedge client``: the daemon of one device, training or inference-only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from fedge.cli.options import add_config_option, add_settings, given
from fedge.cli.signals import CleanStop
from fedge.config import ClientConfig
from fedge.errors import FedgeError

log = logging.getLogger("fedge")


def register(sub: Any) -> None:
    """Adds ``fedge client`` to the command's subparsers."""
    p = sub.add_parser("client", help="run the client daemon on a device",
                       description="Join a server, train on local data each round it is "
                       "picked for, and exit when the server says the run is over. "
                       "Reconnects with backoff while the server is away.")
    add_config_option(p, "client")
    add_settings(p, ClientConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the daemon until the server ends the run (0) or a signal stops it (0, or
    130 on SIGINT)."""
    from fedge.config import load

    options = given(args, ClientConfig)
    if "token" not in options and os.environ.get("FEDGE_TOKEN"):
        options["token"] = os.environ["FEDGE_TOKEN"]
    config = load(ClientConfig, args.config, options)
    if config.trust_key and not os.path.isfile(config.trust_key):
        # Found now, not at the first edge model, rounds into the run.
        raise FedgeError(f"--trust-key {config.trust_key} is not a file; give the server's "
                         "public key (edge-public-key.pem in its state dir)")
    if config.inference_only:
        return _run_daemon(config, _inference_only_daemon(config))
    if config.flower_client:
        return _run_daemon(config, _flower_daemon(config))
    if not config.data:
        raise FedgeError("the client needs local data: --data DIR (repeatable)")
    _check_can_train(config.device)
    from fedge.client.daemon import Daemon
    from fedge.client.data import LocalData, ReadOptions
    from fedge.client.trainer import Trainer
    from fedge.tasks import load_task

    task = load_task(config.task)
    data = LocalData(config.data, task.schema, ReadOptions(
        label_column=config.label_column, x_key=config.x_key, y_key=config.y_key))
    data.rescan()
    x, y = data.arrays()
    if len(y) == 0:
        missing = [s for s in config.data if not set("*?[") & set(s) and not os.path.exists(s)]
        if missing:
            raise FedgeError(f"--data {missing[0]} does not exist; give the directory or "
                             "files that hold this device's examples")
        skipped = data.inventory().files_skipped
        why = (f"{skipped} file(s) skipped: none fits task {task.name}" if skipped
               else "no files there")
        raise FedgeError(f"no usable examples in {', '.join(config.data)} ({why}); run "
                         "`fedge data inspect` on them to see why")
    return _run_daemon(config, Daemon(config, task, Trainer(task, x, y, config.device,
                                                               config.precision), data))


def _check_can_train(device: str) -> None:
    """Refuses to start a training daemon where torch does not import (such a device
    must be made inference-only on purpose, since the server then never samples it) or
    where the asked-for CUDA device is not there."""
    from fedge.client.inference import torch_problem

    problem = torch_problem()
    if problem is not None:
        raise FedgeError(f"this device cannot train: {problem}. Run it as an "
                         "inference-only device with --inference-only (inference_only = "
                         "true), or install torch with the train extra: pip install "
                         "'fedge[train]'")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FedgeError(f"--device {device}: CUDA is not available here (no GPU, or "
                             "a torch built without CUDA); use --device cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise FedgeError(f"--device {device}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")


def _inference_only_daemon(config: ClientConfig) -> Any:
    """The inference-only daemon: the task (for its name and data schema), local
    labelled data if any, no trainer, and no torch imported."""
    import onnxruntime  # noqa: F401  (fail now, with the extra to install, not per DEPLOY)

    from fedge.client.daemon import Daemon
    from fedge.client.data import LocalData, ReadOptions
    from fedge.tasks import load_task

    # A user task whose module imports torch at the top fails here, saying so: such a
    # task must import torch inside its model functions, as the built-in ones do.
    task = load_task(config.task)
    data = None
    if config.data:
        data = LocalData(config.data, task.schema, ReadOptions(
            label_column=config.label_column, x_key=config.x_key, y_key=config.y_key))
        data.rescan()
    log.info("%s: inference-only: installs shipped edge models and never trains",
             config.device_id)
    return Daemon(config, task, None, data)


def _flower_daemon(config: ClientConfig) -> Any:
    """The daemon whose trainer is a Flower client (fedge/flower/client.py); its local
    data, if given, is what shipped edge models are measured on."""
    _check_can_train(config.device)
    from fedge.client.daemon import Daemon
    from fedge.client.data import LocalData, ReadOptions
    from fedge.flower.client import FlowerTrainer, load_flower_client, parse_node_config
    from fedge.tasks import load_task

    task = load_task(config.task)
    client = load_flower_client(config.flower_client,
                                parse_node_config(config.flower_node_config))
    data, x, y = None, None, None
    if config.data:
        data = LocalData(config.data, task.schema, ReadOptions(
            label_column=config.label_column, x_key=config.x_key, y_key=config.y_key))
        data.rescan()
        x, y = data.arrays()
    log.info("%s: training with the Flower client %s", config.device_id,
             config.flower_client)
    trainer = FlowerTrainer(task, client, x, y)
    daemon = Daemon(config, task, trainer, data)
    trainer.attach(daemon)
    return daemon


def _run_daemon(config: ClientConfig, daemon: Any) -> int:
    signals = CleanStop(daemon.stop)
    endpoint = None
    if config.metrics_port:
        from fedge.metrics import MetricsEndpoint, ValuesCollector

        endpoint = MetricsEndpoint(ValuesCollector(daemon.stats.metrics))
        endpoint.start("127.0.0.1", config.metrics_port)
    try:
        stats = daemon.run()
    finally:
        if endpoint is not None:
            endpoint.stop()
    if config.inference_only:
        print(f"{config.device_id}: installed {stats.edge_installed} edge model(s), refused "
              f"{stats.edge_refused}", file=sys.stderr)
    else:
        print(f"{config.device_id}: trained {stats.rounds_trained} round(s)", file=sys.stderr)
    signals.raise_if_interrupted()
    return 0
