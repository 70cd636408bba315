"""Central DP end to end: `fedge simulate`'s runner (a real server and real client
daemons over loopback gRPC, real torch training) with --dp central and a target epsilon.
The run trains, reports after every round the epsilon dp-accounting gives for the
sampling rate it used, stops before the budget would be exceeded, and ships the last
model."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from fedge.cli import main
from fedge.cli.status import format_status
from fedge.config import SimulateConfig
from fedge.privacy.mechanisms import l2_norm
from fedge.server.store import StateStore
from fedge.simulations.runner import simulate
from fedge.tensors import from_blob
from tests.e2e.test_operations import scrape
from tests.fleet import Fleet, free_port

dp_accounting = pytest.importorskip("dp_accounting")

Z, CLIP, DELTA = 0.05, 2.0, 1e-5


def epsilon(rounds: int, sampled: int, fleet: int) -> float:
    """dp-accounting's epsilon for rounds Gaussian releases of sampled of fleet devices
    drawn without replacement (REPLACE_ONE, the relation that event needs)."""
    relation = dp_accounting.privacy_accountant.NeighboringRelation.REPLACE_ONE
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    gaussian = dp_accounting.GaussianDpEvent(Z)
    accountant.compose(gaussian if sampled == fleet else
                       dp_accounting.SampledWithoutReplacementDpEvent(fleet, sampled, gaussian),
                       rounds)
    return float(accountant.get_epsilon(DELTA))


@pytest.mark.slow
def test_central_dp_trains_reports_epsilon_and_stops_at_the_target(tmp_path: Path) -> None:
    # 3 of 6 clients a round: sampling rate 0.5. The budget pays for 3 rounds, not 4.
    target = (epsilon(3, 3, 6) + epsilon(4, 3, 6)) / 2
    report = simulate(SimulateConfig(
        out=str(tmp_path), clients=6, fraction=0.5, rounds=8, dp="central",
        dp_noise_multiplier=Z, dp_clip=CLIP, dp_delta=DELTA, target_epsilon=target))
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3], rounds
    for k, r in enumerate(rounds, start=1):
        assert r["epsilon"] == pytest.approx(epsilon(k, 3, 6), rel=1e-9), (k, r)
    assert report["privacy"]["epsilon"] == pytest.approx(epsilon(3, 3, 6), rel=1e-9)
    assert report["privacy"]["epsilon"] <= target < epsilon(4, 3, 6)
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


@pytest.mark.slow
def test_local_dp_over_grpc_with_status_and_metrics(fleet: Fleet,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """fedge server --dp local with a robust strategy: the devices clip and noise their
    own updates (the server only asks them to); epsilon (no amplification by sampling:
    the server knows who sent) is served by the Status RPC and the metrics endpoint."""
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=2, min_clients=2, strategy="median", dp="local",
                          dp_noise_multiplier=Z, dp_clip=0.01, dp_delta=DELTA,
                          metrics_port=free_port(), status_interval_s=0.2)
    port = server.start()
    operator = server.tokens.create("ops", role="operator")
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    local = dp_accounting.rdp.RdpAccountant()
    local.compose(dp_accounting.GaussianDpEvent(Z), 1)
    after_one = local.get_epsilon(DELTA)
    deadline = time.monotonic() + 120
    while server.rounds.model_version < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = scrape(server.metrics_port)
    assert samples["fedge_dp_epsilon"] >= after_one * (1 - 1e-9)  # round 1, maybe 2
    assert main(["status", "--server", f"127.0.0.1:{port}", "--insecure", "--token",
                 operator, "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["privacy"]["mode"] == "local" and remote["privacy"]["delta"] == DELTA
    assert remote["privacy"]["epsilon"] >= after_one * (1 - 1e-9)
    records = server.wait(timeout=120)
    fleet.join_clients()
    assert records[-1].round == 2
    local.compose(dp_accounting.GaussianDpEvent(Z), 1)
    assert server.rounds.budget is not None
    assert server.rounds.budget.epsilon == pytest.approx(local.get_epsilon(DELTA), rel=1e-9)
    # The devices clipped their changes to C = 0.01 and added noise of std z C (norm
    # about z C sqrt(26k) = 0.08): a round moved the model by little more than that,
    # where unclipped training moves it by far more than 1.
    store = StateStore(fleet.tmp / "state")
    try:
        models = [from_blob(store.blob(r))[0] for r in (0, 1, 2)]
    finally:
        store.close()
    for before, after in itertools.pairwise(models):
        step = l2_norm({k: after[k] - before[k] for k in before})
        assert 0 < step < 0.2, step


@pytest.mark.slow
def test_a_restarted_server_honours_the_spent_budget(fleet: Fleet) -> None:
    """The budget pays for one round of two devices (q 1): the run ends after round 1.
    Restarted on its state dir with the same target, the server rebuilds the accountant
    from the recorded rounds and ends before training another round."""
    dirs = fleet.partitions("digits-mlp", 2)
    one, two = (epsilon(k, 2, 2) for k in (1, 2))
    settings = dict(rounds=4, min_clients=2, dp="central", dp_noise_multiplier=Z,
                    dp_clip=CLIP, dp_delta=DELTA, target_epsilon=(one + two) / 2)
    server = fleet.server(**settings)
    port = server.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    records = server.wait(timeout=120)
    assert [r.round for r in records] == [0, 1]
    assert "epsilon past the target" in server.rounds.ended_early
    fleet.join_clients()

    again = fleet.server(**settings)
    assert again.rounds.budget is not None
    assert again.rounds.budget.epsilon == pytest.approx(one, rel=1e-9)
    port = again.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    records = again.wait(timeout=120)
    assert [r.round for r in records] == [0, 1]  # no round 2
    assert "after round 1" in again.rounds.ended_early
    assert again.rounds.progress().phase == "done"
