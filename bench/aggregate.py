"""FedAvg aggregation throughput and memory, fedge against Flower doing the same work
inside the same timer, and a plain numpy copy of the same bytes (the memory-bandwidth
limit).

    python -m bench.aggregate [--ks 10 100 1000] [--out bench/results/aggregate.json]

K updates of a 1M-parameter float32 model (4 MB each) arrive one after another; each
method turns them into their example-weighted mean. Two pairs, so that each comparison
puts the same work inside both timers:

* from the wire (decoding inside the timer, on both sides):

  * ``fedge intake+fold``: each update as the serialized UpdateChunk messages gRPC
    hands the server (as the daemon writes them: 1 MiB of data each, no CRC-32, which a
    server that checks the stream's SHA-256 does not ask for); the timer holds their
    parsing (:func:`fedge.chunk_wire.parse_update_chunk`), the server's intake filters
    1-7 (:func:`server.intake.receive`: chunk and size limits, assembling the tensors,
    the stream's SHA-256, decoding) and the fold into
    :class:`server.strategies.fedavg.FedAvgFold`'s running sum (memory: one sum plus
    one update);
  * ``flower inplace``: ``flwr.server.strategy.aggregate.aggregate_inplace`` over the
    round's list of ``FitRes`` (how a Flower server holds results: all K, serialized);
    it deserializes each (``np.load`` of the bytes) inside the timer;

* already decoded (no decoding in either timer):

  * ``fedge fold``: ``FedAvgFold`` over decoded arrays;
  * ``flower aggregate``: ``flwr.server.strategy.aggregate.aggregate`` over the round's
    decoded ``(ndarrays, num_examples)`` list (what Flower's FedAvg runs without
    ``inplace``);

* ``numpy copy``: ``np.copyto`` of each decoded update into one buffer, the floor any
  method that reads every byte once must pay.

Everything an update is made of before it reaches the server (its chunks, its FitRes,
its arrays) is built outside the timers, from a pool of 16 distinct updates (64 MB, more
than the last-level cache); fedge's decoded updates are copied right before they are
handed over, as if just assembled, since the fold reuses their memory. The best of
``--repeats`` runs is reported (the median is in the JSON too), since the machine may be
shared. Every (method, K) runs in a fresh
subprocess so that its peak resident memory (ru_maxrss) is its own; the table shows it
above the process's baseline after setup. Flower is optional: without it its rows are
skipped (install with ``pip install 'fedge[flower]'``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = {"l0.weight": (1024, 768), "l0.bias": (1024,), "l1.weight": (208, 1024),
          "l1.bias": (208,)}  # 1,000,656 parameters
POOL = 16
METHODS = ("fedge intake+fold", "flower inplace", "fedge fold", "flower aggregate",
           "numpy copy")
# Each fedge method and the Flower method doing the same work in its timer.
PEERS = {"fedge intake+fold": "flower inplace", "fedge fold": "flower aggregate"}
FLOWER = ("flower inplace", "flower aggregate")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _pool() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
            for _ in range(POOL)]


def _fresh(update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: a.copy() for n, a in update.items()}


def _time_fold(pool: list[dict[str, np.ndarray]], counts: list[int]) -> float:
    from fedge.server.strategies.fedavg import FedAvgFold

    fold, seconds = FedAvgFold(), 0.0
    for i, count in enumerate(counts):
        update = _fresh(pool[i % POOL])
        start = time.perf_counter()
        fold.add(update, count)
        seconds += time.perf_counter() - start
        del update
    start = time.perf_counter()
    fold.result()
    return seconds + time.perf_counter() - start


def _wire(pool: list[dict[str, np.ndarray]]) -> tuple[list[list[bytes]], list[str]]:
    """Each pooled update as the serialized chunks it travels in (as the daemon sends
    them to a server that sets update_crc_optional), and its SHA-256 (untimed)."""
    from fedge.chunk_wire import update_tensor_chunk
    from fedge.tensors import iter_pieces, stream_sha256

    return ([[update_tensor_chunk(p.name, p.dtype, p.shape, p.offset, p.data)
              for p in iter_pieces(update, crc=False)] for update in pool],
            [stream_sha256(update) for update in pool])


def _time_intake(pool: list[dict[str, np.ndarray]], counts: list[int],
                 wire: tuple[list[list[bytes]], list[str]]) -> float:
    from fedge.chunk_wire import parse_update_chunk
    from fedge.server.intake import Expected, receive
    from fedge.server.strategies.fedavg import FedAvgFold
    from fedge.tensors import fingerprint

    chunks, digests = wire
    expected = Expected(tuple(fingerprint(pool[0])), "f32", 0.1, 1 << 40)
    fold, seconds = FedAvgFold(), 0.0
    for i, count in enumerate(counts):
        start = time.perf_counter()
        parsed = (parse_update_chunk(raw).tensor for raw in chunks[i % POOL])
        fold.add(receive(parsed, expected, digests[i % POOL]), count)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    fold.result()
    return seconds + time.perf_counter() - start


def _time_copy(pool: list[dict[str, np.ndarray]], counts: list[int]) -> float:
    target = {n: np.empty(s, np.float32) for n, s in SHAPES.items()}
    seconds = 0.0
    for i in range(len(counts)):
        update = _fresh(pool[i % POOL])
        start = time.perf_counter()
        for n, a in update.items():
            np.copyto(target[n], a)
        seconds += time.perf_counter() - start
        del update
    return seconds


def run_one(method: str, k: int, repeats: int) -> dict[str, Any]:
    """Times one method on k updates in this process, best of repeats (the machine may
    be shared); returns seconds and memory."""
    pool = _pool()
    counts = [10 + (i * 37) % 500 for i in range(k)]
    model_bytes = sum(a.nbytes for a in pool[0].values())
    if method in ("fedge fold", "fedge intake+fold"):
        from fedge.server.strategies.fedavg import FedAvgFold

        warm = FedAvgFold()  # the second add imports scipy's BLAS, once per process
        for _ in range(2):
            warm.add({"w": np.ones(8, np.float32)}, 1.0)
        if method == "fedge fold":
            base = _rss_mb()
            times = [_time_fold(pool, counts) for _ in range(repeats)]
        else:  # the pool's wire form is the bench's, not memory the server holds
            wire = _wire(pool)
            base = _rss_mb()
            times = [_time_intake(pool, counts, wire) for _ in range(repeats)]
    elif method == "numpy copy":
        base = _rss_mb()
        times = [_time_copy(pool, counts) for _ in range(repeats)]
    elif method == "flower inplace":
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
        from flwr.server.strategy.aggregate import aggregate_inplace

        base = _rss_mb()
        names = list(SHAPES)
        # A Flower server keeps every result of the round until it aggregates.
        results = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(
            [pool[i % POOL][n] for n in names]), counts[i], {})) for i in range(k)]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            aggregate_inplace(results)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
    elif method == "flower aggregate":
        from flwr.server.strategy.aggregate import aggregate

        base = _rss_mb()
        names = list(SHAPES)
        decoded = [([pool[i % POOL][n] for n in names], counts[i]) for i in range(k)]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            aggregate(decoded)
            times.append(time.perf_counter() - start)
    else:
        raise ValueError(f"unknown method {method!r}")
    seconds = min(times)
    return {"method": method, "k": k, "seconds": seconds, "seconds_median":
            float(np.median(times)), "repeats": repeats,
            "gb_per_s": k * model_bytes / seconds / 1e9,
            "updates_per_s": k / seconds, "peak_rss_mb": _rss_mb(),
            "extra_rss_mb": _rss_mb() - base, "model_bytes": model_bytes}


def _flower_available() -> bool:
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'K':>5}  {'method':<17} {'seconds':>8} {'GB/s':>7} {'updates/s':>10} "
             f"{'extra RSS MB':>12} {'vs copy':>8} {'vs flower':>9}"]
    for row in rows:
        peers = {r["method"]: r for r in rows if r["k"] == row["k"]}
        vs_copy = row["gb_per_s"] / peers["numpy copy"]["gb_per_s"]
        flower = peers.get(PEERS.get(row["method"], ""))  # the same work in its timer
        vs_flower = f"{row['gb_per_s'] / flower['gb_per_s']:>8.2f}x" if flower else "       -"
        lines.append(f"{row['k']:>5}  {row['method']:<17} {row['seconds']:>8.3f} "
                     f"{row['gb_per_s']:>7.2f} {row['updates_per_s']:>10.1f} "
                     f"{row['extra_rss_mb']:>12.1f} {vs_copy:>7.0%} {vs_flower}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs every (method, K) in a subprocess, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.aggregate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--out", default="bench/results/aggregate.json")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions per (method, K); the best is reported")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.repeats)))
        return 0
    methods = [m for m in METHODS if m not in FLOWER or _flower_available()]
    if "flower inplace" not in methods:
        print("flwr is not installed: skipping Flower (pip install 'fedge[flower]')",
              file=sys.stderr)
    rows = []
    for k in args.ks:
        for method in methods:
            done = subprocess.run([sys.executable, "-m", "bench.aggregate", "--one", method,
                                   str(k), "--repeats", str(args.repeats)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout))
            print(f"  {method} K={k}: {rows[-1]['seconds']:.3f} s", file=sys.stderr,
                  flush=True)
    print(_table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    flwr_version = None
    if "flower inplace" in methods:
        from importlib.metadata import version

        flwr_version = version("flwr")
    out.write_text(json.dumps({"rows": rows, "numpy": np.__version__, "flwr": flwr_version,
                               "python": platform.python_version(),
                               "machine": platform.machine(), "cpus": _cpus()}, indent=2)
                   + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
