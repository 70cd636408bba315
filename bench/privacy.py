"""Accuracy against epsilon: central DP on a built-in task at three noise multipliers,
and the same run without DP.

    python -m bench.privacy [--clients 40] [--fraction 0.25] [--rounds 20] [--epochs 5]
                            [--noise 0.05 0.2 1.0] [--clip 1.0]
                            [--out bench/results/privacy.json]

Each row is one ``fedge simulate`` run (a real server and real client daemons over
loopback gRPC) on digits-mlp, IID, with ``--dp central --dp-clip C`` and the row's noise
multiplier z; epsilon is the accountant's (dp-accounting, RDP) at delta 1e-5 after the
last round, at the sampling rate the run used (clients sampled / fleet). The baseline
row is the same run with DP off. Accuracy is the global model's on the task's test set.
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


def run(clients: int, fraction: float, rounds: int, epochs: int, noise: float | None,
        clip: float, seed: int) -> dict[str, Any]:
    """One simulate run; noise None turns DP off."""
    dp: dict[str, Any] = ({} if noise is None else
                          dict(dp="central", dp_noise_multiplier=noise, dp_clip=clip,
                               dp_delta=1e-5))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = simulate(SimulateConfig(out=out, clients=clients, fraction=fraction,
                                         rounds=rounds, epochs=epochs, seed=seed,
                                         edge=False, **dp))
    return {"noise_multiplier": noise, "clip": clip if noise is not None else None,
            "epsilon": report["privacy"]["epsilon"] if noise is not None else None,
            "accuracy": report["final"]["accuracy"], "loss": report["final"]["loss"],
            "accuracy_by_round": [r["accuracy"] for r in report["rounds"]],
            "seconds": round(time.perf_counter() - started, 1)}


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| noise multiplier z | clip C | epsilon (delta 1e-5) | accuracy | loss |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        z = "off" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        clip = "" if r["clip"] is None else f"{r['clip']:g}"
        eps = "inf (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.4g}"
        lines.append(f"| {z} | {clip} | {eps} | {r['accuracy']:.4f} | {r['loss']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    """Runs the rows, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/privacy.json")
    args = parser.parse_args()
    rows = [run(args.clients, args.fraction, args.rounds, args.epochs, z, args.clip,
                args.seed)
            for z in [None, *args.noise]]
    print(f"digits-mlp, {args.clients} clients, {args.fraction:g} sampled a round, "
          f"{args.rounds} rounds of {args.epochs} local epochs, central DP")
    print(table(rows))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
