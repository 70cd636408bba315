"""Central DP end to end: `fedge simulate`'s runner (a real server and real client
daemons over loopback gRPC, real torch training) with --dp central and a target epsilon.
The run trains, reports after every round the epsilon dp-accounting gives for the
sampling rate it used, stops before the budget would be exceeded, and ships the last
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.cli.status import format_status
from fedge.config import SimulateConfig
from fedge.simulations.runner import simulate

dp_accounting = pytest.importorskip("dp_accounting")

Z, CLIP, DELTA = 0.05, 2.0, 1e-5


def epsilon(rounds: int, rate: float) -> float:
    """dp-accounting's epsilon for rounds Poisson-sampled Gaussian releases."""
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(
        rate, dp_accounting.GaussianDpEvent(Z)), rounds)
    return float(accountant.get_epsilon(DELTA))


@pytest.mark.slow
def test_central_dp_trains_reports_epsilon_and_stops_at_the_target(tmp_path: Path) -> None:
    # 3 of 6 clients a round: sampling rate 0.5. The budget pays for 3 rounds, not 4.
    target = (epsilon(3, 0.5) + epsilon(4, 0.5)) / 2
    report = simulate(SimulateConfig(
        out=str(tmp_path), clients=6, fraction=0.5, rounds=8, dp="central",
        dp_noise_multiplier=Z, dp_clip=CLIP, dp_delta=DELTA, target_epsilon=target))
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3], rounds
    for k, r in enumerate(rounds, start=1):
        assert r["epsilon"] == pytest.approx(epsilon(k, 0.5), rel=1e-9), (k, r)
    assert report["privacy"]["epsilon"] == pytest.approx(epsilon(3, 0.5), rel=1e-9)
    assert report["privacy"]["epsilon"] <= target < epsilon(4, 0.5)
    assert "epsilon past the target" in report["ended_early"]
    assert not report.get("failure")
    # It learned under the noise: from chance (0.1) to well above it.
    assert report["final"]["accuracy"] > 0.4, report["final"]
    # The last committed model was shipped as the final edge artifact.
    assert report["edge"]["artifact"].endswith("round-000003")
    summary = (tmp_path / "summary.md").read_text()
    assert "**epsilon" in summary and "| epsilon |" in summary
    # What `fedge status` reads after the run: epsilon per round and for the run.
    snap = json.loads((tmp_path / "state" / "status.json").read_text())
    assert snap["privacy"]["epsilon"] == report["privacy"]["epsilon"]
    assert snap["phase"] == "done" and snap["round"] == 3
    assert [r["epsilon"] for r in snap["rounds"] if r["round"] > 0] == [
        r["epsilon"] for r in rounds]
    shown = format_status(snap)
    assert "privacy: central DP, epsilon" in shown and f"target {target:g}" in shown
