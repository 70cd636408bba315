"""GPU benchmark: local training of the image task (cifar10-resnet, ResNet-class CNN on
32x32x3) on a CUDA device against the CPU, in the same run.

    python -m bench.gpu [--examples 1024] [--epochs 1] [--batch 64] [--cpu-bf16]
                        [--out runs/gpu.json]

Each row builds the device's real `Trainer` (the one `fedge client --device ...
--precision ...` uses) on the same synthetic examples and times `Trainer.train`: one
device's local work of a round (the fetched weights loaded, every epoch's batches, the
weights copied back to the host as float32 numpy arrays, which waits for the GPU). One
untimed epoch first warms the allocator and cuDNN's autotuner. Rows: CPU fp32 on all
host threads (and, with --cpu-bf16, CPU bf16 autocast: about 7x slower than fp32 on a
CPU without AMX, which is why "auto" never picks it there); where torch sees CUDA, CUDA
fp32 and CUDA bf16 (pinned host memory, non-blocking copies). Samples per second =
examples x epochs / seconds; the last column is each row over CPU fp32. Without a GPU
the CUDA rows say so and the exit status is still 0: CI has no GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedge.client.trainer import Trainer, describe
from fedge.tasks import load_task
from fedge.tasks.training import weights_of

TASK = "cifar10-resnet"


def measure(device: str, precision: str, examples: int, epochs: int,
            batch: int) -> dict[str, Any]:
    """Times one device's local training on device at precision."""
    task = load_task(TASK)
    splits = task.load_data()
    reps = -(-examples // len(splits.train_y))
    x = splits.train_x.repeat(reps, axis=0)[:examples]
    y = splits.train_y.repeat(reps, axis=0)[:examples]
    trainer = Trainer(task, x, y, device, precision)
    torch.manual_seed(0)
    start = weights_of(task.build_model())
    trainer.train(start, epochs=1, lr=0.05, batch_size=batch, seed=0)  # warm-up
    began = time.perf_counter()
    _, metrics = trainer.train(start, epochs=epochs, lr=0.05, batch_size=batch, seed=1)
    seconds = time.perf_counter() - began
    return {"device": describe(trainer.device, trainer.precision), "precision": precision,
            "examples": examples, "epochs": epochs, "batch": batch,
            "seconds": seconds, "samples_per_s": examples * epochs / seconds,
            "train_loss": metrics["train_loss"]}


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table, each against the CPU fp32 row."""
    base = next((r["samples_per_s"] for r in rows if r.get("device") == "cpu"
                 and r.get("precision") == "fp32"), None)
    lines = [f"{'device':<32} {'precision':<9} {'seconds':>8} {'samples/s':>10} "
             f"{'vs CPU fp32':>11}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['device']:<32} {r['precision']:<9} {r['skipped']}")
            continue
        ratio = f"{r['samples_per_s'] / base:.1f}x" if base else "-"
        lines.append(f"{r['device']:<32} {r['precision']:<9} {r['seconds']:>8.2f} "
                     f"{r['samples_per_s']:>10.0f} {ratio:>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the rows, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cuda", default="cuda:0", help="the CUDA device to measure")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="also time bf16 autocast on the CPU")
    parser.add_argument("--out", default="runs/gpu.json")
    args = parser.parse_args(argv)
    rows = []
    configs = [("cpu", "fp32"), *([("cpu", "bf16")] if args.cpu_bf16 else []),
               (args.cuda, "fp32"), (args.cuda, "bf16")]
    for device, precision in configs:
        if device.startswith("cuda") and not torch.cuda.is_available():
            rows.append({"device": device, "precision": precision,
                         "skipped": "not measured: torch sees no CUDA device here"})
            continue
        print(f"training {TASK} on {device} ({precision}) ...", file=sys.stderr, flush=True)
        rows.append(measure(device, precision, args.examples, args.epochs, args.batch))
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "task": TASK, "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
        "rows": rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
