"""``fedge simulate``: a real gRPC server and N real client daemons on loopback.

The server listens on an ephemeral port of 127.0.0.1. Each client is a daemon thread
with its own gRPC channel and session, reading its partition from disk with the same
reader ``fedge client`` uses, exactly as a device would.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from client.daemon import Daemon
from client.data import LocalData
from client.trainer import Trainer
from fedge.config import ClientConfig, ServerConfig, SimulateConfig
from fedge.errors import FedgeError
from fedge.tasks import load_task
from server.app import FedgeServer
from server.store import RoundRecord
from simulations.hostile import Attack, HostileTrainer
from simulations.partition import split, write_partitions
from simulations.report import build_report, client_data, edge_block, write_report
from simulations.scatter import write_scatters

log = logging.getLogger(__name__)


def simulate(config: SimulateConfig,
             on_round: Callable[[RoundRecord], None] | None = None,
             hostile: Mapping[int, Attack] | None = None) -> dict[str, Any]:
    """Runs the simulation and writes OUT/report.json; returns the report.

    hostile: client index -> the attack that client's updates suffer (simulation only:
    the hostile trainer lives here, not in the client daemon).
    """
    started = time.perf_counter()
    task = load_task(config.task)
    out = Path(config.out)
    for owned in ("data", "state", "devices"):  # a rerun into the same folder starts afresh
        shutil.rmtree(out / owned, ignore_errors=True)
    splits = task.load_data()
    parts = split(splits.train_y, config.clients, config.partition, config.alpha, config.seed)
    if config.scatter:
        scatters = write_scatters(splits.train_x, splits.train_y, parts, task.schema,
                                  out / "data", config.seed)
        dirs = [s.directory for s in scatters]
    else:
        dirs = write_partitions(splits.train_x, splits.train_y, parts, out / "data")
    log.info("wrote %d %s partitions (%s examples) under %s", len(dirs), config.partition,
             "/".join(str(len(p)) for p in parts), out / "data")

    # Many trainers share two cores: one intra-op thread each beats contention.
    torch.set_num_threads(1)
    min_clients = max(1, math.ceil(config.fraction * config.clients))
    server = FedgeServer(ServerConfig(
        task=config.task, host="127.0.0.1", port=0, rounds=config.rounds,
        min_clients=min_clients, fraction=config.fraction,
        round_timeout_s=config.round_timeout_s, epochs=config.epochs, lr=config.lr,
        batch_size=config.batch_size, seed=config.seed, state_dir=str(out / "state"),
        insecure=True, linger_s=5.0, strategy=config.strategy, update=config.update,
        encoding=config.encoding, server_lr=config.server_lr,
        server_momentum=config.server_momentum, mu=config.mu, trim=config.trim,
        byzantine_f=config.byzantine_f, topk_fraction=config.topk_fraction,
        edge=config.edge,
        # A worker per device keeps every long poll parked: round starts reach all
        # clients at once instead of at their next jittered retry.
        max_workers=max(256, config.clients + 64)), on_round=on_round)
    trust_key = str(server.deployments.public_key_path) if server.deployments else ""
    port = server.start()

    daemons, threads, errors = [], [], []
    for k, directory in enumerate(dirs):
        device_id = f"client-{k}"
        client_config = ClientConfig(
            server=f"127.0.0.1:{port}", task=config.task, data=(str(directory),),
            device_id=device_id, insecure=True, backoff_initial_s=0.1,
            backoff_max_s=2.0, token=server.tokens.create(device_id), trust_key=trust_key,
            model_dir=str(out / "devices" / device_id))
        data = LocalData(client_config.data, task.schema)
        data.rescan()
        x, y = data.arrays()
        if len(y) == 0:
            raise FedgeError(f"{device_id} found no usable examples in {directory}")
        attack = (hostile or {}).get(k)
        trainer = (Trainer(task, x, y, client_config.device) if attack is None
                   else HostileTrainer(task, x, y, client_config.device, attack=attack))
        daemon = Daemon(client_config, task, trainer, data)
        daemons.append(daemon)

        def run(daemon: Daemon = daemon) -> None:
            try:
                daemon.run()
            except Exception as exc:  # reported after the run, not lost in a thread
                errors.append(exc)
                log.exception("%s failed", daemon.config.device_id)

        threads.append(threading.Thread(target=run, name=f"client-{k}", daemon=True))
    for thread in threads:
        thread.start()
    try:
        records = server.wait()
    finally:
        for daemon in daemons:
            daemon.stop()
        server.shutdown()
        for thread in threads:
            thread.join(timeout=30)
    if errors:
        raise FedgeError(f"{len(errors)} client(s) failed; first: {errors[0]}")
    committed = [r for r in records if r.round > 0]
    if len(committed) < config.rounds:
        raise FedgeError(f"only {len(committed)} of {config.rounds} rounds committed")
    report = build_report(task.name, config.clients, records,
                          time.perf_counter() - started, partition=config.partition,
                          alpha=config.alpha if config.partition == "dirichlet" else None,
                          seed=config.seed, scatter=config.scatter,
                          client_data=[client_data(d) for d in daemons],
                          strategy=config.strategy, update=config.update,
                          encoding=config.encoding,
                          hostile=sorted(hostile) if hostile else [])
    if server.deployments is not None:
        report["edge"] = edge_block(out / "state", committed[-1].round)
    write_report(report, out)
    return report
