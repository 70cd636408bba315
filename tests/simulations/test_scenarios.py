"""Scenarios: every built-in one loads, runs to completion on real daemons over gRPC, and
its report shows the effect it models; the summary and the plot are real files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import SimulateConfig
from fedge.errors import ConfigError
from fedge.progress import RoundBar
from fedge.server.store import RoundRecord
from fedge.simulations.runner import assign_roles, simulate
from fedge.simulations.scenario import builtin, describe, load_simulation

PNG = b"\x89PNG\r\n\x1a\n"
# Small runs: few clients and rounds, no edge artifact, short deadlines.
SMALL = {"edge": False, "rounds": 2}


def test_every_builtin_scenario_loads_and_says_what_it_models() -> None:
    names = set(builtin())
    assert names == {"dropout", "stragglers", "slow-devices", "churn", "hostile",
                     "quantity-skew", "label-skew", "bandwidth"}
    for name in names:
        config = load_simulation(name, None, {})
        assert config.scenario == name
        assert len(describe(builtin()[name])) > 40


def test_a_scenario_is_overridden_by_the_config_file_then_by_flags(tmp_path: Path) -> None:
    own = tmp_path / "mine.toml"
    own.write_text("dropout = 0.5\nclients = 3\n")
    config = load_simulation("dropout", str(own), {"clients": 4, "rounds": None})
    assert (config.dropout, config.clients, config.rounds) == (0.5, 4, 6)
    assert load_simulation(str(own), None, {}).scenario == "mine"
    with pytest.raises(ConfigError, match="built-in: bandwidth, churn"):
        load_simulation("no-such", None, {})
    own.write_text("dropout = 1.5\n")
    with pytest.raises(ConfigError, match=r"mine\.toml: dropout must be in"):
        load_simulation(str(own), None, {})
    own.write_text("dropuot = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'dropuot'"):
        load_simulation(str(own), None, {})


def test_roles_are_disjoint_and_drawn_from_the_seed() -> None:
    config = SimulateConfig(clients=10, rounds=5, hostile_clients=0.2, late_joiners=0.2,
                            leavers=0.3, stragglers=0.5)
    roles = assign_roles(config)
    assert [len(roles[k]) for k in ("hostile", "late", "leave", "stragglers")] == [2, 2, 3, 5]
    assert len(set(roles["hostile"]) | set(roles["late"]) | set(roles["leave"])) == 7
    assert roles == assign_roles(config)


def test_the_progress_bar_shows_round_accuracy_and_elapsed_time() -> None:
    stream = io.StringIO()
    with RoundBar(4, stream, width=8) as bar:
        bar(RoundRecord(2, 0.875, 0.4, 5, 100, 1, 1, 0.1))
    text = stream.getvalue()
    assert "[####----] round 2/4  accuracy 0.8750  clients 5  elapsed" in text
    assert text.endswith(" s\x1b[K\n")


def _run(tmp_path: Path, scenario: str, name: str = "out", **overrides: Any) -> dict:
    config = load_simulation(scenario, None, {**SMALL, **overrides,
                                              "out": str(tmp_path / name)})
    report = simulate(config)
    assert report["scenario"] == scenario
    assert report["backend"] == overrides.get("backend", "threads")
    assert len(report["rounds"]) == config.rounds == len(report["participation"])
    assert json.loads((tmp_path / name / "report.json").read_text()) == report
    return report


def _check_summary_and_plot(out: Path, report: dict) -> None:
    summary = (out / "summary.md").read_text()
    assert f"Final accuracy **{report['final']['accuracy']:.4f}**" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip().isdigit()]
    assert len(rows) == len(report["rounds"])
    first = report["participation"][0]
    assert rows[0].split("|")[4:7] == [f" {first['sampled']} ", f" {first['reported']} ",
                                       f" {first['dropped']} "]
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000


def _dropout(tmp_path: Path) -> None:
    # Half the sampled clients go silent; the round commits at its deadline on the rest
    # (a client slowed past the deadline by a loaded machine also counts as dropped).
    report = _run(tmp_path, "dropout", clients=5, dropout=0.5, round_timeout_s=3.0,
                  quorum_fraction=0.2)
    parts = report["participation"]
    assert sum(p["dropped"] for p in parts) >= report["conditions"]["dropped_rounds"] > 0
    assert all(p["sampled"] == 5 and p["reported"] == 5 - p["dropped"] for p in parts)
    _check_summary_and_plot(tmp_path / "out", report)


def _stragglers(tmp_path: Path) -> None:
    report = _run(tmp_path, "stragglers", clients=4, straggler_delay_s=1.0,
                  straggler_distribution="fixed", round_timeout_s=10.0)
    assert len(report["conditions"]["stragglers"]) == 1
    assert report["conditions"]["delay_seconds"] == 2.0
    # Every round waits for its straggler; nobody missed the deadline.
    assert all(r["seconds"] >= 1.0 for r in report["rounds"])
    assert all(p["dropped"] == 0 for p in report["participation"])


def _churn(tmp_path: Path) -> None:
    # The late joiner connects once round 1 is committed: round 2 opens at that moment
    # without it, so it is first sampled in round 3.
    report = _run(tmp_path, "churn", clients=4, rounds=4, join_round=2, leave_round=3,
                  round_timeout_s=4.0)
    (late,), (leaver,) = report["conditions"]["late_joiners"], report["conditions"]["leavers"]
    parts = report["participation"]
    assert parts[0]["sampled"] == 3  # the late joiner is not there yet
    assert max(p["sampled"] for p in parts) == 4
    clients = report["client_data"]
    assert clients[leaver]["rounds_trained"] == 3
    assert clients[late]["rounds_trained"] >= 1
    # After it left, the leaver is still sampled until its session expires: dropped.
    assert parts[3]["dropped"] >= 1


def _hostile(tmp_path: Path) -> None:
    robust = _run(tmp_path, "hostile", clients=6, rounds=3)
    assert robust["strategy"] == "median" and len(robust["hostile"]) == 2
    naive = _run(tmp_path, "hostile", name="fedavg", clients=6, rounds=3, strategy="fedavg")
    assert robust["final"]["accuracy"] >= 0.8
    assert naive["final"]["accuracy"] < robust["final"]["accuracy"] - 0.2


def _quantity_skew(tmp_path: Path) -> None:
    # Also the processes backend: clients in two `python -m simulations.host` workers.
    report = _run(tmp_path, "quantity-skew", clients=6, backend="processes", workers=2)
    assert report["hosts"] == 2
    assert sorted(p.name for p in (tmp_path / "out" / "hosts").glob("*.results.json")) == [
        "host-0.results.json", "host-1.results.json"]
    sizes = [c["examples"] for c in report["client_data"]]
    assert max(sizes) > 4 * min(sizes)
    assert report["final"]["accuracy"] >= 0.8


def _label_skew(tmp_path: Path) -> None:
    report = _run(tmp_path, "label-skew", clients=6)
    for k in range(6):  # two shards of label-sorted data: two labels, or four at most
        labels = np.load(tmp_path / "out" / "data" / f"client-{k}" / "data.npz")["y"]
        assert len(np.unique(labels)) <= 4
    assert report["partition"] == "shards"


def _bandwidth(tmp_path: Path) -> None:
    cap = {"clients": 2, "rounds": 1, "bandwidth_kbps": 400.0}
    f32 = _run(tmp_path, "bandwidth", name="f32", **cap)
    int8 = _run(tmp_path, "bandwidth", name="int8", encoding="int8", **cap)
    rate = 400 * 1000 / 8  # bytes/s each way
    for report in (f32, int8):
        for r in report["rounds"]:  # each client's fetch and upload are paced
            assert r["seconds"] >= 0.9 * (r["bytes_up"] + r["bytes_down"]) / 2 / rate
    assert sum(r["bytes_up"] for r in int8["rounds"]) * 3 < sum(
        r["bytes_up"] for r in f32["rounds"])
    assert (sum(r["seconds"] for r in int8["rounds"])
            < 0.85 * sum(r["seconds"] for r in f32["rounds"]))


SCENARIOS = {"dropout": _dropout, "stragglers": _stragglers, "churn": _churn,
             "hostile": _hostile, "quantity-skew": _quantity_skew, "label-skew": _label_skew,
             "bandwidth": _bandwidth}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_builtin_scenario_runs_and_shows_its_effect(name: str, tmp_path: Path) -> None:
    SCENARIOS[name](tmp_path)
