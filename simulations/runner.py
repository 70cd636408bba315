"""``fedge simulate``: a real gRPC server and N real client daemons on loopback.

The server listens on an ephemeral port of 127.0.0.1 (of every interface when the
clients are Ray actors on a cluster). The run is built in three steps: write each
client's partition to disk, make one JSON-able ClientSpec per client (with the conditions
its scenario gives it), and hand the specs to a backend (threads, worker processes or Ray
actors). Each client keeps its own gRPC channel and session and reads its partition with
the same reader ``fedge client`` uses, exactly as a device would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.config import ServerConfig, SimulateConfig
from fedge.errors import FedgeError
from fedge.server.app import FedgeServer
from fedge.server.budget import default_delta
from fedge.server.store import RoundRecord
from fedge.simulations.backends import RayBackend, choose, make_backend, split_groups
from fedge.simulations.device import ClientSpec
from fedge.simulations.hostile import Attack
from fedge.simulations.partition import split, write_partitions
from fedge.simulations.personal import personalization_block
from fedge.simulations.report import (
    build_report,
    edge_block,
    federated_rows,
    participation,
    write_outputs,
)
from fedge.simulations.scatter import write_scatters
from fedge.tasks import Task, load_task
from fedge.threads import cores

log = logging.getLogger(__name__)


def simulate(config: SimulateConfig,
             on_round: Callable[[RoundRecord], None] | None = None,
             hostile: Mapping[int, Attack] | None = None,
             on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Runs the simulation and writes OUT/report.json, OUT/summary.md and (with
    matplotlib) OUT/accuracy.png; returns the report.

    hostile: client index -> the attack that client's updates suffer, beside those the
    config's hostile_clients picks (simulation only: the hostile trainer lives here, not
    in the client daemon).
    on_start: called once the data is split, so that a config the data cannot serve fails
    before anything says the simulation started.
    """
    started = time.perf_counter()
    task = load_task(config.task)
    out = Path(config.out)
    for owned in ("data", "state", "devices", "hosts"):  # a rerun starts afresh
        shutil.rmtree(out / owned, ignore_errors=True)
    dirs = _write_data(config, task, out)
    if on_start is not None:
        on_start()
    roles = assign_roles(config)
    attacks = {k: Attack(config.attack, config.attack_factor) for k in roles["hostile"]}
    attacks.update(hostile or {})

    backend_name = choose(config.backend, config.clients)
    ray_backend = RayBackend(config.ray_address) if backend_name == "ray" else None
    # Many trainers share the cores: one intra-op thread each beats contention.
    torch.set_num_threads(1)
    present = config.clients - len(roles["late"])
    min_clients = config.min_clients or max(1, math.ceil(config.fraction * present))
    if config.relays:  # the server's devices are the relays; each samples its clients
        min_clients, present = config.relays, config.relays
    # Clients that drop, leave, or send updates the server refuses (hostile ones) must
    # not hold every round hostage: half of those sampled commit it then.
    quorum = config.quorum_fraction or (
        0.5 if config.dropout or roles["leave"] or attacks else 0.0)
    by_round: dict[int, RoundRecord] = {}

    def record(r: RoundRecord) -> None:
        # A round comes at its commit, and again with its accuracy once it is evaluated
        # (fedge.server.eval_worker); the later record replaces the earlier.
        if r.round in by_round and r.epsilon is None:
            r = dataclasses.replace(r, epsilon=by_round[r.round].epsilon)
        by_round[r.round] = r
        if on_round is not None:
            on_round(r)

    cluster = bool(config.ray_address)  # remote actors must reach the server
    server = FedgeServer(ServerConfig(
        task=config.task, host="0.0.0.0" if cluster else "127.0.0.1", port=0,
        rounds=config.rounds, min_clients=min_clients,
        fraction=1.0 if config.relays else config.fraction,  # relays sample their clients
        round_timeout_s=config.round_timeout_s, epochs=config.epochs, lr=config.lr,
        batch_size=config.batch_size, momentum=config.momentum, seed=config.seed,
        state_dir=str(out / "state"),
        # Devices that personalize report before their STOP: give them time (the linger
        # ends as soon as every device has been told STOP).
        insecure=True, linger_s=60.0 if config.personalize_epochs else 5.0,
        strategy=config.strategy, update=config.update,
        encoding=config.encoding, server_lr=config.server_lr,
        server_momentum=config.server_momentum, mu=config.mu, trim=config.trim,
        byzantine_f=config.byzantine_f, topk_fraction=config.topk_fraction,
        edge=config.edge, quorum_fraction=quorum, dp=config.dp,
        dp_noise_multiplier=config.dp_noise_multiplier, dp_clip=config.dp_clip,
        dp_adaptive_clip=config.dp_adaptive_clip,
        dp_target_quantile=config.dp_target_quantile, dp_clip_lr=config.dp_clip_lr,
        # delta's default is for the fleet, which the simulation knows from the start
        dp_delta=config.dp_delta or (default_delta(config.clients) if config.dp != "off"
                                     else None),
        target_epsilon=config.target_epsilon,
        secure_aggregation=config.secure_aggregation,
        secure_threshold=config.secure_threshold, secure_neighbours=config.secure_neighbours,
        secure_clip=config.secure_clip, secure_stage_timeout_s=config.secure_stage_timeout_s,
        # A worker per device keeps every long poll parked: round starts reach all
        # clients at once instead of at their next jittered retry.
        max_workers=max(256, config.clients + 64),
        # A simulated fleet is honest and trusted: it aggregates plain FedAvg weights,
        # not the fleet-relative bounds a server facing real devices applies.
        examples_factor=0.0, norm_factor=0.0,
        eval_every_rounds=config.eval_every_rounds, eval_fraction=config.eval_fraction,
        holdout_fraction=config.holdout_fraction, canary_fraction=config.canary_fraction,
        canary_margin=config.canary_margin, canary_timeout_s=config.canary_timeout_s,
        mode=config.mode,
        concurrency=config.concurrency, buffer_size=config.buffer_size,
        max_staleness=config.max_staleness, staleness=config.staleness,
        staleness_exponent=config.staleness_exponent, eval_every=config.eval_every),
        on_round=record,
        # Round 1 samples the whole fleet present at the start, not its first joiners.
        start_clients=present)
    port = server.start()
    host = "127.0.0.1"
    if cluster and ray_backend is not None:
        host = ray_backend.ray.util.get_node_ip_address()
    specs = client_specs(config, dirs, server, f"{host}:{port}", roles, attacks)
    tier = None
    if config.relays:  # the clients talk to their relays, the relays to the server
        from fedge.simulations.relays import RelayTier

        tier = RelayTier(config, server, "0.0.0.0" if cluster else "127.0.0.1", server.stop)
        tier.start()
        specs = tier.route(specs, host)
    workers = config.workers or (ray_backend.cpus() if ray_backend else cores())
    backend = ray_backend or make_backend(backend_name, out / "hosts")
    groups = split_groups(specs, 1 if backend_name == "threads" else workers)
    log.info("%d clients on backend %s (%d host(s))", len(specs), backend_name, len(groups))
    if config.secure_aggregation and len(specs) > len(groups):
        _say_if_masks_hold_the_lock(len(specs) // len(groups))
    ended: list[bool] = []

    def on_exit(ok: bool) -> None:
        # A failed host, or every host gone, leaves rounds that can never complete.
        ended.append(ok)
        if not ok or len(ended) == len(groups):
            server.stop()

    backend.start(groups, on_exit)
    interrupted = False
    try:
        server.wait()
    except KeyboardInterrupt:
        # Ctrl-C: stop the fleet, then report the rounds that did commit (a second
        # Ctrl-C during this clean-up ends it at once).
        interrupted = True
        log.warning("interrupted: stopping the clients and writing a partial report")
    finally:
        backend.stop()
        server.shutdown()
        if tier is not None:
            tier.stop()
        results = backend.join(timeout=60)
    if tier is not None and tier.error:
        raise FedgeError(tier.error)
    failed = [r for r in results if r["error"]]
    if failed and not interrupted:
        raise FedgeError(f"{len(failed)} client(s) failed; first: {failed[0]['client']}: "
                         f"{failed[0]['error']}")
    records = [by_round[k] for k in sorted(by_round)]
    committed = [r for r in records if r.round > 0]
    # A run the server stopped (a round that kept missing its quorum) still gets its
    # report: how the accuracy fell is what a hostile scenario is run to see.
    failure = server.rounds.failure
    ended_early = server.rounds.ended_early  # the privacy budget
    if len(committed) < config.rounds and not failure and not ended_early \
            and not interrupted:
        raise FedgeError(f"only {len(committed)} of {config.rounds} rounds committed")
    results.sort(key=lambda r: int(str(r["client"]).rsplit("-", 1)[-1]))
    report = build_report(task.name, config.clients, records,
                          time.perf_counter() - started, partition=config.partition,
                          alpha=config.alpha if config.partition in ("dirichlet", "quantity")
                          else None,
                          seed=config.seed, scatter=config.scatter,
                          client_data=[_data_only(r) for r in results],
                          strategy=config.strategy, update=config.update,
                          encoding=config.encoding, hostile=sorted(attacks),
                          scenario=config.scenario or None, backend=backend_name,
                          hosts=len(groups), participation=participation(records),
                          conditions=conditions(config, roles, results))
    if tier is not None:
        report["relays"] = tier.report(records)
    if interrupted:
        report["interrupted"] = True
    report["mode"] = config.mode
    if config.mode == "async":
        report["asynchronous"] = async_block(config, server)
    budget = server.rounds.budget
    if budget is not None:
        report["privacy"] = budget.summary()
    if ended_early:
        report["ended_early"] = ended_early
    if config.eval_every_rounds:  # measured by the devices on their held-out slices
        report["federated"] = federated_rows(out / "state")
    if failure:
        report["failure"] = failure
    elif server.deployments is not None and committed and not interrupted:
        report["edge"] = edge_block(out / "state", committed[-1].round,
                                    tier.state_dirs if tier is not None else ())
    if config.personalize_epochs and committed and not failure and not interrupted:
        report["personalization"] = personalization_block(
            out / "state", committed[-1].round, config.personalize, config.personalize_epochs)
    write_outputs(report, out)
    return report


def _say_if_masks_hold_the_lock(per_process: int) -> None:
    """A hint where the devices that share a process will mask one at a time (a
    warning from 10 devices a process, where it costs the round seconds)."""
    import cryptography

    from fedge.secure import prg

    if not prg.releases_interpreter_lock():
        log.log(logging.WARNING if per_process >= 10 else logging.INFO,
                "cryptography %s holds the interpreter lock while it expands masks, so "
                "devices that share a process mask one at a time; cryptography 50 or newer "
                "releases it (secure rounds of 100 simulated devices at 1M parameters took "
                "about a sixth less time)", cryptography.__version__)


def _write_data(config: SimulateConfig, task: Task, out: Path) -> list[Path]:
    """Each client's partition under OUT/data; returns the client directories."""
    splits = task.load_data()
    parts = split(splits.train_y, config.clients, config.partition, config.alpha, config.seed)
    if config.scatter:
        scatters = write_scatters(splits.train_x, splits.train_y, parts,
                                  task.schema, out / "data", config.seed)
        dirs = [s.directory for s in scatters]
    else:
        dirs = write_partitions(splits.train_x, splits.train_y, parts, out / "data")
    log.info("wrote %d %s partitions (%s examples) under %s", len(dirs), config.partition,
             "/".join(str(len(p)) for p in parts), out / "data")
    return dirs


def _count(fraction: float, clients: int) -> int:
    """How many of clients a fraction picks: none at 0, at least one above."""
    return 0 if fraction <= 0 else max(1, min(clients, math.ceil(fraction * clients - 1e-9)))


def assign_roles(config: SimulateConfig) -> dict[str, list[int]]:
    """Which clients are hostile, join late, leave (disjoint groups) and straggle (any),
    drawn from the seed."""
    n = config.clients
    rng = np.random.default_rng(config.seed + 1)
    order = [int(k) for k in rng.permutation(n)]
    counts = [_count(config.hostile_clients, n), _count(config.late_joiners, n),
              _count(config.leavers, n)]
    if sum(counts) > n:
        raise FedgeError("hostile_clients, late_joiners and leavers pick more clients than "
                         f"there are ({n})")
    edges = np.cumsum([0, *counts])
    hostile, late, leave = (sorted(order[edges[i]:edges[i + 1]]) for i in range(3))
    stragglers = sorted(int(k) for k in rng.permutation(n)[:_count(config.stragglers, n)])
    if len(late) >= n:
        raise FedgeError("late_joiners leaves no client to start the run")
    return {"hostile": hostile, "late": late, "leave": leave, "stragglers": stragglers}


def client_specs(config: SimulateConfig, dirs: list[Path], server: FedgeServer,
                 address: str, roles: Mapping[str, list[int]],
                 attacks: Mapping[int, Attack]) -> list[ClientSpec]:
    """One ClientSpec per client, enrolled with the server (a token each)."""
    out = Path(config.out)
    trust_key = str(server.deployments.public_key_path) if server.deployments else ""
    watch = server.tokens.create("simulate-watch", role="operator") if roles["late"] else ""
    specs = []
    tokens = server.tokens.create_many([f"client-{k}" for k in range(len(dirs))])
    for k, directory in enumerate(dirs):
        device_id = f"client-{k}"
        attack = attacks.get(k)
        specs.append(ClientSpec(
            index=k, device_id=device_id, server=address, task=config.task,
            data=str(directory), token=tokens[k], trust_key=trust_key,
            model_dir=str(out / "devices" / device_id), seed=config.seed,
            dropout=config.dropout,
            delay=config.straggler_distribution if k in roles["stragglers"] else "",
            delay_s=config.straggler_delay_s,
            slowdown=config.straggler_slowdown if k in roles["stragglers"] else 1.0,
            join_round=config.join_round if k in roles["late"] else 0,
            leave_round=config.leave_round if k in roles["leave"] else 0,
            attack=attack.kind if attack else "",
            attack_factor=attack.factor if attack else config.attack_factor,
            bandwidth_kbps=config.bandwidth_kbps, flower_client=config.flower_client,
            num_clients=len(dirs), watch_token=watch if k in roles["late"] else "",
            personalize_epochs=config.personalize_epochs, personalize=config.personalize))
    return specs


def conditions(config: SimulateConfig, roles: Mapping[str, list[int]],
               results: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's record of the scenario's knobs and what the clients lived through."""
    return {
        "dropout": config.dropout,
        "dropped_rounds": sum(len(r["dropped_rounds"]) for r in results),
        "stragglers": roles["stragglers"],
        "straggler_delay_s": config.straggler_delay_s,
        "straggler_distribution": config.straggler_distribution,
        "straggler_slowdown": config.straggler_slowdown,
        "delay_seconds": round(sum(r["delay_seconds"] for r in results), 3),
        "late_joiners": roles["late"], "join_round": config.join_round,
        "leavers": roles["leave"], "leave_round": config.leave_round,
        "hostile": roles["hostile"], "attack": config.attack,
        "attack_factor": config.attack_factor,
        "bandwidth_kbps": config.bandwidth_kbps,
    }


def async_block(config: SimulateConfig, server: FedgeServer) -> dict[str, Any]:
    """The report's record of an async run: its settings, and the updates refused as
    too stale."""
    return {"concurrency": config.concurrency, "buffer_size": config.buffer_size,
            "max_staleness": config.max_staleness, "staleness": config.staleness,
            "staleness_exponent": config.staleness_exponent,
            "refused_stale": getattr(server.rounds, "refused_stale", 0)}


def _data_only(result: dict[str, Any]) -> dict[str, Any]:
    """A client's result without the run-only keys (the report's client_data entry)."""
    return {k: v for k, v in result.items() if k not in ("error",)}
