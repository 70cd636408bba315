"""Tasks: what a federation trains. A task is a model factory, a data schema, data
splits, and a train step and eval step.

Built-in tasks are named (``digits-mlp``, ``digits-cnn``, ``cifar10-resnet``,
``keywords-cnn``, ``har-cnn``, ``text-lora``); a user's task is loaded from
``package.module:attr``, where attr is a :class:`Task` or a function returning one.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import TaskError
from fedge.tasks.students import DEFAULT_CLASS, Student, check_students

if TYPE_CHECKING:
    import torch
    from torch import nn

    TrainStep = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer], float]
    EvalStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[float, int]]


@dataclass(frozen=True)
class DataSchema:
    """What one example looks like.

    input_shape: the shape of one example's input, without the batch axis.
    labels: class names; a label's value is its index here.
    label_column: the CSV column (and JSON Lines key) holding the label.
    image_size: (height, width) images are resized to; None infers it from input_shape
        ((C, H, W), (H, W), or a square (N,)).
    image_mode: the Pillow mode images are converted to ("L" grayscale, "RGB").
    pixel_scale: what a pixel value is multiplied by (1/255 maps 0..255 onto 0..1).
    allow_nan: whether NaN or infinite input values are acceptable.
    raw_range: the range of an image's raw pixel values (the digits' 4-bit intensities
        are 0..16), written in the edge manifest for runtimes that prepare raw inputs.
    normalize: per-channel (mean, std) applied after pixel_scale, or None.
    raw_kind: what the edge manifest calls a raw input, "image" or "tensor" (a sensor
        window, audio features); None decides by the shape (see raw_is_image).
    """

    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    input_dtype: str = "float32"
    label_column: str = "label"
    image_size: tuple[int, int] | None = None
    image_mode: str = "L"
    pixel_scale: float = 1.0 / 255.0
    allow_nan: bool = False
    raw_range: tuple[float, float] = (0.0, 255.0)
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    raw_kind: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def image_hw(self) -> tuple[int, int] | None:
        """(height, width) of the schema's images: given, or read off its input shape
        ((C, H, W), (H, W) or a square (N,)); None when the inputs are not images."""
        if self.image_size is not None:
            return self.image_size
        shape = self.input_shape
        if len(shape) == 3:  # (C, H, W) as torch lays images out
            return shape[1], shape[2]
        if len(shape) == 2:
            return shape[0], shape[1]
        if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
            return math.isqrt(shape[0]), math.isqrt(shape[0])
        return None

    def raw_is_image(self) -> bool:
        """Whether a raw input is an image: raw_kind says so, or (raw_kind None) an
        image_size is given or the input is laid out (C, H, W) with 1, 3 or 4 channels."""
        if self.raw_kind is not None:
            return self.raw_kind == "image"
        shape = self.input_shape
        return self.image_size is not None or (len(shape) == 3 and shape[0] in (1, 3, 4))

    def preprocessing(self) -> dict[str, Any]:
        """How a raw input becomes the model's input, as plain data (the edge manifest's
        ``input.preprocessing``; applied by ``fedge.edge.runtime.inputs.prepare``)."""
        if not self.raw_is_image():
            return {"raw": {"kind": "tensor", "shape": list(self.input_shape),
                            "dtype": self.input_dtype},
                    "steps": [{"op": "cast", "dtype": self.input_dtype}]}
        return self.image_preprocessing()

    def image_preprocessing(self) -> dict[str, Any]:
        """How a raw image becomes the model's input (what the device's image reader
        applies to image files, whatever the raw kind)."""
        size = self.image_hw()
        if size is None:
            raise TaskError(f"the input shape {list(self.input_shape)} is not an image; "
                            "give the schema an image_size")
        channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(self.image_mode, 1)
        layout = "HW" if channels == 1 else "HWC"
        steps: list[dict[str, Any]] = [{"op": "scale", "factor": self.pixel_scale}]
        if self.normalize is not None:
            steps.append({"op": "normalize", "mean": list(self.normalize[0]),
                          "std": list(self.normalize[1])})
        shape = self.input_shape
        if channels > 1 and len(shape) == 3 and shape[0] == channels:
            steps.append({"op": "transpose", "axes": [2, 0, 1]})  # HWC -> CHW
        steps += [{"op": "reshape", "shape": list(shape)},
                  {"op": "cast", "dtype": self.input_dtype}]
        return {"raw": {"kind": "image", "mode": self.image_mode, "height": size[0],
                        "width": size[1], "layout": layout, "dtype": "uint8",
                        "range": list(self.raw_range)},
                "steps": steps}

    def check(self, x: np.ndarray, y: np.ndarray, where: str) -> None:
        """Raises TaskError unless x and y are a batch of examples of this schema."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise TaskError(f"{where}: inputs have shape {list(x.shape[1:])} per example, "
                            f"the task expects {list(self.input_shape)}")
        if len(x) != len(y):
            raise TaskError(f"{where}: {len(x)} inputs but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise TaskError(f"{where}: labels must lie in 0..{self.num_classes - 1}")


@dataclass(frozen=True)
class Splits:
    """A task's data: the pool clients share out, a fixed test split, and an optional
    proxy slice that no client holds (server-side, for distillation)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    proxy_x: np.ndarray | None = None
    proxy_y: np.ndarray | None = None


@dataclass(frozen=True)
class TrainDefaults:
    """Local training settings used unless the server's config overrides them."""

    epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    momentum: float = 0.9


# The default steps import torch when first called, not when a Task is made: an
# inference-only device (no torch) loads a task for its data schema alone.
def _classification_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                               optimizer: torch.optim.Optimizer) -> float:
    from fedge.tasks.training import classification_train_step

    return classification_train_step(model, x, y, optimizer)


def _classification_eval_step(model: nn.Module, x: torch.Tensor,
                              y: torch.Tensor) -> tuple[float, int]:
    from fedge.tasks.training import classification_eval_step

    return classification_eval_step(model, x, y)


def _default_train_step() -> TrainStep:
    return _classification_train_step


def _default_eval_step() -> EvalStep:
    return _classification_eval_step


@dataclass(frozen=True)
class Task:
    """A federated learning task.

    build_model: returns a fresh torch model (same parameter names and shapes each call).
    load_data: returns the task's Splits; the server evaluates on the test split.
    train_step: one optimisation step on a batch, returning the loss.
    eval_step: (summed loss, number correct) on a batch.
    build_student: a smaller model for edge distillation, when the task has one.
    students: edge students per device class (fedge.tasks.students), in the order a
        device's capabilities are matched; when given, build_student is not used.
    """

    name: str
    schema: DataSchema
    build_model: Callable[[], nn.Module]
    load_data: Callable[[], Splits]
    defaults: TrainDefaults = TrainDefaults()
    train_step: TrainStep = field(default_factory=_default_train_step)
    eval_step: EvalStep = field(default_factory=_default_eval_step)
    build_student: Callable[[], nn.Module] | None = None
    description: str = ""
    students: tuple[Student, ...] = ()

    def __post_init__(self) -> None:
        check_students(self.students)

    def student_classes(self) -> tuple[Student, ...]:
        """The task's edge students by device class: its students, or build_student as
        the one class every device falls in (none without a student)."""
        if self.students:
            return self.students
        if self.build_student is None:
            return ()
        return (Student(DEFAULT_CLASS, self.build_student),)


def builtin_tasks() -> dict[str, Callable[[], Task]]:
    from fedge.tasks import activity, cifar10, digits, keywords, lora_text

    return {"digits-mlp": digits.mlp_task, "digits-cnn": digits.cnn_task,
            "cifar10-resnet": cifar10.resnet_task, "keywords-cnn": keywords.cnn_task,
            "har-cnn": activity.cnn_task, "text-lora": lora_text.lora_task}


def load_task(spec: str) -> Task:
    """Returns the built-in task named spec, or loads ``package.module:attr``."""
    builtins = builtin_tasks()
    if spec in builtins:
        return builtins[spec]()
    if ":" not in spec:
        raise TaskError(f"unknown task {spec!r}: use a built-in task "
                        f"({', '.join(sorted(builtins))}) or 'package.module:attr'")
    module_name, _, attr = spec.partition(":")
    # Like `python -m`, let a task module in the working directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"cannot import task module {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise TaskError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not isinstance(obj, Task) and callable(obj):
        obj = obj()
    if not isinstance(obj, Task):
        raise TaskError(f"{spec} is a {type(obj).__name__}, not a fedge.tasks.Task "
                        "or a function returning one")
    return obj
