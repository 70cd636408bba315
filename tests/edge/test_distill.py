"""Distillation with scarce labels: a small proxy set, few of its examples labelled."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fedge.edge.compiler.distill import UNLABELLED, DistillSettings, distill, proxy_batches
from fedge.edge.compiler.export import export_onnx
from fedge.tasks import load_task
from fedge.tasks.training import evaluate, load_weights
from tests.edge.conftest import Built


def test_distilling_the_federated_teacher_beats_training_from_scratch(built: Built) -> None:
    """60 proxy examples of which 20 carry a label, the same steps and seed for both:
    the student taught by the teacher must clearly beat the one trained on the labels."""
    task, splits = built.task, built.splits
    assert splits.proxy_x is not None and splits.proxy_y is not None
    x = splits.proxy_x[:60]
    y = np.full(60, UNLABELLED, dtype=np.int64)
    y[:20] = splits.proxy_y[:20]
    settings = DistillSettings(steps=200, seed=0)
    teacher = task.build_model()
    load_weights(teacher, built.teacher)

    accuracy = {}
    for name, guide in (("distilled", teacher), ("scratch", None)):
        torch.manual_seed(0)
        student = task.build_student() if task.build_student else None
        assert student is not None
        distill(guide, student, proxy_batches(x, y, settings), settings)
        accuracy[name] = evaluate(task, student, splits.test_x, splits.test_y)["accuracy"]
    teacher_accuracy = evaluate(task, teacher, splits.test_x, splits.test_y)["accuracy"]
    assert accuracy["distilled"] >= accuracy["scratch"] + 0.05, accuracy
    assert accuracy["distilled"] >= teacher_accuracy - 0.08, (accuracy, teacher_accuracy)


def test_unlabelled_batches_teach_only_with_a_teacher(built: Built) -> None:
    task, splits = built.task, built.splits
    assert splits.proxy_x is not None
    settings = DistillSettings(steps=5, seed=1)
    student = task.build_student() if task.build_student else None
    assert student is not None
    before = [p.detach().clone() for p in student.parameters()]
    result = distill(None, student, proxy_batches(splits.proxy_x, None, settings), settings)
    assert result["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_export_keeps_the_exporters_chatter_out_of_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """The exporter logs a warning per torchvision op it skips and ~30 INFO lines of
    graph passes on every export; a server log must not fill with them."""
    student = load_task("digits-mlp").build_student
    assert student is not None
    with caplog.at_level(logging.INFO):
        onnx_bytes = export_onnx(student(), np.zeros((2, 64), np.float32))
    assert onnx_bytes
    chatter = [r for r in caplog.records
               if r.name.startswith(("torch.onnx", "onnxscript", "onnx_ir"))]
    assert chatter == [], [r.getMessage() for r in chatter[:3]]
    assert logging.getLogger("onnx_ir").level == logging.NOTSET  # restored afterwards
