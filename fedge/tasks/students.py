"""Students per device class: a task may ship a different edge student to different
kinds of device (a tiny one for low-memory sensors, a larger one for Pi-class boards).

A device's class is the label its operator gave it (``fedge client --device-class
NAME``), or else the first of the task's classes whose needs its capabilities meet
(memory, accelerator). List the largest student first and end with one that needs
nothing, so that every device gets some artifact. See docs/device-classes.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedge.errors import TaskError

if TYPE_CHECKING:
    from torch import nn

# The class of a task that names one student (Task.build_student) and no classes.
DEFAULT_CLASS = "default"


@dataclass(frozen=True)
class Student:
    """One edge student and the devices it is built for.

    name: the device class (a label an operator may give a device; in the manifest).
    build: returns a fresh student model (the task's model distils into it).
    min_memory_bytes: devices reporting less memory (or none) do not fit (0: any).
    accelerator: a prefix the device's accelerator must start with ("cuda"); "": any.
    """

    name: str
    build: Callable[[], nn.Module]
    min_memory_bytes: int = 0
    accelerator: str = ""

    def fits(self, memory_bytes: int, accelerator: str) -> bool:
        """Whether a device with these capabilities meets this class's needs."""
        return (memory_bytes >= self.min_memory_bytes
                and accelerator.startswith(self.accelerator))


def check_students(students: Sequence[Student]) -> None:
    """Raises TaskError unless the class names are distinct, non-empty and plain."""
    names = [s.name for s in students]
    if len(set(names)) != len(names):
        raise TaskError(f"device classes must have distinct names, got {names}")
    for name in names:
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise TaskError(f"device class {name!r}: use 1 to 64 letters, digits, '-', '_' "
                            "or '.'")


def pick_class(students: Sequence[Student], memory_bytes: int, accelerator: str,
               label: str = "") -> Student | None:
    """The class of a device: the one its label names, else the first it fits (None:
    it fits none). Raises TaskError for a label that names no class of the task."""
    if label:
        for student in students:
            if student.name == label:
                return student
        raise TaskError(f"device class {label!r} is not one of the task's: "
                        f"{', '.join(s.name for s in students)}")
    return next((s for s in students if s.fits(memory_bytes, accelerator)), None)
