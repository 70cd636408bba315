"""The tasks a poll hands out besides a round's TRAIN: DEPLOY (a new edge artifact, to
canaries first: fedge.server.rollout), ROLLBACK (from a halted one) and EVALUATE
(federated evaluation, fedge.server.fleet_eval), in that order, so that a device
evaluates the edge model it was just offered; and the service's side of them."""

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
    deploy = rounds.deploy
    if deploy is not None:
        shipped = deploy.offer(device.device_id, device.device_class,
                               lambda d, r: _reported(rounds, d, r))
        gate = deploy.gate
        if shipped is not None:
            canary = gate is not None and gate.is_canary(device.device_id, shipped.round)
            return TaskView("DEPLOY", model_version=shipped.round,
                            artifact_sha256=shipped.sha256, canary=canary,
                            canary_margin=gate.margin if gate is not None else 0.0,
                            message=f"install the edge artifact of round {shipped.round}"
                            + (" as a canary" if canary else ""))
        back = gate.rollback_view(device) if gate is not None else None
        if back is not None:
            return back
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
    """A new edge artifact can be handed out: starts its canary stage, or (without
    canaries) opens the evaluation of the edge models (devices are offered the artifact
    first); then wakes the polls."""
    deploy = rounds.deploy
    if deploy is not None and deploy.latest is not None:
        if deploy.gate is not None:
            deploy.gate.begin(deploy.latest.round, rounds.registry.live())
        else:
            _evaluate_edge(rounds, deploy.latest.round)
    rounds.wake()


def rollout_settled(rounds: Rounds, round_: int, promoted: bool) -> None:
    """An artifact's canary stage ended: once promoted, the edge models are evaluated
    (the fleet is offered it first); either way the polls are woken."""
    if promoted:
        _evaluate_edge(rounds, round_)
    rounds.wake()


def _evaluate_edge(rounds: Rounds, round_: int) -> None:
    evaluation = rounds.evaluation
    if evaluation is not None:
        with rounds.cond:
            evaluation.open(round_, min(round_, rounds.model_version),
                            rounds.registry.live(), evaluate_global=False)


def edge_report(rounds: Rounds, device: Device, round_: int,
                metrics: dict[str, float]) -> None:
    """A device's report on the edge artifact of round_: the canary gate's input, and
    the version it runs after rolling back from it."""
    gate = rounds.deploy.gate if rounds.deploy is not None else None
    if gate is not None:
        gate.report(device.device_id, round_, metrics)
    if metrics.get("edge_rolled_back"):
        back_to = int(metrics.get("edge_round", 0))
        device.edge_model = str(back_to) if back_to > 0 else ""


def holdout_of(rounds: Rounds) -> float:
    """The share of their examples devices hold out of training (JoinReply): 0 without
    federated evaluation or canaries."""
    if rounds.evaluation is not None:
        return rounds.evaluation.holdout
    gate = rounds.deploy.gate if rounds.deploy is not None else None
    return 0.0 if gate is None else gate.holdout


def report_evaluation(rounds: Rounds, device: Device, report: fedge_pb2.MetricsReport,
                      metrics: dict[str, float]) -> None:
    """Records a device's answer to its EVALUATE task (refused if it has none open)."""
    if rounds.evaluation is None:
        raise StaleRequest("this server runs no federated evaluation")
    rounds.evaluation.report(device.device_id, report.task_id, report.round, metrics)


def operate_rollout(rounds: Rounds, request: fedge_pb2.RolloutRequest
                    ) -> fedge_pb2.RolloutReply:
    """An operator's promote or rollback of the newest edge artifact."""
    gate = rounds.deploy.gate if rounds.deploy is not None else None
    if gate is None:
        raise StaleRequest("this server runs no gated rollout (--canary-fraction)")
    gate.operate(request.action, request.reason)
    snap = gate.snapshot()
    return fedge_pb2.RolloutReply(rollout=fedge_pb2.RolloutStatus(**snap),
                                  message=f"artifact of round {snap['round']}: "
                                  f"{snap['stage']}")
