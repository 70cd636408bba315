"""A digits task with two edge students, one per device class (for the tests)."""

from __future__ import annotations

import dataclasses

from torch import nn

from fedge.tasks import Task
from fedge.tasks.digits import mlp_student, mlp_task
from fedge.tasks.students import Student


def board_student() -> nn.Module:
    """The larger student, for devices that report memory: 64-48-10 (3,610 parameters)."""
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def class_task() -> Task:
    """digits-mlp with a "board" class (any device reporting memory, matched first) and a
    "tiny" class (any device)."""
    return dataclasses.replace(
        mlp_task(), name="digits-classes",
        students=(Student("board", board_student, min_memory_bytes=1),
                  Student("tiny", mlp_student)))
