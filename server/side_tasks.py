"""The tasks a poll hands out besides a round's TRAIN: DEPLOY (a new edge artifact) and
EVALUATE (federated evaluation, fedge.server.fleet_eval), in that order, so that a
device evaluates the edge model it was just offered; and the service's side of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedge.protos import fedge_pb2
from fedge.refusals import StaleRequest
from fedge.server.registry import Device
from fedge.server.round_state import TaskView

if TYPE_CHECKING:
    from fedge.server.rounds import Rounds


def side_task(rounds: Rounds, device: Device) -> TaskView | None:
    """The DEPLOY or EVALUATE task device should do now, if any (called under the
    round lock)."""
    if rounds.deploy is not None:
        shipped = rounds.deploy.offer(device.device_id, lambda d, r: _reported(rounds, d, r))
        if shipped is not None:
            return TaskView("DEPLOY", model_version=shipped.round,
                            artifact_sha256=shipped.sha256,
                            message=f"install the edge artifact of round {shipped.round}")
    if rounds.evaluation is not None:
        return rounds.evaluation.view(device)
    return None


def _reported(rounds: Rounds, device_id: str, round_: int) -> bool:
    """Whether device_id reported the artifact of round_ installed or refused."""
    return any(device_id in rounds.store.metric_values(round_, "device", name)
               for name in ("edge_installed", "edge_refused"))


def open_after_commit(rounds: Rounds, round_: int, last: bool) -> None:
    """Opens the federated evaluation of a just-installed round when one is due (the
    caller holds the round lock, so no poll sees the run done before it opens)."""
    evaluation = rounds.evaluation
    if evaluation is not None and evaluation.due(round_, last):
        evaluation.open(round_, round_, rounds.registry.live(), evaluate_global=True)


def edge_ready(rounds: Rounds) -> None:
    """A new edge artifact can be handed out: opens the evaluation of the edge models
    (devices are offered the artifact first), then wakes the polls."""
    evaluation, deploy = rounds.evaluation, rounds.deploy
    if evaluation is not None and deploy is not None and deploy.latest is not None:
        with rounds.cond:
            version = min(deploy.latest.round, rounds.model_version)
            evaluation.open(deploy.latest.round, version, rounds.registry.live(),
                            evaluate_global=False)
    rounds.wake()


def holdout_of(rounds: Rounds) -> float:
    """The share of their examples devices hold out of training (JoinReply): 0 without
    federated evaluation."""
    return 0.0 if rounds.evaluation is None else rounds.evaluation.holdout


def report_evaluation(rounds: Rounds, device: Device, report: fedge_pb2.MetricsReport,
                      metrics: dict[str, float]) -> None:
    """Records a device's answer to its EVALUATE task (refused if it has none open)."""
    if rounds.evaluation is None:
        raise StaleRequest("this server runs no federated evaluation")
    rounds.evaluation.report(device.device_id, report.task_id, report.round, metrics)
