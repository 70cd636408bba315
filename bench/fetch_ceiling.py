"""What a model download can reach on this machine: the raw gRPC stream against receive
loops that do, step by step, the work a download must do, with no fedge server, session
or daemon around them.

    python -m bench.fetch_ceiling [--mb 1024] [--repeats 2]
                                  [--out bench/results/fetch_ceiling.json]

A bare gRPC server in another process streams --mb megabytes in 1 MiB messages: either
one fixed message (the raw baseline of ``bench.transfer``) or fedge's ``ModelChunk``s
cut from a model blob (``fedge.chunk_wire.model_chunk``: the server's one copy). The
client, in this process, reads the stream four ways:

- ``count``: takes each message's length (the raw baseline);
- ``store``: parses each chunk (``parse_model_chunk``) and copies its data into a buffer
  already touched (a daemon's reused download buffer);
- ``store + SHA-256``: and hashes the stored bytes on a thread of its own, as
  ``fedge.client.transfers.download`` does;
- ``fresh + SHA-256``: the same into a buffer allocated for this download (a daemon's
  first download: every page touched for the first time).

Each row is the best of --repeats runs; the ratio is against ``count`` on the raw
server's stream. The gap between ``count`` and ``store + SHA-256`` is a ceiling for
``bench.transfer``'s fetch ratio on this machine: the bytes have to be stored and
checked, and here both ends share its cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench.transfer import OPTIONS, ROOT, _free_port
from fedge.chunk_wire import model_chunk, parse_model_chunk
from fedge.tensors import CHUNK_BYTES

SHA = "0" * 64  # a placeholder: nothing here compares it
READS = ("count", "store", "store + SHA-256", "fresh + SHA-256")


def serve(port: int, size: int, chunks: str) -> None:
    """Streams size bytes per call: one fixed message, or ModelChunks of a blob."""
    blob = memoryview(os.urandom(CHUNK_BYTES) * (size // CHUNK_BYTES))
    fixed = bytes(blob[:CHUNK_BYTES])

    def down(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for offset in range(0, len(blob), CHUNK_BYTES):
            yield (fixed if chunks == "raw" else
                   model_chunk(1, offset, blob[offset:offset + CHUNK_BYTES], len(blob), SHA))

    handler = grpc.method_handlers_generic_handler(
        "ceiling.Ceiling", {"Down": grpc.unary_stream_rpc_method_handler(down)})
    server = grpc.server(futures.ThreadPoolExecutor(2), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def read(channel: grpc.Channel, how: str, size: int, touched: bytearray, chunks: str
         ) -> float:
    """MB/s of one download read how; chunks: what the server sends (a raw message's
    bytes are its data, a ModelChunk is parsed as a daemon parses it)."""
    parse = parse_model_chunk if chunks == "ModelChunk" and how != "count" else None
    down = channel.unary_stream("/ceiling.Ceiling/Down", None, parse)
    started = time.perf_counter()
    if how == "count":  # bytes of messages (a ModelChunk's small fields included)
        got = sum(len(message) for message in down(b"", timeout=600))
    else:
        blob = bytearray(size) if how.startswith("fresh") else touched
        digest, got = hashlib.sha256(), 0
        with ThreadPoolExecutor(1) as hasher:
            for chunk in down(b"", timeout=600):
                data = chunk if parse is None else chunk.data
                blob[got:got + len(data)] = data
                if how.endswith("SHA-256"):
                    hasher.submit(digest.update, memoryview(blob)[got:got + len(data)])
                got += len(data)
    seconds = time.perf_counter() - started
    assert size <= got < size * 1.01, (got, size)
    return size / seconds / 1e6


def main(argv: list[str] | None = None) -> None:
    """Runs the reads against both servers, prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="MiB per download")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="bench/results/fetch_ceiling.json")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), args.serve[2])
        return
    size = args.mb * CHUNK_BYTES
    touched = bytearray(size)
    touched[::4096] = b"\x01" * len(touched[::4096])  # every page touched once
    rates: dict[str, dict[str, float]] = {}
    for chunks in ("raw", "ModelChunk"):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.fetch_ceiling", "--serve",
                                 str(port), str(size), chunks], cwd=ROOT)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
            grpc.channel_ready_future(channel).result(timeout=60)
            rates[chunks] = {how: max(read(channel, how, size, touched, chunks)
                                      for _ in range(args.repeats)) for how in READS}
            channel.close()
        finally:
            proc.kill()
            proc.wait()
    limit = rates["raw"]["count"]
    print(f"{args.mb} MiB per download, best of {args.repeats}; ratio against the raw "
          f"stream counted ({limit:.0f} MB/s)")
    print(f"{'server sends':<12} {'client reads':<18} {'MB/s':>7} {'ratio':>6}")
    for chunks, row in rates.items():
        for how, rate in row.items():
            print(f"{chunks:<12} {how:<18} {rate:>7.0f} {rate / limit:>6.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"mb_s": rates, "mib": args.mb, "repeats": args.repeats,
                               "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
