"""``fedge tokens``: enroll devices by creating, revoking and listing their tokens."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def register(sub: Any) -> None:
    """Adds ``fedge tokens`` to the command's subparsers."""
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
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Creates, revokes or lists device tokens in a server's state directory."""
    from fedge.server.tokens import TokenStore, check_device_id

    if args.tokens_command == "create":
        check_device_id(args.device)  # a mistake makes no state dir
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
