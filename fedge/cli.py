"""The ``fedge`` command. Components are imported lazily, per subcommand, so that
``fedge --help`` is instant and an edge device without torch can run what it needs.

This is the one place our errors become exit codes: 0 done, 1 unexpected failure,
2 a usage, config, task or data error (with a one-line message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from fedge import __version__
from fedge.errors import FedgeError

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
               "tls_key", "poll_seconds", "max_update_bytes")


# Strategy settings, shared by `fedge server` and `fedge simulate`.
STRATEGY_KEYS = ("strategy", "update", "encoding", "server_lr", "server_momentum", "mu", "trim",
                 "byzantine_f", "topk_fraction")


def cmd_server(args: argparse.Namespace) -> int:
    from fedge.config import ServerConfig, load
    from server.app import FedgeServer

    config = load(ServerConfig, args.config, _options(args, SERVER_KEYS + STRATEGY_KEYS))
    server = FedgeServer(config, on_round=_print_round(config.rounds))
    server.start()
    _on_signals(server.stop)
    records = server.wait()
    last = records[-1].round if records else 0
    if last < config.rounds:
        print(f"stopped at round {last} of {config.rounds}; state is kept in "
              f"{config.state_dir} and a restart resumes from there", file=sys.stderr)
    else:
        print(f"done: {config.rounds} rounds, final accuracy {records[-1].accuracy:.4f}; "
              f"checkpoints in {config.state_dir}/checkpoints", file=sys.stderr)
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
               "poll_seconds")


def cmd_client(args: argparse.Namespace) -> int:
    from client.daemon import Daemon
    from client.data import load_local_data
    from client.trainer import Trainer
    from fedge.config import ClientConfig, load
    from fedge.tasks import load_task

    config = load(ClientConfig, args.config, _options(args, CLIENT_KEYS))
    if not config.data:
        raise FedgeError("the client needs local data: --data DIR (repeatable)")
    task = load_task(config.task)
    x, y = load_local_data(config.data, task.schema)
    daemon = Daemon(config, task, Trainer(task, x, y, config.device))
    _on_signals(daemon.stop)
    stats = daemon.run()
    print(f"{config.device_id}: trained {stats.rounds_trained} round(s)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- data

def cmd_data_partition(args: argparse.Namespace) -> int:
    from fedge.config import PARTITIONS
    from fedge.tasks import load_task
    from simulations.partition import split, write_partitions

    if args.partition not in PARTITIONS:
        raise FedgeError(f"--partition must be one of {PARTITIONS}")
    task = load_task(args.task)
    splits = task.load_data()
    parts = split(splits.train_y, args.clients, args.partition, args.alpha, args.seed)
    dirs = write_partitions(splits.train_x, splits.train_y, parts, args.out)
    for directory, part in zip(dirs, parts, strict=True):
        print(f"{directory}  {len(part)} examples")
    return 0


# ---------------------------------------------------------------- simulate

SIMULATE_KEYS = ("task", "clients", "rounds", "partition", "alpha", "seed", "out", "epochs",
                 "lr", "batch_size", "fraction")


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedge.config import SimulateConfig, load
    from simulations.report import format_table
    from simulations.runner import simulate

    config = load(SimulateConfig, args.config, _options(args, SIMULATE_KEYS + STRATEGY_KEYS))
    print(f"simulating {config.clients} clients x {config.rounds} rounds of {config.task} "
          f"({config.partition}) into {config.out}", file=sys.stderr, flush=True)
    report = simulate(config, on_round=_print_round(config.rounds))
    print(format_table(report))
    print(f"report: {config.out}/report.json", file=sys.stderr)
    return 0


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
    _add_strategy(p)
    p.set_defaults(func=cmd_server)


def _add_client(sub: Any) -> None:
    p = sub.add_parser("client", help="run the client daemon on a device",
                       description="Join a server, train on local data each round it is "
                       "picked for, and exit when the server says the run is over. "
                       "Reconnects with backoff while the server is away.")
    p.add_argument("--config", help="a TOML file of client settings (keys as the options)")
    p.add_argument("--server", help="HOST:PORT of the server (default 127.0.0.1:50051)")
    p.add_argument("--task", help="the task, as on the server (default digits-mlp)")
    p.add_argument("--data", action="append",
                   help="a directory or .npz file of local data (repeatable)")
    p.add_argument("--device-id", dest="device_id", help="this device's id (default: "
                   "the host name)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="connect without TLS (loopback development only)")
    p.add_argument("--tls-ca", dest="tls_ca", help="PEM CA certificate to trust")
    p.add_argument("--device", help="auto (CUDA if available), cpu or cuda[:N]")
    p.add_argument("--poll-seconds", dest="poll_seconds", type=float,
                   help="longest wait per poll (default 10)")
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
    part.set_defaults(func=cmd_data_partition)


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
    _add_strategy(p)
    p.set_defaults(func=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedge", description="Federated edge training: server, client daemon, "
        "simulation.")
    parser.add_argument("--version", action="version", version=f"fedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_server(sub)
    _add_client(sub)
    _add_data(sub)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Daemons log their work by default; a simulation shows progress lines instead.
    quiet = logging.WARNING if args.command == "simulate" else logging.INFO
    level = [quiet, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except FedgeError as exc:
        print(f"fedge: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"fedge: error: {exc.name} is not installed; this command needs the "
              "training extras: pip install 'fedge[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
