"""LoRA against full fine-tuning: upload bytes per round and accuracy, federated.

    python -m bench.lora [--clients 2] [--rounds 3] [--epochs 1]
                         [--out bench/results/lora.json]

Two ``fedge simulate`` runs (a real server and real client daemons over loopback gRPC,
IID, the same data and seed): ``text-lora`` (rank-4 adapters on a small transformer's q
and v, and its head; needs peft) and ``text-full`` (the same model, every weight
trained). Upload bytes are the server's count of every byte the round's devices sent
(updates, polls, metrics), per device and round; the ratio is LoRA's over full
fine-tuning's. The target (issue 16) is at most 2%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fedge.config import SimulateConfig
from fedge.simulations.runner import simulate
from fedge.tasks import load_task
from fedge.tasks.lora import parameter_count

TASKS = {"lora": "text-lora", "full": "fedge.tasks.lora_text:full_task"}
TARGET = 0.02


def run(kind: str, clients: int, rounds: int, epochs: int, seed: int) -> dict[str, Any]:
    """One simulate run of TASKS[kind]; its upload per device and round, and accuracy."""
    spec = TASKS[kind]
    state, whole = parameter_count(load_task(spec).build_model())
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = simulate(SimulateConfig(task=spec, out=out, clients=clients, rounds=rounds,
                                         epochs=epochs, seed=seed, edge=False,
                                         backend="threads"))
    trained = [r for r in report["rounds"] if r["round"] >= 1]
    up = sum(r["bytes_up"] for r in trained) / sum(r["clients"] for r in trained)
    return {"kind": kind, "task": spec, "values_sent": state, "values_in_model": whole,
            "bytes_up_per_device_round": round(up), "accuracy": report["final"]["accuracy"],
            "accuracy_by_round": [r["accuracy"] for r in report["rounds"]],
            "seconds": round(time.perf_counter() - started, 1)}


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, each upload against full fine-tuning's."""
    full = next(r for r in rows if r["kind"] == "full")["bytes_up_per_device_round"]
    lines = ["| fine-tuning | values sent / in model | upload per device and round | "
             "vs full | accuracy by round |", "|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = r["bytes_up_per_device_round"] / full
        mark = "" if r["kind"] == "full" else (" (target <= 2%: met)" if ratio <= TARGET
                                               else " (target <= 2%: MISSED)")
        accs = ", ".join(f"{a:.3f}" for a in r["accuracy_by_round"])
        lines.append(f"| {r['kind']} | {r['values_sent']:,} / {r['values_in_model']:,} | "
                     f"{r['bytes_up_per_device_round']:,} B | {ratio:.2%}{mark} | {accs} |")
    return "\n".join(lines)


def main() -> None:
    """Runs both, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/lora.json")
    args = parser.parse_args()
    rows = [run(kind, args.clients, args.rounds, args.epochs, args.seed)
            for kind in ("lora", "full")]
    print(f"text-lora vs text-full, {args.clients} devices, {args.rounds} rounds of "
          f"{args.epochs} local epoch(s), float32 updates")
    print(table(rows))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
