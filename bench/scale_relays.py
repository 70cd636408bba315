"""Scale under relays: the root server's memory and round time as the devices below
its relays grow (``python -m bench.scale --relays R``).

Every part is its own OS process, so each one's memory is its own: the root is
``fedge server``, each relay ``fedge relay``, and the devices run in
``python -m fedge.simulations.host`` worker processes (the simulation's daemons, one
thread each, with their own gRPC channel and session), each device talking to its relay.
The root sees R devices however many are below; the bench reads every process's resident
memory from /proc every 0.2 s and reports the peaks, and the root's round times from its
state database. Linux only (/proc).
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.scale import _rss_kb

FEDGE = [sys.executable, "-m", "fedge.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tokens(state_dir: Path, ids: list[str]) -> list[str]:
    from fedge.server.tokens import TokenStore

    state_dir.mkdir(parents=True, exist_ok=True)
    store = TokenStore(state_dir)
    try:
        return store.create_many(ids)
    finally:
        store.close()


def run_relays(devices: int, relays: int, rounds: int, workers: int,
               out: Path) -> dict[str, Any]:
    """One run of `devices` devices under `relays` relays; peaks and round times."""
    from fedge.server.store import StateStore
    from fedge.simulations.device import ClientSpec
    from fedge.simulations.partition import iid, write_partitions
    from fedge.simulations.relays import blocks
    from fedge.tasks import load_task

    splits = load_task("digits-mlp").load_data()
    dirs = write_partitions(splits.train_x, splits.train_y,
                            iid(len(splits.train_y), devices, seed=0), out / "data")
    root_state, root_port = out / "root", _free_port()
    relay_ids = [f"relay-{i}" for i in range(relays)]
    relay_tokens = _tokens(root_state, relay_ids)
    logs = []

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (out / f"{name}.log").open("wb")
        logs.append(log)
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    procs = {"root": start("root", [
        *FEDGE, "server", "--task", "digits-mlp", "--host", "127.0.0.1",
        "--port", str(root_port), "--insecure", "--state-dir", str(root_state),
        "--rounds", str(rounds), "--min-clients", str(relays), "--no-edge",
        "--round-timeout", "600", "--examples-factor", "0", "--norm-factor", "0",
        "--poll-seconds", "2"])}
    specs: list[ClientSpec] = []
    for i, block in enumerate(blocks(devices, relays)):
        state, port = out / relay_ids[i], _free_port()
        ids = [f"client-{k}" for k in block]
        for k, token in zip(block, _tokens(state, ids), strict=True):
            specs.append(ClientSpec(index=k, device_id=f"client-{k}",
                                    server=f"127.0.0.1:{port}", task="digits-mlp",
                                    data=str(dirs[k]), token=token))
        procs[relay_ids[i]] = start(relay_ids[i], [
            *FEDGE, "relay", "--upstream", f"127.0.0.1:{root_port}", "--upstream-insecure",
            "--upstream-token", relay_tokens[i], "--relay-id", relay_ids[i], "--insecure",
            "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state),
            "--min-clients", str(len(block)), "--no-edge", "--examples-factor", "0",
            "--norm-factor", "0", "--poll-seconds", "2",
            "--max-workers", str(max(256, len(block) + 64))])
    for w in range(workers):
        group = specs[w::workers]
        path = out / f"host-{w}.json"
        path.write_text(json.dumps([s.to_json() for s in group]))
        procs[f"host-{w}"] = start(f"host-{w}", [
            sys.executable, "-m", "fedge.simulations.host", str(path),
            str(out / f"host-{w}.results.json")])
    peaks = dict.fromkeys(procs, 0)
    started = time.perf_counter()
    try:
        while procs["root"].poll() is None:
            for name, proc in procs.items():
                peaks[name] = max(peaks[name], _rss_kb(proc.pid))
            time.sleep(0.2)
        for proc in procs.values():
            proc.wait(timeout=120)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for log in logs:
            log.close()
    wall = time.perf_counter() - started
    if procs["root"].returncode != 0:
        raise SystemExit(f"the root server failed (exit {procs['root'].returncode}); see "
                         f"{out / 'root.log'}")
    store = StateStore(root_state)
    try:
        records = [r for r in store.rounds() if r.round > 0]
    finally:
        store.close()
    seconds = [r.seconds for r in records]
    mb = 1 / 1024
    return {"clients": devices, "relays": relays, "rounds": len(records),
            "round_seconds": seconds, "median_round_s": statistics.median(seconds),
            "wall_s": wall, "server_peak_rss_mb": peaks["root"] * mb,
            "relay_peak_rss_mb": [peaks[r] * mb for r in relay_ids],
            "clients_peak_rss_mb": sum(peaks[f"host-{w}"] for w in range(workers)) * mb,
            "final_accuracy": records[-1].accuracy,
            "participants_last_round": records[-1].clients,
            "root_bytes_up_per_round": [r.bytes_up for r in records],
            "examples_last_round": records[-1].examples}
