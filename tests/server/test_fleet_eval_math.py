"""The federated evaluation's arithmetic and how a report shows it: means weighted by each
device's held-out count, models no device measured left out, and the summary and the
picture drawing the devices' accuracy beside the server's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.client.evaluation import cross_entropy
from fedge.server.fleet_eval import columns, weighted_means
from fedge.simulations.report import format_summary


def test_means_are_weighted_by_held_out_counts() -> None:
    means = weighted_means([
        {"global_loss": 1.0, "global_accuracy": 0.5, "global_examples": 10},
        {"global_loss": 3.0, "global_accuracy": 1.0, "global_examples": 30,
         "edge_loss": 2.0, "edge_accuracy": 0.25, "edge_examples": 4},
        {"edge_loss": 9.0, "edge_accuracy": 0.0, "edge_examples": 0},  # measured nothing
    ])
    assert means == {"fed_examples": 40, "fed_loss": 2.5, "fed_accuracy": 0.875,
                     "fed_edge_examples": 4, "fed_edge_loss": 2.0, "fed_edge_accuracy": 0.25}
    assert columns(weighted_means([]))["fed_accuracy"] == 0.0


def test_cross_entropy_matches_its_definition() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert cross_entropy(logits, y) == pytest.approx(-np.log(p[[0, 1], y]).mean())


def test_summary_and_picture_show_the_federated_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from fedge.simulations.plot import plot_report

    report = {"task": "digits-mlp", "clients": 2, "seconds_total": 1.0,
              "final": {"accuracy": 0.9, "loss": 0.3},
              "rounds": [{"round": r, "accuracy": 0.8 + r / 100, "loss": 0.5, "clients": 2,
                          "bytes_up": 1, "bytes_down": 1, "seconds": 1.0} for r in (1, 2)],
              "federated": [{"round": 2, **columns({"fed_examples": 7, "fed_accuracy": 0.71,
                                                     "fed_loss": 0.9})}]}
    summary = format_summary(report)
    assert "## Federated evaluation" in summary and "| 2 | 0.7100 | 0.9000 | 7 | - |" in summary
    assert plot_report(report, tmp_path / "accuracy.png").stat().st_size > 0
