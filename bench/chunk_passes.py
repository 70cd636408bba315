"""The cost of each pass a 1 MiB chunk's bytes may take on their way through fedge, per
chunk, against which the transfer benchmark's ratios read (best of 7 over 64 chunks).

    python -m bench.chunk_passes [--out bench/results/chunk_passes.json]

"fresh memory" is memory touched for the first time (its page faults are most of a
copy's cost on a VM); the other copies reuse memory, as a receive loop does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedge import chunk_wire
from fedge.protos import fedge_pb2
from fedge.tensors import CHUNK_BYTES

N = 64


def _best(step: Callable[[], object]) -> float:
    """Milliseconds per chunk of step run N times, best of 7."""
    times = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(N):
            step()
        times.append(time.perf_counter() - started)
    return min(times) / N * 1e3


def passes() -> dict[str, float]:
    """Each pass's milliseconds per chunk."""
    data = os.urandom(CHUNK_BYTES)
    wire = fedge_pb2.UpdateChunk(tensor=fedge_pb2.TensorChunk(
        name="w", dtype="float32", shape=[N * CHUNK_BYTES // 4], offset=0, data=data,
        crc32=zlib.crc32(data))).SerializeToString()
    parsed = fedge_pb2.UpdateChunk.FromString(wire).tensor
    source = np.frombuffer(data, np.uint8)
    touched = np.empty(CHUNK_BYTES, np.uint8)
    fresh: list[np.ndarray] = []
    out = {
        "protobuf parse": _best(lambda: fedge_pb2.UpdateChunk.FromString(wire)),
        "protobuf read of .data (a copy)": _best(lambda: parsed.data),
        "hand parse (chunk_wire)": _best(lambda: chunk_wire.parse_update_chunk(wire)),
        "CRC-32 (zlib)": _best(lambda: zlib.crc32(data)),
        "SHA-256 (hashlib)": _best(lambda: hashlib.sha256(data)),
        "serialize (chunk_wire join)": _best(
            lambda: chunk_wire.update_tensor_chunk("w", "float32", (1,), 0, data)),
        "store into touched memory": _best(lambda: np.copyto(touched, source)),
    }
    out["store into fresh memory"] = _best(
        lambda: fresh.append(source.copy()) if len(fresh) < N else fresh.clear())
    return out


def main() -> None:
    """Prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/chunk_passes.json")
    args = parser.parse_args()
    result = passes()
    print(f"{'pass (1 MiB chunk)':<34} {'ms':>6}")
    for name, ms in result.items():
        print(f"{name:<34} {ms:>6.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ms_per_chunk": result, "chunk_bytes": CHUNK_BYTES,
                               "loadavg": os.getloadavg()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
