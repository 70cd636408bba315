"""bench/async.py's table and speed-up, from made-up runs (the bench itself runs
simulations for minutes: BENCHMARKS.md has its numbers)."""

from __future__ import annotations

import importlib

bench = importlib.import_module("bench.async")  # `async` is a keyword


def _row(mode: str, to: float | None, commits: int) -> dict[str, object]:
    return {"mode": mode, "commits": commits, "final_accuracy": 0.95, "wall_s": 60.0,
            "to_target_s": to, "to_target_commits": 3 if to else None}


def test_the_table_says_how_much_sooner_async_reaches_the_target() -> None:
    rows = [_row("sync", 60.0, 8), _row("async", 20.0, 40)]
    assert bench.speedup(rows) == 3.0
    text = bench.table(rows, 0.95)
    assert "sync FedAvg" in text and "async FedBuff" in text
    assert text.endswith("async reaches 0.95 3.00x sooner")


def test_a_run_that_misses_the_target_says_so() -> None:
    rows = [_row("sync", None, 8), _row("async", 20.0, 40)]
    assert bench.speedup(rows) == 0.0
    assert "not reached" in bench.table(rows, 0.95)
