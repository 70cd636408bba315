"""The realistic tasks' teachers and students go through the edge compiler: export to
ONNX (conv1d and conv2d inputs, a dynamic batch), static QDQ int8 quantisation with int8
weights, and an int8 student that predicts as its fp32 self does."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fedge.edge.compiler.distill import DistillSettings, distill, proxy_batches
from fedge.edge.compiler.export import INPUT_NAME, export_onnx, max_abs_diff
from fedge.edge.compiler.quantize import int8_weights, quantize_int8
from fedge.tasks import load_task


def _predict(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(x)})
    return np.asarray(logits)


@pytest.mark.slow  # torch's ONNX exporter takes seconds a model
@pytest.mark.parametrize("name", ["cifar10-resnet", "keywords-cnn", "har-cnn"])
def test_the_student_exports_to_static_int8(name: str) -> None:
    torch.set_num_threads(1)
    task = load_task(name)
    splits = task.load_data()
    assert task.build_student is not None and splits.proxy_x is not None
    torch.manual_seed(0)
    student = task.build_student()
    # A short supervised fit on the training set, so that predictions mean something.
    distill(None, student, proxy_batches(splits.train_x, splits.train_y,
                                         DistillSettings(steps=60, batch_size=64)),
            DistillSettings(steps=60, batch_size=64))
    test_x, test_y = splits.test_x, splits.test_y
    fp32 = export_onnx(student, test_x[:2])
    assert max_abs_diff(student, fp32, test_x[:64]) < 1e-3  # any batch size runs
    int8, method = quantize_int8(fp32, splits.proxy_x)
    assert method == "static-qdq" and int8_weights(int8) > 0
    assert len(int8) < len(fp32)
    fp32_pred = _predict(fp32, test_x).argmax(axis=1)
    int8_pred = _predict(int8, test_x).argmax(axis=1)
    fp32_acc = float((fp32_pred == test_y).mean())
    assert fp32_acc > 1.5 / task.schema.num_classes  # the fit learned something
    assert float((int8_pred == fp32_pred).mean()) >= 0.85
    assert float((int8_pred == test_y).mean()) >= fp32_acc - 0.1

    if name == "cifar10-resnet":  # the teacher with group norm and residuals exports too
        teacher = task.build_model()
        assert max_abs_diff(teacher, export_onnx(teacher, test_x[:2]), test_x[:8]) < 1e-3
