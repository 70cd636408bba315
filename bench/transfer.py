"""Large models over the wire: fetch and submit throughput against a raw gRPC stream of
the same bytes, and whole rounds of a large model with the server's peak memory.

    python -m bench.transfer [--mb 1024] [--devices 2] [--rounds 1]
                             [--out bench/results/transfer.json]
                             [--rounds-only] [--compare-memory]

The model is ``bench.wide_task`` at ``--mb`` megabytes (1024: 256M float32 parameters,
one wide hidden layer, defined in code). Every server here is a separate process on
127.0.0.1 (``fedge server``, or a bare gRPC server for the baseline); the devices are
real daemons (threads of this process).

- **throughput**: one device, two rounds, the server evaluating only the last model
  (not each one beside the next round's transfers, as it does by default). Its model
  downloads (``FetchModel`` into one buffer, SHA-256 checked: in round 1 a fresh
  buffer, whose pages are touched for the first time; from round 2 on, the buffer of
  the round before, as a daemon reuses it) and its update uploads (``SubmitUpdate``:
  the chunks, without CRC-32 since the server checks the stream's SHA-256; the server
  spooling, checking the SHA-256 and the update's bounds before it replies, the fold
  into the running sum after) are timed around the daemon's own calls. The baseline is
  a bare gRPC server streaming the same number of bytes in messages of the same size,
  ``fedge.tensors.CHUNK_BYTES`` (1 MiB) of data each, as fedge's chunks carry (bytes
  in, bytes out, nothing checked), each way, measured before and after the timed run;
  the faster of the two is the limit.
- **round**: ``--devices`` devices, ``--rounds`` rounds, one upload received at a time
  (``--max-uploads 1``: the server holds the global model, the running sum and one
  update). The server's peak resident memory (VmHWM) against the model's size, and its
  resident memory before the model exists (the Python, torch and gRPC baseline).
  Updates of this size are spooled to disk and folded from there (fedge.server.spool);
  ``--compare-memory`` runs the round again with every update received in memory
  (``--spool-threshold-bytes`` above the model: the path before spooling).
  ``--rounds-only`` skips the throughput part (one device and the raw baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from fedge.tensors import CHUNK_BYTES

ROOT = Path(__file__).resolve().parents[1]
CHUNK = CHUNK_BYTES  # the raw baseline's messages carry as much data as fedge's chunks
OPTIONS = [("grpc.max_receive_message_length", 4 * CHUNK),
           ("grpc.max_send_message_length", 4 * CHUNK)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """Watches a process's VmHWM (peak resident set) until it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.first_kib = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while Path(f"/proc/{self.pid}").exists():
            hwm = _kib(self.pid, "VmHWM")
            if hwm == 0 and self.peak_kib:
                break  # a zombie: its memory is gone, the last reading stands
            self.peak_kib = max(self.peak_kib, hwm)
            time.sleep(0.05)

    def join(self) -> None:
        """Waits for the watched process to be gone."""
        self._thread.join(30)


# ------------------------------------------------------------------ the raw baseline

def raw_server(port: int) -> None:
    """A bare gRPC server: Down streams N bytes in 1 MiB messages, Up counts them."""
    chunk = os.urandom(CHUNK)

    def down(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        left = int(request)
        while left > 0:
            yield chunk[: min(left, CHUNK)]
            left -= CHUNK

    def up(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    handler = grpc.method_handlers_generic_handler("raw.Raw", {
        "Down": grpc.unary_stream_rpc_method_handler(down),
        "Up": grpc.stream_unary_rpc_method_handler(up)})
    server = grpc.server(futures.ThreadPoolExecutor(4), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def raw_rates(size: int) -> dict[str, float]:
    """MB/s of size bytes each way through a bare gRPC server in another process."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.transfer", "--raw-server",
                             str(port)], cwd=ROOT)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
        grpc.channel_ready_future(channel).result(timeout=60)
        down = channel.unary_stream("/raw.Raw/Down", None, None)
        up = channel.stream_unary("/raw.Raw/Up", None, None)
        chunk = os.urandom(CHUNK)
        started = time.perf_counter()
        got = sum(len(c) for c in down(str(size).encode(), timeout=600))
        down_s = time.perf_counter() - started

        def chunks() -> Iterator[bytes]:
            for start in range(0, size, CHUNK):
                yield chunk[: min(CHUNK, size - start)]

        started = time.perf_counter()
        sent = int(up(chunks(), timeout=600))
        up_s = time.perf_counter() - started
        assert got == size and sent == size, (got, sent, size)
        channel.close()
        return {"down_mb_s": size / down_s / 1e6, "up_mb_s": size / up_s / 1e6}
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ fedge

def _timed(log: list[dict[str, Any]], what: str, fn: Callable[..., Any],
           size: Callable[..., int]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        log.append({"what": what, "seconds": time.perf_counter() - started,
                    "bytes": size(out, *args)})
        return out
    return wrapper


def fedge_run(mb: float, devices: int, rounds: int, tmp: Path, spool: bool = True,
              evaluate: bool = True) -> dict[str, Any]:
    """A fedge server process and `devices` daemon threads for `rounds` rounds; the
    daemons' downloads and uploads timed, the server's memory watched. spool False:
    updates received in memory; evaluate False: the server evaluates only the last
    round's model (with --eval-every 1 it evaluates each beside the next round's
    transfers, a forward pass over a 1 GB model on the cores they share)."""
    from fedge.client import daemon as daemon_module
    from fedge.client.daemon import Daemon
    from fedge.client.trainer import Trainer
    from fedge.config import ClientConfig
    from fedge.simulations.partition import iid, write_partitions
    from fedge.tasks import load_task

    os.environ["FEDGE_WIDE_MB"] = str(mb)
    spec = "bench.wide_task:task"
    port = _free_port()
    # A directory of its own per run: with --devices 1 the throughput run would
    # otherwise resume the round run's finished state and serve nothing.
    state = Path(tempfile.mkdtemp(prefix=f"state-{devices}-{'spool' if spool else 'memory'}-",
                                  dir=tmp))
    server = subprocess.Popen(
        [sys.executable, "-m", "fedge.cli", "server", "--task", spec, "--insecure",
         "--host", "127.0.0.1", "--port", str(port), "--rounds", str(rounds),
         "--min-clients", str(devices), "--allow-anonymous", "--no-edge",
         "--max-uploads", "1", "--round-timeout", "1800", "--poll-seconds", "1",
         "--spool-threshold-bytes", str(1 if spool else 1 << 50),
         *([] if evaluate else ["--eval-every", str(rounds + 1)]),
         "--state-dir", str(state)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=open(state / "server.log", "w"))  # noqa: SIM115
    peak = PeakRss(server.pid)
    log: list[dict[str, Any]] = []
    saved = daemon_module.download, daemon_module.submit
    daemon_module.download = _timed(log, "fetch", saved[0], lambda out, *a: len(out))
    daemon_module.submit = _timed(log, "submit", saved[1], lambda out, session, header,
                                  weights, *a: sum(w.nbytes for w in weights.values()))
    threads = []
    try:
        cwd = os.getcwd()
        os.chdir(ROOT)
        task = load_task(spec)
        os.chdir(cwd)
        splits = task.load_data()
        parts = write_partitions(splits.train_x, splits.train_y,
                                 iid(len(splits.train_y), devices, seed=0), tmp / "data")
        for i, part in enumerate(parts):
            config = ClientConfig(server=f"127.0.0.1:{port}", task=spec, data=(str(part),),
                                  device_id=f"d{i}", insecure=True, poll_seconds=1.0)
            x, y = splits.train_x[i::devices], splits.train_y[i::devices]
            daemon = Daemon(config, task, Trainer(task, x, y, "cpu"))
            thread = threading.Thread(target=daemon.run, daemon=True)
            thread.start()
            threads.append(thread)
        server.wait(timeout=3600)
        for thread in threads:
            thread.join(120)
    finally:
        daemon_module.download, daemon_module.submit = saved
        if server.poll() is None:
            server.kill()
    peak.join()
    model_bytes = os.path.getsize(state / "checkpoints" / "round-000000.safetensors")
    return {"model_bytes": model_bytes, "server_exit": server.returncode,
            "server_peak_rss_bytes": peak.peak_kib * 1024,
            "server_baseline_rss_bytes": baseline_rss(),
            "peak_over_model": peak.peak_kib * 1024 / model_bytes,
            "spooled": spool, "devices": devices, "rounds": rounds, "transfers": log}


def baseline_rss() -> int:
    """Resident bytes of a process that has imported what a server imports (Python,
    torch, gRPC, fedge) and holds no model: the part of the server's memory that does
    not grow with the model."""
    code = ("import fedge.cli.server, fedge.server.app, torch, grpc, pathlib; "
            "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmRSS:')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(out.stdout.strip()) * 1024


def _rate(log: list[dict[str, Any]], what: str, rounds: slice = slice(None)) -> float:
    """MB/s of the transfers of one kind, over the rounds selected (in order)."""
    rows = [r for r in log if r["what"] == what][rounds]
    return sum(r["bytes"] for r in rows) / max(sum(r["seconds"] for r in rows), 1e-9) / 1e6


def main() -> None:
    """Runs the benchmark, prints its tables and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1024.0, help="model size in MB")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="bench/results/transfer.json")
    parser.add_argument("--rounds-only", action="store_true",
                        help="skip the throughput part (one device, raw baseline)")
    parser.add_argument("--compare-memory", action="store_true",
                        help="run the round again with updates received in memory")
    parser.add_argument("--raw-server", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        raw_server(args.raw_server)
        return
    with tempfile.TemporaryDirectory() as tmp:
        many = fedge_run(args.mb, args.devices, args.rounds, Path(tmp))
        memory = (fedge_run(args.mb, args.devices, args.rounds, Path(tmp), spool=False)
                  if args.compare_memory else None)
        if args.rounds_only:
            round_table(args, [many, memory])
            return
        # The raw stream before and after the timed run, the faster taken as the limit:
        # on this shared box one measurement of it varies by 1.5x from run to run.
        raws = [raw_rates(many["model_bytes"])]
        one = fedge_run(args.mb, 1, 2, Path(tmp), evaluate=False)
        raws.append(raw_rates(one["model_bytes"]))
        raw = {key: max(r[key] for r in raws) for key in raws[0]}
    log = one["transfers"]
    throughput: dict[str, Any] = {"raw_runs": raws,
                                  "fetch_first_mb_s": _rate(log, "fetch", slice(1)),
                                  "fetch_mb_s": _rate(log, "fetch", slice(1, None)),
                                  "submit_mb_s": _rate(log, "submit"), **raw}
    for key, raw_key in (("fetch_first", "down"), ("fetch", "down"), ("submit", "up")):
        throughput[f"{key}_vs_raw"] = throughput[f"{key}_mb_s"] / raw[f"{raw_key}_mb_s"]
    print(f"model {one['model_bytes'] / 1e6:.0f} MB ({one['model_bytes'] // 4 / 1e6:.0f}M "
          "float32 parameters)")
    print(f"{'transfer':<24} {'fedge MB/s':>11} {'raw gRPC MB/s':>14} {'ratio':>6} "
          f"{'target':>7}")
    for name, key, raw_key in (("fetch, round 1 (fresh)", "fetch_first", "down"),
                               ("fetch, round 2", "fetch", "down"),
                               ("submit, rounds 1-2", "submit", "up")):
        ratio = throughput[f"{key}_vs_raw"]
        print(f"{name:<24} {throughput[f'{key}_mb_s']:>11.0f} "
              f"{throughput[f'{raw_key}_mb_s']:>14.0f} {ratio:>6.2f} "
              f"{'met' if ratio >= 0.7 else 'MISSED':>7}")
    round_table(args, [one, many, memory], throughput)


def round_table(args: argparse.Namespace, runs: list[dict[str, Any] | None],
                throughput: dict[str, Any] | None = None) -> None:
    """Prints the rounds' memory table and writes the JSON."""
    done = [run for run in runs if run is not None]
    print(f"model {done[0]['model_bytes'] / 1e6:.0f} MB")
    print(f"{'devices':>7} {'rounds':>6} {'updates':>8} {'server peak RSS':>16} "
          f"{'x model':>8} {'baseline RSS':>13} {'target':>7}")
    for run in done:
        print(f"{run['devices']:>7} {run['rounds']:>6} "
              f"{'on disk' if run['spooled'] else 'memory':>8} "
              f"{run['server_peak_rss_bytes'] / 1e9:>14.2f} GB "
              f"{run['peak_over_model']:>8.2f} "
              f"{run['server_baseline_rss_bytes'] / 1e9:>10.2f} GB "
              f"{'met' if run['peak_over_model'] < 3 else 'MISSED':>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    out.write_text(json.dumps({"throughput": throughput, "runs": done,
                               "devices": args.devices,
                               "rounds": args.rounds, "machine": platform.platform(),
                               "cpus": os.cpu_count(), "loadavg": load}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
