"""``fedge edge status|rollout|rollback``: an operator's view and steering of the gated
rollout of edge artifacts (server/rollout.py): which artifact is at which stage and why,
which version each device runs; promote the newest artifact to the whole fleet, or halt
it and roll back every device that runs it."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fedge.cli.status import operator_channel, snapshot
from fedge.errors import FedgeError


def _connection(p: argparse.ArgumentParser, local: bool) -> None:
    p.add_argument("--server", required=not local, help="HOST:PORT of the server")
    if local:
        p.add_argument("--state-dir", dest="state_dir", help="the server's state directory "
                       "(read its status.json instead of asking the server)")
    p.add_argument("--token", help="an operator token (default: $FEDGE_TOKEN)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="connect without TLS (loopback development only)")
    p.add_argument("--tls-ca", dest="tls_ca", help="PEM CA certificate to trust")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM client certificate (mTLS)")
    p.add_argument("--tls-key", dest="tls_key", help="PEM key of the client certificate")


def register(edge_sub: Any) -> None:
    """Adds status, rollout and rollback to ``fedge edge``'s subparsers."""
    status_p = edge_sub.add_parser("status", help="the newest artifact's rollout and the "
                                   "edge model each device runs")
    _connection(status_p, local=True)
    status_p.add_argument("--json", action="store_true", help="print JSON for scripts")
    status_p.set_defaults(func=status, rounds=0)
    for name, action, text in (
            ("rollout", "promote", "promote the newest artifact to the whole fleet now"),
            ("rollback", "rollback", "halt the newest artifact and roll back every device "
             "that runs it")):
        p = edge_sub.add_parser(name, help=text)
        _connection(p, local=False)
        p.add_argument("--reason", default="", help="recorded with the decision")
        p.set_defaults(func=steer, action=action)


def format_rollout(snap: dict[str, Any]) -> str:
    """The rollout and each device's edge model, as people read them."""
    rollout = snap.get("rollout")
    if not rollout:
        lines = ["no gated rollout (the server runs without --canary-fraction, or has "
                 "built no artifact yet)"]
    else:
        lines = [f"artifact of round {rollout['round']}: {rollout['stage']}"
                 + (f" ({rollout['reason']})" if rollout["reason"] else ""),
                 f"canaries: {', '.join(rollout['canaries']) or 'none'}"]
        if rollout["rolled_back"]:
            lines.append(f"rolled back: {', '.join(rollout['rolled_back'])}")
    lines.append("devices:")
    canaries = set(rollout["canaries"]) if rollout else set()
    for d in snap["devices"]:
        lines.append(f"  {d['device_id']:<24} edge model {d['edge_model'] or '-':>5}"
                     + ("  [canary]" if d["device_id"] in canaries else ""))
    return "\n".join(lines)


def status(args: argparse.Namespace) -> int:
    """Prints the rollout of the newest artifact and the version each device runs."""
    snap = snapshot(args)
    if args.json:
        print(json.dumps({"rollout": snap.get("rollout"), "devices": [
            {"device_id": d["device_id"], "edge_model": d["edge_model"]}
            for d in snap["devices"]]}, indent=2))
    else:
        print(format_rollout(snap))
    return 0


def steer(args: argparse.Namespace) -> int:
    """Promotes or rolls back the newest artifact on a running server."""
    import grpc

    from fedge.protos import fedge_pb2, fedge_pb2_grpc

    token = args.token or os.environ.get("FEDGE_TOKEN", "")
    if not token:
        raise FedgeError("steering a rollout needs an operator token: --token or "
                         "FEDGE_TOKEN (from `fedge tokens create --role operator`)")
    with operator_channel(args) as channel:
        try:
            reply = fedge_pb2_grpc.FederationStub(channel).Rollout(
                fedge_pb2.RolloutRequest(action=args.action, reason=args.reason),
                timeout=15, metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as exc:
            raise FedgeError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    print(reply.message)
    return 0
