"""Picking a device's edge class from its label or its capabilities."""

from __future__ import annotations

import pytest

from fedge.errors import TaskError
from fedge.tasks import Task, load_task
from fedge.tasks.students import DEFAULT_CLASS, Student, pick_class


def _model() -> None:
    return None


CLASSES = (Student("gpu", _model, min_memory_bytes=4 << 30, accelerator="cuda"),  # type: ignore[arg-type]
           Student("pi", _model, min_memory_bytes=1 << 30),  # type: ignore[arg-type]
           Student("tiny", _model))  # type: ignore[arg-type]


@pytest.mark.parametrize(("memory", "accelerator", "label", "expected"), [
    (8 << 30, "cuda:NVIDIA H100", "", "gpu"),
    (8 << 30, "cpu", "", "pi"),       # memory enough for gpu, but no CUDA
    (2 << 30, "cuda:Jetson", "", "pi"),  # CUDA, but too little memory for gpu
    (256 << 20, "cpu", "", "tiny"),
    (0, "none (inference only)", "", "tiny"),  # says nothing: the class needing nothing
    (8 << 30, "cuda:NVIDIA H100", "tiny", "tiny"),  # the operator's label wins
])
def test_the_label_else_the_first_class_the_capabilities_fit(
        memory: int, accelerator: str, label: str, expected: str) -> None:
    picked = pick_class(CLASSES, memory, accelerator, label)
    assert picked is not None and picked.name == expected


def test_a_device_that_fits_no_class_gets_none_and_an_unknown_label_is_an_error() -> None:
    assert pick_class(CLASSES[:2], 1 << 20, "cpu") is None
    with pytest.raises(TaskError, match="'phone' is not one of the task's: gpu, pi, tiny"):
        pick_class(CLASSES, 8 << 30, "cpu", "phone")


def test_a_task_with_one_student_has_one_default_class_and_names_are_checked() -> None:
    task = load_task("digits-mlp")
    (only,) = task.student_classes()
    assert only.name == DEFAULT_CLASS and only.build is task.build_student
    with pytest.raises(TaskError, match="distinct"):
        Task(task.name, task.schema, task.build_model, task.load_data,
             students=(CLASSES[2], CLASSES[2]))
    with pytest.raises(TaskError, match="letters, digits"):
        Task(task.name, task.schema, task.build_model, task.load_data,
             students=(Student("no spaces", _model),))  # type: ignore[arg-type]
