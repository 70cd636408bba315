"""A device's metrics report is held to what it could have measured before the server
weighs it (federated evaluation, the canary gate): one device claiming a billion
held-out examples at accuracy 1 must not outvote the fleet."""

from __future__ import annotations

import pytest

from fedge.protos import fedge_pb2
from fedge.refusals import OverLimit
from fedge.server.fields import check_report, plausible
from fedge.server.fleet_eval import weighted_means


def test_counts_are_held_to_the_joined_examples_and_accuracy_to_0_1() -> None:
    assert plausible({"edge_examples": 1e9, "edge_accuracy": 7.0, "edge_loss": 0.3,
                      "global_accuracy": -2.0}, 120) == {
        "edge_examples": 120.0, "edge_accuracy": 1.0, "edge_loss": 0.3,
        "global_accuracy": 0.0}
    assert plausible({"edge_examples": 30.0}, 0) == {"edge_examples": 0.0}


def test_a_liar_no_longer_outvotes_honest_devices() -> None:
    honest = [{"edge_examples": 20.0, "edge_accuracy": 0.5, "edge_loss": 1.0}] * 4
    liar = {"edge_examples": 1e9, "edge_accuracy": 1.0, "edge_loss": 0.0}
    assert weighted_means([*honest, liar])["fed_edge_accuracy"] > 0.99  # unchecked
    held = weighted_means([*honest, plausible(liar, 200)])["fed_edge_accuracy"]
    assert held == pytest.approx((4 * 20 * 0.5 + 200 * 1.0) / 280)
    report = fedge_pb2.MetricsReport(round=1, model_version=1, metrics=liar)
    assert check_report(report, 1, 200)["edge_examples"] == 200.0


def test_a_report_of_a_round_that_does_not_exist_is_refused() -> None:
    with pytest.raises(OverLimit, match=r"round must be in 0\.\.2"):
        check_report(fedge_pb2.MetricsReport(round=9, model_version=1), 1, 10)
