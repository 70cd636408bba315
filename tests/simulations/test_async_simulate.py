"""`fedge simulate --mode async` under the slow-devices scenario: real daemons over gRPC,
a share of them k times slower, and a report that says how the run went."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedge.simulations.device import slow_down
from fedge.simulations.runner import simulate
from fedge.simulations.scenario import load_simulation


class _Work:
    def train(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_a_slowed_trainer_takes_k_times_as_long() -> None:
    waits: list[float] = []
    work = _Work()
    slow_down(work, 10.0, waits.append)
    assert work.train(0.02) == 0.02
    assert len(waits) == 1 and 9 * 0.02 <= waits[0] < 9 * 0.2


@pytest.mark.slow  # about 25-40 s on the shared box
def test_async_simulation_of_slow_devices_reports_its_versions(tmp_path: Path) -> None:
    config = load_simulation("slow-devices", None, {
        "mode": "async", "clients": 4, "rounds": 3, "epochs": 1, "edge": False,
        "concurrency": 4, "buffer_size": 2, "out": str(tmp_path / "out")})
    report = simulate(config)
    assert report["mode"] == "async" and report["scenario"] == "slow-devices"
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    assert all(r["clients"] == 2 for r in report["rounds"])  # buffer_size updates each
    assert report["asynchronous"]["buffer_size"] == 2
    assert report["conditions"]["straggler_slowdown"] == 10.0
    assert len(report["conditions"]["stragglers"]) == 2  # 30% of 4, rounded up
    assert report["final"]["accuracy"] > 0.3  # it learns (chance is 0.1)
