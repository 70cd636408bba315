"""Secure aggregation's cost: per-device work and bytes, server work, and whole rounds
over gRPC, with and without SecAgg+.

    python -m bench.secure [--ns 10 50 100] [--sizes 26122 1000000] [--grpc 10]
                           [--pairs 1] [--flower-max 2000000]
                           [--out bench/results/secure.json]

Protocol rows run the real device and server state machines (fedge.secure) in one
process, with real cryptography and no dropouts: ``device s`` is one device's mean
compute for all four stages (keys, shares, masking, reveal), ``server s`` the server's
for relaying, summing and unmasking the whole round, ``up B`` and ``down B`` one
device's bytes as the protobuf messages it would send and receive (the masked input is
4 bytes a parameter, as an f32 update). Plain rows: the same update as f32 bytes and the
server's float32 fold. Flower rows (bench.flower_secagg): Flower's own SecAgg+
workflow and client mod on the same quantized inputs, in one process like fedge's rows,
with as many shares (k + 1, itself included) and the same threshold; its sum must equal
fedge's exactly, and ``flower s`` is its whole round against fedge's ``n x device s +
server s`` (rows with n x params above --flower-max are skipped: Flower takes minutes).

The grpc rows run ``fedge simulate`` (digits-mlp, or each of --grpc-tasks, such as
``bench.wide_task:million`` for 1M parameters; 1 round, thread backend) with and
without --secure-aggregation and report the round's seconds and bytes up per device from
its record. Its devices are threads of one process on this machine's cores, so their
masking runs one after another inside the round where a real fleet masks in parallel,
one device per device. A secure row therefore also reports the devices' masking (the
CPU seconds of their four steps, quantization included, summed and the slowest
device's), the server's secure-aggregation compute (MaskedSum: relay, sum, unmask), and
``round - masking``: the round less the masking the simulation serialized, ``(sum -
slowest) / cores`` (the slowest device's masking stays on the critical path). It assumes
masking is CPU-bound and had the cores to itself; under other load it subtracts too little.
``--pairs N`` runs N plain and secure rounds of each gRPC row, interleaved (plain first in
even pairs, secure first in odd ones), and prints the median of the N ratios: one pair
decides nothing on a shared machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedge.protos import fedge_pb2
from fedge.secure import graph, quantize
from fedge.secure.device import MaskingDevice
from fedge.secure.masked_sum import MaskedSum
from fedge.secure.masks import Params
from fedge.wire import advert_message

FRAME = 5


def _bytes(message: Any) -> int:
    return int(message.ByteSize()) + FRAME


def protocol_row(n: int, size: int, flower: bool = False) -> dict[str, Any]:
    """One secure round of n devices and a model of size parameters, in process (and
    Flower's SecAgg+ on the same inputs when flower)."""
    k = graph.default_degree(n)
    params = Params(round=1, threshold=k // 2 + 1, degree=k, seed=b"bench", size=size,
                    clip=10.0, weight_cap=100, scale=quantize.round_scale(10.0, 100, n))
    rng = np.random.default_rng(0)
    ids = [f"device-{i:04d}" for i in range(n)]
    inputs = {d: quantize.encode(quantize.clip_norm(rng.normal(0, 0.01, size), 10.0), 50.0,
                                 params.scale) for d in ids}
    devices = {d: MaskingDevice(d, params) for d in ids}
    server = MaskedSum(params)
    device_s, server_s = 0.0, 0.0
    up = dict.fromkeys(ids, 0)
    down = dict.fromkeys(ids, 0)

    def timed(fn: Any, *args: Any) -> tuple[Any, float]:
        t = time.perf_counter()
        out = fn(*args)
        return out, time.perf_counter() - t

    for d in ids:
        advert, s = timed(devices[d].advertise)
        device_s += s
        up[d] += _bytes(fedge_pb2.PollRequest(advert=advert_message(advert)))  # on a poll
        _, s = timed(server.add_advert, advert)
        server_s += s
    _, s = timed(server.close_adverts)
    server_s += s
    everyone = sorted(server.adverts)
    for d in ids:  # its TRAIN task: every id, and its neighbourhood's keys
        known = {p: server.adverts[p] for p in [d, *server.neighbours(d)]}
        down[d] += _bytes(fedge_pb2.SecureParams(devices=everyone, mask_prg=server.prg, roster=[
            advert_message(a) for a in known.values()]))
        sealed, s = timed(devices[d].share, known, everyone, server.prg)
        device_s += s
        up[d] += _bytes(fedge_pb2.SecureRequest(shares=[
            fedge_pb2.PeerBytes(peer=p, data=v) for p, v in sealed.items()]))
        server.add_shares(d, sealed)
    for d in ids:
        messages = server.messages_for(d)
        down[d] += _bytes(fedge_pb2.SecureReply(shares=[
            fedge_pb2.PeerBytes(peer=p, data=v) for p, v in messages.items()]))
        masked, s = timed(devices[d].mask, inputs[d], messages)
        device_s += s
        up[d] += masked.nbytes + _bytes(fedge_pb2.MaskedHeader(
            session_id="x" * 32, task_id="x" * 16, round=1, num_examples=50, size=size,
            sha256="0" * 64))
        _, s = timed(server.add_masked, d, masked, 50.0)
        server_s += s
    for d in ids:
        alive, gone = server.request(d)
        (seeds, keys_), s = timed(devices[d].reveal, alive, gone)
        device_s += s
        up[d] += _bytes(fedge_pb2.SecureRequest(seed_shares=[
            fedge_pb2.PeerBytes(peer=p, data=v) for p, v in seeds.items()]))
        server.add_reveal(d, seeds, keys_)
    total, s = timed(server.unmask)
    server_s += s
    expected = np.zeros(size, np.uint32)
    for v in inputs.values():
        expected += v
    assert np.array_equal(total, expected)
    row: dict[str, Any] = {}
    if flower:
        row = flower_row(inputs, k, params.threshold, total)
    # Plain: the same update as f32 bytes, folded into a float32 sum.
    updates = [rng.normal(0, 0.01, size).astype(np.float32) for _ in range(min(n, 10))]
    acc = np.zeros(size, np.float32)
    t = time.perf_counter()
    for u in updates:
        acc += 50.0 * u
    plain_server = (time.perf_counter() - t) * n / len(updates)
    return {"n": n, "size": size, "k": k, "t": params.threshold,
            "device_s": device_s / n, "server_s": server_s,
            "up_bytes": int(np.mean(list(up.values()))),
            "down_bytes": int(np.mean(list(down.values()))),
            "plain_up_bytes": 4 * size, "plain_server_s": plain_server, **row}


def flower_row(inputs: dict[str, np.ndarray], k: int, threshold: int,
               total: np.ndarray) -> dict[str, Any]:
    """Flower's SecAgg+ on the same inputs: its seconds and whether its sum is fedge's
    (or why it could not run)."""
    try:
        from bench.flower_secagg import secagg_plus_sum
    except ImportError as exc:
        return {"flower_error": f"flwr is not installed: {exc}"}
    n = len(inputs)
    shares: int | float = k + 1 if k + 1 < n else 1.0  # 1.0: every sampled device
    result = secagg_plus_sum(inputs, shares, threshold)
    ours = total.view(np.int32).astype(np.int64)
    return {"flower_s": result.seconds, "flower_equal": bool(np.array_equal(result.total, ours)),
            "flower_max_diff": int(np.max(np.abs(result.total - ours)))}


class Clock:
    """CPU seconds per thread spent in wrapped functions (devices are threads)."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = defaultdict(float)
        self.wall = 0.0

    def wrap(self, owner: Any, name: str) -> Any:
        """owner.name timed into this clock; returns the original to restore."""
        original = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.cpu[threading.get_ident()] += time.thread_time() - cpu
                clock.wall += time.perf_counter() - wall

        setattr(owner, name, timed)
        return original


@contextmanager
def clocks() -> Iterator[tuple[Clock, Clock]]:
    """(devices' masking, server's secure compute) while fedge runs in this process."""
    from fedge.client import secure as client_secure

    device, server = Clock(), Clock()
    patched: list[tuple[Any, str, Clock]] = [
        (MaskingDevice, m, device) for m in ("advertise", "share", "premask", "mask",
                                             "reveal")]
    patched += [(client_secure.quantize, "encode_blocks", device)]
    patched += [(MaskedSum, m, server) for m in ("add_advert", "close_adverts", "add_shares",
                                                 "messages_for", "add_masked", "request",
                                                 "add_reveal", "unmask")]
    originals = [(owner, name, clock.wrap(owner, name)) for owner, name, clock in patched]
    try:
        yield device, server
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def grpc_row(clients: int, secure: bool, backend: str = "threads",
             task: str = "digits-mlp") -> dict[str, Any]:
    """One round of fedge simulate (task) and its record; a secure one on the thread
    backend with the devices' masking and the server's secure compute (module
    docstring). backend processes: the devices in host processes, one per core."""
    from fedge.config import SimulateConfig
    from fedge.simulations.runner import simulate

    with tempfile.TemporaryDirectory() as out, clocks() as (device, server):
        config = SimulateConfig(task=task, clients=clients, rounds=1, out=out, edge=False,
                                backend=backend, secure_aggregation=secure,
                                round_timeout_s=600.0)
        report = simulate(config)
    row = report["rounds"][-1]
    cores = os.cpu_count() or 1
    result = {"clients": clients, "secure": secure, "round_s": row["seconds"],
              "up_bytes_per_device": row["bytes_up"] / clients, "cores": cores,
              "backend": backend, "task": task, "load_average": os.getloadavg()[0]}
    if secure and backend == "threads":  # the clocks see only this process's devices
        masking = sum(device.cpu.values())
        slowest = max(device.cpu.values(), default=0.0)
        result.update(device_mask_cpu_s=masking, device_mask_cpu_max_s=slowest,
                      server_secure_s=server.wall,
                      round_less_masking_s=row["seconds"] - (masking - slowest) / cores)
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark, prints its tables and writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.secure")
    parser.add_argument("--ns", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--sizes", type=int, nargs="+", default=[26122, 1_000_000])
    parser.add_argument("--grpc", type=int, nargs="*", default=[10],
                        help="fleet sizes of the gRPC rounds (none: skip)")
    parser.add_argument("--backend", choices=("threads", "processes"), nargs="+",
                        default=["threads"], help="where the gRPC rounds' devices run "
                        "(processes: host processes, one per core, the server apart)")
    parser.add_argument("--grpc-tasks", nargs="+", default=["digits-mlp"],
                        help="tasks of the gRPC rounds (bench.wide_task:million: 1M "
                        "parameters)")
    parser.add_argument("--flower-max", type=int, default=2_000_000,
                        help="run Flower's SecAgg+ on rows with n x params up to this")
    parser.add_argument("--pairs", type=int, default=1,
                        help="plain and secure gRPC rounds, interleaved, per row; with "
                        "more than one, the median of their ratios (a plain round's "
                        "own time varies by a third from run to run here)")
    parser.add_argument("--out", default="bench/results/secure.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'n':>4} {'params':>9} {'k':>3} {'device s':>9} {'server s':>9} "
          f"{'plain srv s':>11} {'up B':>10} {'plain up B':>10} {'down B':>8}")
    for size in args.sizes:
        for n in args.ns:
            r = protocol_row(n, size, flower=n * size <= args.flower_max)
            rows.append(r)
            flower = (f" fedge round {n * r['device_s'] + r['server_s']:.2f} s, Flower "
                      f"{r['flower_s']:.2f} s, same sum: {r['flower_equal']}"
                      if "flower_s" in r else f" {r.get('flower_error', '')}")
            print(f"{n:>4} {size:>9} {r['k']:>3} {r['device_s']:>9.3f} {r['server_s']:>9.3f} "
                  f"{r['plain_server_s']:>11.4f} {r['up_bytes']:>10} "
                  f"{r['plain_up_bytes']:>10} {r['down_bytes']:>8}{flower}", flush=True)
    grpc, ratios = [], []
    for task, backend in itertools.product(args.grpc_tasks, args.backend):
        for clients in args.grpc or []:
            pairs = []
            for pair in range(args.pairs):
                # Alternate which side goes first, so that a drift in the machine's
                # load over the run weighs on both alike.
                done = {}
                for secure in (False, True) if pair % 2 == 0 else (True, False):
                    g = grpc_row(clients, secure, backend, task)
                    g["pair"] = pair
                    grpc.append(g)
                    done[secure] = g
                    _print_grpc(task, backend, clients, g)
                pairs.append(done[True]["round_s"] / done[False]["round_s"])
            if len(pairs) > 1:
                ratios.append(summary(task, backend, clients, pairs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"protocol": rows, "grpc": grpc, "ratios": ratios,
                               "machine": platform.platform()}, indent=1))
    return 0


def _print_grpc(task: str, backend: str, clients: int, g: dict[str, Any]) -> None:
    extra = (f"; devices' masking {g['device_mask_cpu_s']:.2f} CPU s (slowest "
             f"{g['device_mask_cpu_max_s']:.3f}), server secure "
             f"{g['server_secure_s']:.2f} s, round less masking "
             f"{g['round_less_masking_s']:.2f} s" if "server_secure_s" in g else "")
    print(f"grpc {task} {backend:<9} {clients:>4} clients "
          f"{'secure' if g['secure'] else 'plain ':>6}: round {g['round_s']:.2f} s, "
          f"{g['up_bytes_per_device']:.0f} B up/device{extra}", flush=True)


def summary(task: str, backend: str, clients: int, pairs: list[float]) -> dict[str, Any]:
    """The secure/plain ratios of one row's pairs, printed with their median."""
    median = float(np.median(pairs))
    print(f"grpc {task} {backend:<9} {clients:>4} clients: secure/plain over {len(pairs)} "
          f"pairs: median {median:.2f}x, {min(pairs):.2f}-{max(pairs):.2f}x "
          f"({', '.join(f'{r:.2f}' for r in pairs)})", flush=True)
    return {"task": task, "backend": backend, "clients": clients, "pairs": pairs,
            "median": median}


if __name__ == "__main__":
    raise SystemExit(main())
