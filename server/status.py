"""What ``fedge status`` shows: a snapshot of the run as plain, JSON-ready values.

The server answers the admin ``Status`` RPC from it, and also writes it to
``STATE_DIR/status.json`` every few seconds, so an operator on the server's own machine
can read it without a token (the state directory's file permissions are the access
control there).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedge.protos import fedge_pb2
from fedge.server.fleet_eval import FED_KEYS, columns, recorded
from fedge.server.registry import Registry
from fedge.server.rounds import Rounds
from fedge.server.store import StateStore

STATUS_FILE = "status.json"
PRIVACY_KEYS = ("mode", "noise_multiplier", "delta", "epsilon", "target_epsilon", "clip")
# The devices a snapshot lists (live first, then the most recently seen): a fleet of
# thousands is summarized by its counts, not sent whole in every Status reply.
DEVICES_SHOWN = 100
ROUNDS_SHOWN = 1000


def snapshot(task: str, rounds_total: int, rounds: Rounds, registry: Registry,
             store: StateStore, refusals: Mapping[tuple[str, str], int], started: float,
             last_rounds: int = 5) -> dict[str, Any]:
    """The run's state now; started is the server's time.monotonic() at start."""
    progress = rounds.progress()
    now = time.monotonic()
    everyone = registry.all()
    live = {d.device_id for d in everyone if registry.is_live(d, now)}
    shown = sorted(everyone, key=lambda d: (d.device_id not in live, -d.last_seen))
    devices = [{
        "device_id": d.device_id,
        "last_seen_seconds": round(now - d.last_seen, 3),
        "live": d.device_id in live,
        "platform": d.capabilities.get("platform", ""),
        "accelerator": d.capabilities.get("accelerator", ""),
        "runtime": d.capabilities.get("runtime", ""),
        "num_examples": d.num_examples,
        "authenticated": d.authenticated,
        "edge_model": d.edge_model,
        "inference_only": d.inference_only,
        "device_class": d.device_class,
    } for d in shown[:DEVICES_SHOWN]]
    times = store.committed_at()
    last_rounds = min(max(0, last_rounds), ROUNDS_SHOWN)
    recent = [{**r.to_dict(), "committed_at": times.get(r.round, 0.0)}
              for r in store.rounds()[-max(0, last_rounds):]] if last_rounds else []
    budget = rounds.budget
    fed = recorded(store) if recent else {}  # federated evaluation (server/fleet_eval.py)
    for r in recent:
        r.pop("sha256", None)
        r.update(columns(fed.get(int(r["round"]))))
        if budget is not None:
            r["epsilon"] = budget.epsilon_of(int(r["round"])) or 0.0
    privacy = {"privacy": budget.summary()} if budget is not None else {}
    gate = rounds.deploy.gate if rounds.deploy is not None else None
    rollout = gate.snapshot() if gate is not None else {}  # the newest artifact's gate
    return {
        "task": task,
        "phase": progress.phase,
        "round": progress.round,
        "rounds_total": rounds_total,
        "model_version": progress.model_version,
        "selected": progress.selected,
        "reported": progress.reported,
        "devices": devices,
        "devices_total": len(everyone),
        "devices_live": len(live),
        "rounds": recent,
        "refusals": {f"{method}/{code}": n for (method, code), n in sorted(refusals.items())},
        "uptime_seconds": round(now - started, 3),
        "written_at": time.time(),
        **privacy,
        **({"rollout": rollout} if rollout else {}),
    }


def write(state_dir: str | Path, snap: Mapping[str, Any]) -> None:
    """Writes the snapshot atomically to STATE_DIR/status.json (owner-readable only)."""
    path = Path(state_dir) / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(snap, f, indent=1)
    os.replace(tmp, path)


def to_proto(snap: Mapping[str, Any]) -> fedge_pb2.StatusReply:
    """The snapshot as the admin RPC's reply."""
    devices = [fedge_pb2.DeviceStatus(**d) for d in snap["devices"]]
    rounds = [fedge_pb2.RoundSummary(**r) for r in snap["rounds"]]
    return fedge_pb2.StatusReply(
        task=snap["task"], phase=snap["phase"], round=snap["round"],
        rounds_total=snap["rounds_total"], model_version=snap["model_version"],
        devices=devices, rounds=rounds, refusals=snap["refusals"],
        uptime_seconds=snap["uptime_seconds"], selected=snap["selected"],
        reported=snap["reported"], devices_total=snap["devices_total"],
        devices_live=snap["devices_live"],
        privacy=fedge_pb2.PrivacyStatus(**snap["privacy"]) if "privacy" in snap else None,
        rollout=fedge_pb2.RolloutStatus(**snap["rollout"]) if "rollout" in snap else None)


def from_proto(reply: fedge_pb2.StatusReply) -> dict[str, Any]:
    """The snapshot a StatusReply carries, as snapshot() makes it."""
    device_keys = ("device_id", "last_seen_seconds", "live", "platform", "accelerator",
                   "runtime", "num_examples", "authenticated", "edge_model", "inference_only",
                   "device_class")
    round_keys: tuple[str, ...] = ("round", "accuracy", "loss", "clients", "examples", "bytes_up",
                  "bytes_down", "seconds", "committed_at", *FED_KEYS)
    if reply.HasField("privacy"):
        round_keys += ("epsilon",)
    return {
        "task": reply.task, "phase": reply.phase, "round": reply.round,
        "rounds_total": reply.rounds_total, "model_version": reply.model_version,
        "selected": reply.selected, "reported": reply.reported,
        "devices": [{k: getattr(d, k) for k in device_keys} for d in reply.devices],
        "devices_total": reply.devices_total, "devices_live": reply.devices_live,
        "rounds": [{k: getattr(r, k) for k in round_keys} for r in reply.rounds],
        "refusals": dict(sorted(reply.refusals.items())),
        "uptime_seconds": reply.uptime_seconds,
        **({"privacy": {k: getattr(reply.privacy, k) for k in PRIVACY_KEYS}}
           if reply.HasField("privacy") else {}),
        **({"rollout": rollout_of(reply.rollout)} if reply.HasField("rollout") else {}),
    }


def rollout_of(status: fedge_pb2.RolloutStatus) -> dict[str, Any]:
    """A RolloutStatus as the snapshot holds it."""
    return {"round": status.round, "stage": status.stage, "reason": status.reason,
            "canaries": list(status.canaries), "rolled_back": list(status.rolled_back)}
