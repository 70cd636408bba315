"""``fedge status``: a server's round, devices and metrics, asked over the network as
an operator or read from its state directory on its own machine."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from fedge.errors import FedgeError
from fedge.tls import channel_credentials


def register(sub: Any) -> None:
    """Adds ``fedge status`` to the command's subparsers."""
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
    p.set_defaults(func=run)


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """The server's status from --server (over gRPC, an operator token) or --state-dir
    (its files, on its machine): exactly one of them."""
    if bool(args.server) == bool(args.state_dir):
        raise FedgeError("give --server HOST:PORT (with an operator token) or --state-dir "
                         "DIR (on the server's machine), not both")
    return remote_status(args) if args.server else local_status(args.state_dir)


def run(args: argparse.Namespace) -> int:
    """Prints the server's status as a table, or as JSON for scripts."""
    snap = snapshot(args)
    if args.json:
        print(json.dumps(snap, indent=2))
    else:
        print(format_status(snap))
    return 0


def operator_channel(args: argparse.Namespace) -> Any:
    """An operator's channel to args.server: plain with --insecure, else TLS trusting
    --tls-ca (with --tls-cert/--tls-key when the server asks for a client certificate)."""
    import grpc

    if args.insecure:
        if args.tls_ca or args.tls_cert:
            raise FedgeError("--insecure and --tls-ca/--tls-cert exclude each other")
        return grpc.insecure_channel(args.server)
    if not args.tls_ca:
        raise FedgeError("status over the network needs TLS (--tls-ca) or, for loopback "
                         "development only, --insecure")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise FedgeError("--tls-cert and --tls-key go together: give both or neither")
    return grpc.secure_channel(args.server,
                               channel_credentials(args.tls_ca, args.tls_cert, args.tls_key))


def remote_status(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from fedge.protos import fedge_pb2, fedge_pb2_grpc
    from fedge.server.status import from_proto

    token = args.token or os.environ.get("FEDGE_TOKEN", "")
    if not token:
        raise FedgeError("status over the network needs an operator token: --token or "
                         "FEDGE_TOKEN (from `fedge tokens create --role operator`)")
    if ":" not in args.server:
        raise FedgeError(f"--server must be HOST:PORT, got {args.server!r}")
    with operator_channel(args) as channel:
        try:
            reply = fedge_pb2_grpc.FederationStub(channel).Status(
                fedge_pb2.StatusRequest(last_rounds=args.rounds), timeout=15,
                metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as exc:
            raise FedgeError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    return from_proto(reply)


def local_status(state_dir: str) -> dict[str, Any]:
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


def _num(value: float | None) -> str:
    """A round's accuracy or loss, "-" while it is not evaluated."""
    return "-" if value is None else f"{value:.4f}"


def _fed(r: dict[str, Any], prefix: str) -> str:
    """One model's federated accuracy and count in a round row ("-" if not measured)."""
    n = int(r.get(f"{prefix}_examples") or 0)
    return f"{r[prefix + '_accuracy']:>8.4f}  {n:>6}" if n else f"{'-':>8}  {'-':>6}"


def format_status(snap: dict[str, Any]) -> str:
    """A status snapshot as the tables people read."""
    # A finished server's round counter points past its last round: show the last one,
    # not "round 13/12".
    shown = min(snap["round"], snap["rounds_total"])
    lines = [f"task {snap['task']}  phase {snap['phase']}  round {shown}/"
             f"{snap['rounds_total']}  model v{snap['model_version']}  selected "
             f"{snap['selected']}  reported {snap['reported']}  up "
             f"{snap['uptime_seconds']:.0f} s"]
    if snap.get("snapshot_age_seconds", 0) > 30:
        lines.append(f"(snapshot written {snap['snapshot_age_seconds']:.0f} s ago: the "
                     "server may not be running)")
    listed = len(snap["devices"])
    total = snap.get("devices_total", listed)  # a status.json of an older server lacks it
    live = snap.get("devices_live", sum(bool(d["live"]) for d in snap["devices"]))
    lines.append(f"devices ({live} live of {total}"
                 + (f"; the {listed} listed are live first, then the latest seen):"
                    if listed < total else "):"))
    lines.append(f"  {'device':<24} {'live':<5} {'seen':>8}  {'examples':>8}  "
                 f"{'edge':>5}  {'accelerator':<16} platform")
    for d in snap["devices"]:
        lines.append(f"  {d['device_id']:<24} {'yes' if d['live'] else 'no':<5} "
                     f"{d['last_seen_seconds']:>6.1f} s  {d['num_examples']:>8}  "
                     f"{d['edge_model'] or '-':>5}  {d['accelerator'] or '-':<16} "
                     f"{d['platform'] or '-'}"
                     + ("  [inference only]" if d.get("inference_only") else "")
                     + (f"  [class {d['device_class']}]"  # a task with device classes
                        if d.get("device_class") not in (None, "", "default") else ""))
    privacy = snap.get("privacy")
    if privacy:
        target = (f", target {privacy['target_epsilon']:g}" if privacy["target_epsilon"]
                  else "")
        lines.append(f"privacy: {privacy['mode']} DP, epsilon {privacy['epsilon']:.4g} at "
                     f"delta {privacy['delta']:.3g}{target} (noise multiplier "
                     f"{privacy['noise_multiplier']:g}, clip {privacy['clip']:.4g})")
    lines.append("rounds:")
    # Federated evaluation (on the devices' held-out slices), when the server ran one.
    fed = any(r.get("fed_examples") or r.get("fed_edge_examples") for r in snap["rounds"])
    lines.append(f"  {'round':>5}  {'accuracy':>8}  {'loss':>7}  {'clients':>7}  "
                 f"{'seconds':>7}" + (f"  {'epsilon':>8}" if privacy else "")
                 + (f"  {'fed acc':>8}  {'fed n':>6}  {'edge acc':>8}  {'edge n':>6}"
                    if fed else ""))
    for r in snap["rounds"]:
        lines.append(f"  {r['round']:>5}  {_num(r['accuracy']):>8}  {_num(r['loss']):>7}  "
                     f"{r['clients']:>7}  {r['seconds']:>7.2f}"
                     + (f"  {r.get('epsilon', 0):>8.4g}" if privacy else "")
                     + (f"  {_fed(r, 'fed')}  {_fed(r, 'fed_edge')}" if fed else ""))
    if snap["refusals"]:
        lines.append("refused: " + ", ".join(f"{k} {v}" for k, v in snap["refusals"].items()))
    return "\n".join(lines)
