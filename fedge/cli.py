"""The ``fedge`` command. Components are imported lazily, per subcommand, so that
``fedge --help`` is instant and an edge device without torch can run what it needs.

This is the one place our errors become exit codes: 0 done, 1 unexpected failure,
2 a usage, config, task or data error (with a one-line message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from fedge import __version__
from fedge.errors import FedgeError
from fedge.logs import FORMATS
from fedge.logs import configure as configure_logs

log = logging.getLogger("fedge")


def _on_signals(handler: Callable[[], None]) -> None:
    """Calls handler on SIGTERM and SIGINT (the first of each; a second one kills)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        log.warning("received %s; stopping cleanly (send again to force)",
                    signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        handler()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)


def _options(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


# ---------------------------------------------------------------- server

SERVER_KEYS = ("task", "host", "port", "rounds", "min_clients", "fraction", "round_timeout_s",
               "epochs", "lr", "batch_size", "seed", "state_dir", "insecure", "tls_cert",
               "tls_key", "poll_seconds", "max_update_bytes", "allow_anonymous",
               "tls_client_ca", "quorum_fraction", "max_update_norm", "norm_action",
               "max_examples", "max_uploads", "rate_limit", "metrics_port", "edge",
               "edge_every", "max_workers")


# Strategy settings, shared by `fedge server` and `fedge simulate`.
STRATEGY_KEYS = ("strategy", "update", "encoding", "server_lr", "server_momentum", "mu", "trim",
                 "byzantine_f", "topk_fraction")


def cmd_server(args: argparse.Namespace) -> int:
    from fedge.config import ServerConfig, load
    from fedge.server.app import FedgeServer

    config = load(ServerConfig, args.config, _options(args, SERVER_KEYS + STRATEGY_KEYS))
    server = FedgeServer(config, on_round=_print_round(config.rounds))
    server.start()
    _on_signals(server.stop)
    records = server.wait()
    last = records[-1].round if records else 0
    if server.rounds.failure:
        print(f"the run failed: {server.rounds.failure}. State is kept in "
              f"{config.state_dir}; a restart resumes from round {last}", file=sys.stderr)
        return 1
    if last < config.rounds:
        print(f"stopped at round {last} of {config.rounds}; state is kept in "
              f"{config.state_dir} and a restart resumes from there", file=sys.stderr)
    else:
        print(f"done: {config.rounds} rounds, final accuracy {records[-1].accuracy:.4f}; "
              f"checkpoints in {config.state_dir}/checkpoints", file=sys.stderr)
    deployments = server.deployments
    if deployments is not None and deployments.latest is not None:
        print(f"edge artifact of round {deployments.latest.round}: "
              f"{deployments.latest.directory}; devices trust {deployments.public_key_path}",
              file=sys.stderr)
    return 0


def _print_round(total: int) -> Callable[[Any], None]:
    started = time.monotonic()

    def show(record: Any) -> None:
        print(f"round {record.round:>3}/{total}  accuracy {record.accuracy:.4f}  "
              f"loss {record.loss:.4f}  clients {record.clients}  "
              f"{record.seconds:5.2f} s  (elapsed {time.monotonic() - started:.1f} s)",
              file=sys.stderr, flush=True)

    return show


# ---------------------------------------------------------------- client

CLIENT_KEYS = ("server", "task", "data", "device_id", "insecure", "tls_ca", "device",
               "poll_seconds", "token", "tls_cert", "tls_key", "metrics_port", "label_column",
               "debug_report_files", "trust_key", "model_dir", "inference_only")


def cmd_client(args: argparse.Namespace) -> int:
    from fedge.client.daemon import Daemon
    from fedge.client.data import LocalData, ReadOptions
    from fedge.config import ClientConfig, load

    options = _options(args, CLIENT_KEYS)
    if "token" not in options and os.environ.get("FEDGE_TOKEN"):
        options["token"] = os.environ["FEDGE_TOKEN"]
    config = load(ClientConfig, args.config, options)
    if config.inference_only:
        return _run_daemon(config, _inference_only_daemon(config))
    if not config.data:
        raise FedgeError("the client needs local data: --data DIR (repeatable)")
    _check_can_train()
    from fedge.client.trainer import Trainer
    from fedge.tasks import load_task

    task = load_task(config.task)
    data = LocalData(config.data, task.schema, ReadOptions(
        label_column=config.label_column, x_key=config.x_key, y_key=config.y_key))
    data.rescan()
    x, y = data.arrays()
    if len(y) == 0:
        raise FedgeError(f"no usable examples in {', '.join(config.data)}; run "
                         "`fedge data inspect` on them to see why")
    return _run_daemon(config, Daemon(config, task, Trainer(task, x, y, config.device), data))


def _check_can_train() -> None:
    """Refuses to start a training daemon where torch does not import: such a device
    must be made inference-only on purpose, since the server then never samples it."""
    from fedge.client.inference import torch_problem

    problem = torch_problem()
    if problem is not None:
        raise FedgeError(f"this device cannot train: {problem}. Run it as an "
                         "inference-only device with --inference-only (inference_only = "
                         "true), or install torch with the train extra: pip install "
                         "'fedge[train]'")


def _inference_only_daemon(config: Any) -> Any:
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


def _run_daemon(config: Any, daemon: Any) -> int:
    _on_signals(daemon.stop)
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
    return 0


# ---------------------------------------------------------------- tokens

def cmd_tokens(args: argparse.Namespace) -> int:
    from fedge.server.tokens import TokenStore

    store = TokenStore(args.state_dir)
    try:
        if args.tokens_command == "create":
            token = store.create(args.device, args.role)
            print(f"token for device {args.device!r} (shown once; the server keeps only "
                  f"its hash; give it to the device as FEDGE_TOKEN):", file=sys.stderr)
            print(token)
        elif args.tokens_command == "revoke":
            store.revoke(args.device)
            print(f"revoked the token of device {args.device!r}", file=sys.stderr)
        else:
            rows = store.list()
            if not rows:
                print("no tokens; create one with `fedge tokens create`", file=sys.stderr)
            for info in rows:
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created_at))
                state = "active" if info.active else "revoked"
                print(f"{info.device_id:<32} {info.role:<9} {state:<8} created {created} UTC")
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------- status

def cmd_status(args: argparse.Namespace) -> int:
    import json

    if bool(args.server) == bool(args.state_dir):
        raise FedgeError("give --server HOST:PORT (with an operator token) or --state-dir "
                         "DIR (on the server's machine), not both")
    snap = _remote_status(args) if args.server else _local_status(args.state_dir)
    if args.json:
        print(json.dumps(snap, indent=2))
    else:
        print(_format_status(snap))
    return 0


def _remote_status(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from fedge.client.daemon import open_channel
    from fedge.config import ClientConfig, build
    from fedge.protos import fedge_pb2, fedge_pb2_grpc
    from fedge.server.status import from_proto

    token = args.token or os.environ.get("FEDGE_TOKEN", "")
    if not token:
        raise FedgeError("status over the network needs an operator token: --token or "
                         "FEDGE_TOKEN (from `fedge tokens create --role operator`)")
    config = build(ClientConfig, {k: v for k, v in {
        "server": args.server, "insecure": args.insecure, "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key, "token": token,
        "device_id": "fedge-status"}.items() if v is not None})
    with open_channel(config) as channel:
        try:
            reply = fedge_pb2_grpc.FederationStub(channel).Status(
                fedge_pb2.StatusRequest(last_rounds=args.rounds), timeout=15)
        except grpc.RpcError as exc:
            raise FedgeError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    return from_proto(reply)


def _local_status(state_dir: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    path = Path(state_dir) / "status.json"
    try:
        snap: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise FedgeError(f"{path} does not exist: is {state_dir} a server's state "
                         "directory, and has that server run?") from None
    except (OSError, ValueError) as exc:
        raise FedgeError(f"cannot read {path}: {exc}") from None
    age = time.time() - float(snap.get("written_at", 0))
    snap["snapshot_age_seconds"] = round(age, 1)
    return snap


def _format_status(snap: dict[str, Any]) -> str:
    lines = [f"task {snap['task']}  phase {snap['phase']}  round {snap['round']}/"
             f"{snap['rounds_total']}  model v{snap['model_version']}  selected "
             f"{snap['selected']}  reported {snap['reported']}  up "
             f"{snap['uptime_seconds']:.0f} s"]
    if snap.get("snapshot_age_seconds", 0) > 30:
        lines.append(f"(snapshot written {snap['snapshot_age_seconds']:.0f} s ago: the "
                     "server may not be running)")
    lines.append(f"devices ({len(snap['devices'])}):")
    lines.append(f"  {'device':<24} {'live':<5} {'seen':>8}  {'examples':>8}  "
                 f"{'edge':>5}  {'accelerator':<16} platform")
    for d in snap["devices"]:
        lines.append(f"  {d['device_id']:<24} {'yes' if d['live'] else 'no':<5} "
                     f"{d['last_seen_seconds']:>6.1f} s  {d['num_examples']:>8}  "
                     f"{d['edge_model'] or '-':>5}  {d['accelerator'] or '-':<16} "
                     f"{d['platform'] or '-'}"
                     + ("  [inference only]" if d.get("inference_only") else ""))
    lines.append("rounds:")
    lines.append(f"  {'round':>5}  {'accuracy':>8}  {'loss':>7}  {'clients':>7}  "
                 f"{'seconds':>7}")
    for r in snap["rounds"]:
        lines.append(f"  {r['round']:>5}  {r['accuracy']:>8.4f}  {r['loss']:>7.4f}  "
                     f"{r['clients']:>7}  {r['seconds']:>7.2f}")
    if snap["refusals"]:
        lines.append("refused: " + ", ".join(f"{k} {v}" for k, v in snap["refusals"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------- data

def cmd_data_partition(args: argparse.Namespace) -> int:
    from fedge.config import PARTITIONS
    from fedge.simulations.partition import split, write_partitions
    from fedge.tasks import load_task

    if args.partition not in PARTITIONS:
        raise FedgeError(f"--partition must be one of {PARTITIONS}")
    task = load_task(args.task)
    splits = task.load_data()
    parts = split(splits.train_y, args.clients, args.partition, args.alpha, args.seed)
    if args.scatter:
        from fedge.simulations.scatter import write_scatters

        scatters = write_scatters(splits.train_x, splits.train_y, parts, task.schema,
                                  args.out, args.seed)
        dirs = [s.directory for s in scatters]
    else:
        dirs = write_partitions(splits.train_x, splits.train_y, parts, args.out)
    for directory, part in zip(dirs, parts, strict=True):
        print(f"{directory}  {len(part)} examples")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    import json

    from fedge.client.data import ReadOptions, inspect_sources
    from fedge.tasks import load_task

    task = load_task(args.task)
    inventory = inspect_sources(args.paths, task.schema, ReadOptions(
        label_column=args.label_column or "", x_key=args.x_key, y_key=args.y_key))
    if args.json:
        print(json.dumps(inventory.to_dict(), indent=2))
    else:
        print(inventory.format_table())
    return 0


# ---------------------------------------------------------------- simulate

SIMULATE_KEYS = ("task", "clients", "rounds", "partition", "alpha", "seed", "out", "epochs",
                 "lr", "batch_size", "fraction", "scatter", "edge")


# Scenario knobs and backends of `fedge simulate` (see simulations/scenario.py).
SCENARIO_KEYS = ("backend", "workers", "ray_address", "min_clients", "quorum_fraction",
                 "round_timeout_s", "dropout", "stragglers", "straggler_delay_s",
                 "straggler_distribution", "late_joiners", "join_round", "leavers",
                 "leave_round", "hostile_clients", "attack", "attack_factor", "bandwidth_kbps")


def cmd_simulate(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from fedge.progress import RoundBar
    from fedge.simulations.report import format_table
    from fedge.simulations.runner import simulate
    from fedge.simulations.scenario import load_simulation

    config = load_simulation(args.scenario, args.config, _options(
        args, SIMULATE_KEYS + STRATEGY_KEYS + SCENARIO_KEYS))
    scenario = f", scenario {config.scenario}" if config.scenario else ""
    print(f"simulating {config.clients} clients x {config.rounds} rounds of {config.task} "
          f"({config.partition}{scenario}, backend {config.backend}) into {config.out}",
          file=sys.stderr, flush=True)
    bar = RoundBar(config.rounds, sys.stderr) if sys.stderr.isatty() else None
    with bar if bar is not None else contextlib.nullcontext():
        report = simulate(config, on_round=bar or _print_round(config.rounds))
    print(format_table(report))
    outputs = ", ".join(f"{config.out}/{name}" for name in ("report.json", "summary.md",
                                                            "accuracy.png")
                        if (Path(config.out) / name).exists())
    print(f"outputs: {outputs}", file=sys.stderr)
    if report.get("failure"):
        print(f"the run stopped early: {report['failure']}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- edge

def cmd_edge_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedge.edge.compiler.artifact import build_artifact
    from fedge.edge.compiler.keys import PUBLIC_FILE, SigningKey
    from fedge.server.store import StateStore
    from fedge.tasks import load_task
    from fedge.tensors import from_blob

    if not (Path(args.state_dir) / "fedge.db").is_file():
        raise FedgeError(f"{args.state_dir} is not a server state dir (no fedge.db)")
    store = StateStore(args.state_dir)
    try:
        recorded = store.recorded_task()
        records = store.rounds()
        if not records:
            raise FedgeError(f"{args.state_dir} holds no committed round")
        round_ = records[-1].round if args.round is None else args.round
        if round_ not in {r.round for r in records}:
            raise FedgeError(f"{args.state_dir} has no committed round {round_} "
                             f"(rounds 0..{records[-1].round})")
        weights, _ = from_blob(store.blob(round_))
    finally:
        store.close()
    task = load_task(args.task or recorded or "digits-mlp")
    key = SigningKey.load_or_create(args.state_dir)
    report = build_artifact(task, weights, round_, key, args.out)
    print(f"{args.out}: round {round_}, int8 {report.int8_onnx_bytes:,} bytes (teacher fp32 "
          f"{report.fp32_onnx_bytes:,}), accuracy int8 {report.int8_accuracy:.4f} teacher "
          f"{report.teacher_accuracy:.4f}; signed by key {key.key_id} "
          f"({args.state_dir}/{PUBLIC_FILE})")
    return 0


def cmd_edge_verify(args: argparse.Namespace) -> int:
    from fedge.edge.runtime import load_public_key, read_artifact, verify

    manifest = verify(read_artifact(args.artifact), load_public_key(args.public_key))
    raw = manifest.raw
    print(f"{args.artifact}: OK, task {raw.get('task')} round {manifest.round}, model "
          f"sha256 {manifest.sha256}, signed by key {raw['signature']['key_id']}, needs "
          f"onnxruntime >= {raw.get('min_runtime', {}).get('onnxruntime', '?')}")
    return 0


def cmd_edge_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from fedge.edge.runtime import EdgeModel, load_public_key

    key = load_public_key(args.public_key) if args.public_key else None
    model = EdgeModel.open(args.artifact, key)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FedgeError(f"cannot read {args.input} as a .npy array: {exc}") from exc
    labels = model.manifest.labels
    if args.scores:  # the raw outputs too, bit for bit, to compare runtimes with
        scores = model.logits(x)
        np.save(args.scores, scores, allow_pickle=False)
        indices = scores.argmax(axis=1)
    else:
        indices = model.predict(x)
    for index in indices:
        print(labels[int(index)])
    return 0


def _add_edge_options(p: argparse.ArgumentParser, server: bool) -> None:
    """Edge-artifact options of `fedge server` and `fedge simulate`."""
    p.add_argument("--no-edge", dest="edge", action="store_false", default=None,
                   help="build and ship no edge artifact")
    if server:
        p.add_argument("--edge-every", dest="edge_every", type=int,
                       help="also build an edge artifact every N rounds (default 0: only "
                       "after the last)")


def _add_edge(sub: Any) -> None:
    p = sub.add_parser("edge", help="build, verify and run edge artifacts",
                       description="Edge artifacts: a distilled int8 ONNX student model "
                       "with a signed manifest. verify and predict need only numpy and "
                       "onnxruntime.")
    edge_sub = p.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")
    build = edge_sub.add_parser("build", help="build an artifact from a stored checkpoint")
    build.add_argument("--state-dir", dest="state_dir", required=True,
                       help="the server's state dir (checkpoints and signing key)")
    build.add_argument("--round", type=int, help="the round to build from (default last)")
    build.add_argument("--task", help="the task (default: the one the state dir records)")
    build.add_argument("--out", required=True, help="the artifact directory to write")
    build.set_defaults(func=cmd_edge_build)
    check = edge_sub.add_parser("verify", help="check an artifact's signature and hash")
    check.add_argument("artifact", help="artifact directory or packed file")
    check.add_argument("--public-key", dest="public_key", required=True,
                       help="the server's public key (PEM)")
    check.set_defaults(func=cmd_edge_verify)
    predict = edge_sub.add_parser("predict", help="print one prediction per input row")
    predict.add_argument("artifact", help="artifact directory or packed file")
    predict.add_argument("input", help="a .npy array of inputs, one example per row")
    predict.add_argument("--public-key", dest="public_key",
                         help="verify the artifact against this key first")
    predict.add_argument("--scores", help="also save the model's output scores, one row "
                         "per input, to this .npy file")
    predict.set_defaults(func=cmd_edge_predict)


# ---------------------------------------------------------------- parser

def _add_local_training(p: argparse.ArgumentParser) -> None:
    """Options for the local training settings the server hands out with each task."""
    p.add_argument("--epochs", type=int, help="local epochs (default: the task's)")
    p.add_argument("--lr", type=float, help="local learning rate (default: the task's)")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="local batch size (default: the task's)")


def _add_strategy(p: argparse.ArgumentParser) -> None:
    """Options choosing the strategy, the update kind and the update encoding."""
    g = p.add_argument_group("strategy and updates")
    g.add_argument("--strategy", help="fedavg (default), fedavgm, fedprox, fedadam, fedyogi, "
                   "fedadagrad, median, trimmed-mean, krum or multikrum")
    g.add_argument("--update", help="what clients send: weights (default), delta or gradient")
    g.add_argument("--encoding", help="how updates travel: f32 (default), f16, int8 or topk")
    g.add_argument("--server-lr", dest="server_lr", type=float,
                   help="server step size (default: the strategy's)")
    g.add_argument("--server-momentum", dest="server_momentum", type=float,
                   help="fedavgm's momentum (default 0.9)")
    g.add_argument("--mu", type=float, help="fedprox's proximal coefficient (default 0.01)")
    g.add_argument("--trim", type=float,
                   help="trimmed-mean's share cut at each end (default 0.2)")
    g.add_argument("--byzantine-f", dest="byzantine_f", type=int,
                   help="krum's number of hostile clients tolerated (default 1)")
    g.add_argument("--topk-fraction", dest="topk_fraction", type=float,
                   help="topk's share of entries sent per tensor (default 0.1)")


def _add_server(sub: Any) -> None:
    p = sub.add_parser("server", help="run the aggregation server",
                       description="Run the gRPC aggregation server for a number of rounds. "
                       "Restarting on the same --state-dir resumes from the last committed "
                       "round.")
    p.add_argument("--config", help="a TOML file of server settings (keys as the options)")
    p.add_argument("--task", help="built-in task name or package.module:attr "
                   "(default digits-mlp)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to listen on (default 50051; 0 = any)")
    p.add_argument("--rounds", type=int, help="rounds to run (default 10)")
    p.add_argument("--min-clients", dest="min_clients", type=int,
                   help="updates a round needs to commit (default 2)")
    p.add_argument("--fraction", type=float, help="share of devices sampled per round")
    p.add_argument("--round-timeout", dest="round_timeout_s", type=float,
                   help="seconds before a round commits on quorum or is retried (300)")
    _add_local_training(p)
    p.add_argument("--seed", type=int, help="seed of the initial model and sampling")
    p.add_argument("--state-dir", dest="state_dir",
                   help="checkpoints and round database (default fedge-state)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="serve without TLS (loopback development only)")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain")
    p.add_argument("--tls-key", dest="tls_key", help="PEM private key")
    p.add_argument("--poll-seconds", dest="poll_seconds", type=float,
                   help="how long a device's long-poll is held (default 10)")
    p.add_argument("--max-update-bytes", dest="max_update_bytes", type=int,
                   help="largest update accepted, in bytes (default 1 GiB)")
    _add_server_guards(p)
    _add_strategy(p)
    _add_edge_options(p, server=True)
    p.set_defaults(func=cmd_server)


def _add_server_guards(p: argparse.ArgumentParser) -> None:
    """Who may connect, when a round commits, and what an update may look like."""
    p.add_argument("--allow-anonymous", dest="allow_anonymous", action="store_true",
                   default=None, help="accept devices without a token (ids unverified)")
    p.add_argument("--tls-client-ca", dest="tls_client_ca",
                   help="require client certificates signed by this PEM CA (mTLS)")
    p.add_argument("--quorum-fraction", dest="quorum_fraction", type=float,
                   help="share of sampled devices that commits a round at its deadline "
                   "(default: --min-clients updates)")
    p.add_argument("--max-update-norm", dest="max_update_norm", type=float,
                   help="bound on an update's L2 distance from the global model "
                   "(default 1e6; 0 = none)")
    p.add_argument("--norm-action", dest="norm_action", choices=("refuse", "clip"),
                   help="what to do with an update over the bound (default refuse)")
    p.add_argument("--max-examples", dest="max_examples", type=int,
                   help="largest example count a device may declare (default 2^31)")
    p.add_argument("--max-uploads", dest="max_uploads", type=int,
                   help="update streams received at once (default 32)")
    p.add_argument("--rate-limit", dest="rate_limit", type=float,
                   help="requests per second per device (default 50; 0 = off)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int,
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default off)")
    p.add_argument("--max-workers", dest="max_workers", type=int,
                   help="RPC worker threads; long polls hold one each, so raise it above "
                   "the fleet size for prompt round starts (default 256)")


def _add_client(sub: Any) -> None:
    p = sub.add_parser("client", help="run the client daemon on a device",
                       description="Join a server, train on local data each round it is "
                       "picked for, and exit when the server says the run is over. "
                       "Reconnects with backoff while the server is away.")
    p.add_argument("--config", help="a TOML file of client settings (keys as the options)")
    p.add_argument("--server", help="HOST:PORT of the server (default 127.0.0.1:50051)")
    p.add_argument("--task", help="the task, as on the server (default digits-mlp)")
    p.add_argument("--data", action="append",
                   help="a directory, file or glob of local data (repeatable)")
    p.add_argument("--device-id", dest="device_id", help="this device's id (default: "
                   "the host name)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="connect without TLS (loopback development only)")
    p.add_argument("--tls-ca", dest="tls_ca", help="PEM CA certificate to trust")
    p.add_argument("--tls-cert", dest="tls_cert",
                   help="PEM client certificate, for servers that require mTLS")
    p.add_argument("--tls-key", dest="tls_key", help="PEM key of the client certificate")
    p.add_argument("--token", help="this device's token (default: $FEDGE_TOKEN; prefer "
                   "the variable, command lines are visible to other users)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int,
                   help="serve the daemon's Prometheus metrics on 127.0.0.1:PORT (off)")
    p.add_argument("--device", help="auto (CUDA if available), cpu or cuda[:N]")
    p.add_argument("--poll-seconds", dest="poll_seconds", type=float,
                   help="longest wait per poll (default 10)")
    p.add_argument("--label-column", dest="label_column",
                   help="CSV column / JSON key of the label (default: the task's)")
    p.add_argument("--debug-report-files", dest="debug_report_files", action="store_true",
                   default=None, help="debugging: name skipped files in the metrics sent "
                   "to the server (by default only counts leave the device)")
    p.add_argument("--trust-key", dest="trust_key", help="the server's edge public key "
                   "(PEM); shipped edge models are installed only if signed by it")
    p.add_argument("--model-dir", dest="model_dir",
                   help="where edge models are installed (default fedge-model)")
    p.add_argument("--inference-only", dest="inference_only", action="store_true",
                   default=None, help="never train: only install shipped edge models and "
                   "report how they do on the --data given (needs --trust-key; no torch)")
    p.set_defaults(func=cmd_client)


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="prepare local data")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    part = data_sub.add_parser(
        "partition", help="split a task's training pool into client directories",
        description="Write OUT/client-0 ... OUT/client-(N-1), each a directory that "
        "`fedge client --data` accepts.")
    part.add_argument("--task", default="digits-mlp")
    part.add_argument("--clients", type=int, required=True)
    part.add_argument("--partition", default="iid", help="iid or dirichlet")
    part.add_argument("--alpha", type=float, default=0.5,
                      help="Dirichlet concentration (smaller is more skewed)")
    part.add_argument("--seed", type=int, default=0)
    part.add_argument("--out", required=True)
    part.add_argument("--scatter", action="store_true",
                      help="write each share as several folders of mixed formats (CSV, npz, "
                      "JSON Lines, PNG) with a few corrupt files, as a device would hold it")
    part.set_defaults(func=cmd_data_partition)
    _add_data_inspect(data_sub)


def _add_data_inspect(data_sub: Any) -> None:
    p = data_sub.add_parser(
        "inspect", help="scan local data sources and report what a client would read",
        description="Read data sources (directories, files or globs) as `fedge client` "
        "would, and print per source: files read and skipped, records read and skipped "
        "and why, and the label histogram.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--task", default="digits-mlp", help="the task whose schema applies")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--label-column", dest="label_column",
                   help="CSV column / JSON key of the label (default: the task's)")
    p.add_argument("--x-key", dest="x_key", default="x", help="inputs array/key name")
    p.add_argument("--y-key", dest="y_key", default="y", help="labels array/key name")
    p.set_defaults(func=cmd_data_inspect)


def _add_tokens(sub: Any) -> None:
    p = sub.add_parser("tokens", help="enroll devices: create, revoke and list tokens",
                       description="Manage device tokens in a server's state directory. "
                       "Changes take effect on a running server at the device's next "
                       "request.")
    tokens_sub = p.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    create = tokens_sub.add_parser("create", help="issue a device's token (printed once, "
                                   "alone on the last line); replaces any earlier one")
    create.add_argument("--role", choices=("device", "operator"), default="device",
                        help="device (joins and trains) or operator (reads `fedge status`)")
    revoke = tokens_sub.add_parser("revoke", help="revoke a device's token")
    listing = tokens_sub.add_parser("list", help="devices with tokens, and their state")
    for q in (create, revoke):
        q.add_argument("--device", required=True, help="the device id")
    for q in (create, revoke, listing):
        q.add_argument("--state-dir", dest="state_dir", default="fedge-state",
                       help="the server's state directory (default fedge-state)")
        q.set_defaults(func=cmd_tokens)


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="show a running server's round, devices and metrics",
                       description="Ask a server for its state as an operator (--server, "
                       "with an operator token), or read it on the server's own machine "
                       "(--state-dir).")
    p.add_argument("--server", help="HOST:PORT of the server")
    p.add_argument("--state-dir", dest="state_dir", help="the server's state directory")
    p.add_argument("--token", help="an operator token (default: $FEDGE_TOKEN)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="connect without TLS (loopback development only)")
    p.add_argument("--tls-ca", dest="tls_ca", help="PEM CA certificate to trust")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM client certificate (mTLS)")
    p.add_argument("--tls-key", dest="tls_key", help="PEM key of the client certificate")
    p.add_argument("--rounds", type=int, default=5, help="latest rounds to show (5)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_status)


def _add_simulate(sub: Any) -> None:
    p = sub.add_parser("simulate", help="run a local multi-client simulation",
                       description="Start a real server and N real client daemons on "
                       "loopback gRPC, train, and write OUT/report.json.")
    p.add_argument("--config", help="a TOML file of simulation settings")
    p.add_argument("--task", help="built-in task name or package.module:attr "
                   "(default digits-mlp)")
    p.add_argument("--clients", type=int, help="number of clients (default 5)")
    p.add_argument("--rounds", type=int, help="rounds (default 10)")
    p.add_argument("--partition", help="iid (default) or dirichlet")
    p.add_argument("--alpha", type=float, help="Dirichlet concentration (default 0.5)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--out", help="output directory (default runs/simulate)")
    _add_local_training(p)
    p.add_argument("--fraction", type=float, help="share of clients sampled per round")
    p.add_argument("--scatter", action="store_true", default=None,
                   help="write each client's share as mixed formats with corrupt files")
    _add_strategy(p)
    _add_edge_options(p, server=False)
    _add_scenario_options(p)
    p.set_defaults(func=cmd_simulate)


def _add_scenario_options(p: argparse.ArgumentParser) -> None:
    """`fedge simulate`'s scenario knobs and backends (README "Scenarios", "Backends")."""
    g = p.add_argument_group("scenarios (each also a config key)")
    g.add_argument("--scenario", help="a built-in scenario (dropout, stragglers, churn, "
                   "hostile, quantity-skew, label-skew, bandwidth) or a TOML file; "
                   "--config and flags override it")
    g.add_argument("--dropout", type=float, help="per client and round, the probability "
                   "a sampled client goes silent (default 0)")
    g.add_argument("--stragglers", type=float, help="fraction of clients delayed before "
                   "each update (default 0)")
    g.add_argument("--straggler-delay", dest="straggler_delay_s", type=float,
                   help="mean straggler delay in seconds (default 1)")
    g.add_argument("--straggler-distribution", dest="straggler_distribution",
                   help="exponential (default), uniform or fixed")
    g.add_argument("--late-joiners", dest="late_joiners", type=float,
                   help="fraction of clients that join only at --join-round")
    g.add_argument("--join-round", dest="join_round", type=int,
                   help="late joiners connect once the round before it is committed "
                   "(default 3)")
    g.add_argument("--leavers", type=float, help="fraction of clients that leave after "
                   "--leave-round")
    g.add_argument("--leave-round", dest="leave_round", type=int,
                   help="the last round leavers take part in (default 2)")
    g.add_argument("--hostile-clients", dest="hostile_clients", type=float,
                   help="fraction of clients whose updates are attacks")
    g.add_argument("--attack", help="signflip (default), scale or noise")
    g.add_argument("--attack-factor", dest="attack_factor", type=float,
                   help="the attack's size, times the honest step (default 4)")
    g.add_argument("--bandwidth-kbps", dest="bandwidth_kbps", type=float,
                   help="each client's link cap in kilobits/s, each way (default: none)")
    g.add_argument("--round-timeout", dest="round_timeout_s", type=float,
                   help="seconds a round waits for its updates (default 120)")
    g.add_argument("--quorum-fraction", dest="quorum_fraction", type=float,
                   help="share of sampled clients a round commits with at its deadline "
                   "(default: all, or half when clients drop out or leave)")
    g.add_argument("--min-clients", dest="min_clients", type=int,
                   help="clients needed to start a round (default: the sampled fraction "
                   "of those present at the start)")
    g = p.add_argument_group("backends")
    g.add_argument("--backend", help="where clients run: auto (default: threads here), "
                   "threads, processes or ray")
    g.add_argument("--workers", type=int, help="processes/ray: client hosts (default: one "
                   "per core)")
    g.add_argument("--ray-address", dest="ray_address",
                   help="a Ray cluster to join (default: start a local Ray instance)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedge", description="Federated edge training: server, client daemon, "
        "simulation.")
    parser.add_argument("--version", action="version", version=f"fedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("--log-format", dest="log_format", choices=FORMATS, default="text",
                        help="text (default) or json: one object per line, same event names")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_server(sub)
    _add_client(sub)
    _add_data(sub)
    _add_simulate(sub)
    _add_tokens(sub)
    _add_status(sub)
    _add_edge(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Daemons log their work by default; a simulation shows progress lines instead.
    quiet = logging.WARNING if args.command == "simulate" else logging.INFO
    level = [quiet, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    configure_logs(level, args.log_format)
    try:
        return int(args.func(args))
    except FedgeError as exc:
        print(f"fedge: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = "edge" if exc.name == "onnxruntime" else "train"  # what a device may lack
        print(f"fedge: error: {exc.name} is not installed; this command needs the "
              f"{extra} extras: pip install 'fedge[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
