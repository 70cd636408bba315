"""The Task message a device's poll is answered with: what to do, and for TRAIN how
(the round's settings, what the strategy asks of devices, a secure round's parameters)."""

from __future__ import annotations

from typing import Any

from fedge.protos import fedge_pb2
from fedge.server.round_state import RoundSettings
from fedge.server.rounds import TaskView
from fedge.server.secure_round import SecureRound
from fedge.wire import ENCODINGS, UPDATE_KINDS


def task_message(view: TaskView, settings: RoundSettings, client_config: dict[str, Any],
                 secure: SecureRound | None) -> fedge_pb2.Task:
    """The Task proto of a poll's answer."""
    kind = view.kind  # protobuf takes an enum's name
    a = view.assignment
    if a is None:
        return fedge_pb2.Task(kind=kind, model_version=view.model_version,
                              retry_after_seconds=view.retry_after_s, message=view.message,
                              artifact_sha256=view.artifact_sha256, task_id=view.task_id,
                              round=view.round, evaluate_global=view.evaluate_global,
                              canary=view.canary, canary_margin=view.canary_margin)
    s = settings
    train = fedge_pb2.TrainConfig(
        epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
        update_kind=UPDATE_KINDS[s.update_kind], encoding=ENCODINGS[s.encoding],
        seed=a.seed, topk_fraction=s.topk_fraction, momentum=s.momentum)
    for key, value in client_config.items():
        setattr(train, key, value)  # what the strategy asks of devices
    if secure is not None:  # the device learns here that the round is secure, and its roster
        train.secure.CopyFrom(secure.task_params(a.device_id))
    return fedge_pb2.Task(kind=kind, task_id=a.task_id, round=a.round,
                          model_version=view.model_version, train=train,
                          deadline_unix=a.deadline)
