"""The image task's edge student is shaped for int8 (issue 16): it exports, quantises to
a checked ONNX model that onnxruntime runs, and onnxruntime's optimised int8 graph keeps
every layer in integers from the input's quantisation to the float-output QGemm (the
previous student's ReduceMean pool forced a dequantise, a float mean and a requantise,
part of why its int8 model was slower than its fp32 one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from fedge.edge.compiler.export import INPUT_NAME, export_onnx
from fedge.edge.compiler.quantize import int8_weights, quantize_int8
from fedge.tasks import load_task

# The float operators the int8 graph may hold: the input's quantisation and the layout
# and shape glue around the integer kernels.
GLUE = {"QuantizeLinear", "Transpose", "Reshape"}


def test_the_image_student_quantises_to_an_all_integer_graph(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    task = load_task("cifar10-resnet")
    splits = task.load_data()
    assert task.build_student is not None and splits.proxy_x is not None
    torch.manual_seed(0)
    student = task.build_student()
    fp32 = export_onnx(student.eval(), splits.test_x[:2])
    int8, method = quantize_int8(fp32, splits.proxy_x[:64])
    assert method == "static-qdq" and int8_weights(int8) > 0
    onnx.checker.check_model(onnx.load_from_string(int8), full_check=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    session = ort.InferenceSession(int8, options, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(splits.test_x[:32])
    (logits,) = session.run(None, {INPUT_NAME: x})
    assert np.asarray(logits).shape == (32, task.schema.num_classes)
    with torch.no_grad():
        expected = student(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert float((np.asarray(logits).argmax(axis=1) == expected).mean()) >= 0.8

    ops = [node.op_type for node in onnx.load(tmp_path / "optimised.onnx").graph.node]
    assert ops[0] == "QuantizeLinear" and ops[-1] == "QGemm", ops
    assert {op for op in ops if not op.startswith("QLinear")} <= GLUE | {"QGemm"}, ops
