"""Building a signed edge artifact from a global model: distil, export, quantise,
measure, sign, write.

The artifact directory holds ``model.onnx`` (the int8 student) and ``manifest.json``
(see edge.runtime.artifact); ``build.json`` beside them records what the build measured
(sizes, accuracies, latencies, torch-vs-onnxruntime differences) and is not shipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from fedge.edge.compiler.distill import DistillSettings, distill, proxy_batches
from fedge.edge.compiler.export import (
    INPUT_NAME,
    IR_VERSION,
    MIN_ONNXRUNTIME,
    OPSET,
    OUTPUT_NAME,
    export_onnx,
    max_abs_diff,
)
from fedge.edge.compiler.keys import SigningKey
from fedge.edge.compiler.measure import batch_of, latencies_ms
from fedge.edge.compiler.quantize import quantize_int8
from fedge.edge.runtime.artifact import FORMAT, MANIFEST_FILE, ArtifactFiles, write_artifact
from fedge.errors import FedgeError
from fedge.tasks import Task
from fedge.tasks.students import DEFAULT_CLASS, Student
from fedge.tasks.training import evaluate, load_weights

log = logging.getLogger(__name__)

REPORT_FILE = "build.json"


@dataclass(frozen=True)
class BuildReport:
    """What building an artifact measured. fp32 latency is the teacher's fp32 ONNX,
    int8 the shipped student; latencies are one-thread onnxruntime, the 10th percentile
    of round-robin call times (see edge.compiler.measure)."""

    round: int
    artifact: str
    teacher_params: int
    student_params: int
    fp32_onnx_bytes: int
    student_fp32_onnx_bytes: int
    int8_onnx_bytes: int
    teacher_accuracy: float
    student_fp32_accuracy: float
    int8_accuracy: float
    max_abs_diff_teacher: float
    max_abs_diff_student: float
    latency_ms_batch1_fp32: float
    latency_ms_batch1_int8: float
    latency_ms_batch256_fp32: float
    latency_ms_batch256_int8: float
    quantization: str
    proxy_examples: int
    seconds: float
    onnxruntime: str = field(default=onnxruntime.__version__)
    device_class: str = DEFAULT_CLASS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_report(directory: str | Path) -> dict[str, Any]:
    """The build.json of an artifact directory."""
    return dict(json.loads((Path(directory) / REPORT_FILE).read_text()))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _onnx_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(x)})
    return float((np.asarray(logits).argmax(axis=1) == y).mean())


def io_fields(task: Task) -> dict[str, Any]:
    """The manifest's ``input`` and ``output`` entries for a model of task."""
    return {
        "input": {"name": INPUT_NAME, "shape": ["batch", *task.schema.input_shape],
                  "dtype": task.schema.input_dtype,
                  # Plain data, so a runtime in any language can prepare raw inputs
                  # (fedge.edge.runtime.inputs is the reference).
                  "preprocessing": task.schema.preprocessing()},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", task.schema.num_classes],
                   "meaning": "class logits; the predicted class is the argmax, an index "
                              "into labels",
                   "labels": list(task.schema.labels)},
    }


def build_artifact(task: Task, weights: Mapping[str, np.ndarray], round_: int,
                   key: SigningKey, out_dir: str | Path,
                   settings: DistillSettings | None = None,
                   student_class: Student | None = None) -> BuildReport:
    """Distils weights (the global model of round_) into the task's student, ships it as
    a signed int8 artifact in out_dir (replaced whole, atomically), and reports.

    student_class: the device class to build for (default: the task's first); its name
    goes into the manifest as ``device_class``.
    """
    started = time.perf_counter()
    classes = task.student_classes()
    if not classes:
        raise FedgeError(f"task {task.name} names no student model; edge artifacts need one")
    student_class = student_class or classes[0]
    splits = task.load_data()
    if splits.proxy_x is None or len(splits.proxy_x) == 0:
        raise FedgeError(f"task {task.name} has no proxy set to distil on")
    settings = settings or DistillSettings(seed=round_)
    teacher = task.build_model()
    load_weights(teacher, dict(weights))
    teacher.eval()
    torch.manual_seed(settings.seed)
    student = student_class.build()
    distill(teacher, student, proxy_batches(splits.proxy_x, splits.proxy_y, settings),
            settings)

    example = splits.test_x[:2]
    fp32 = export_onnx(teacher, example)
    student_fp32 = export_onnx(student, example)
    int8, method = quantize_int8(student_fp32, splits.proxy_x)
    test_x, test_y = splits.test_x, splits.test_y
    one, big = batch_of(test_x, 1), batch_of(test_x, 256)
    fp32_b1, int8_b1 = latencies_ms([fp32, int8], one, calls=2000)
    fp32_b256, int8_b256 = latencies_ms([fp32, int8], big, calls=200)
    int8_accuracy = _onnx_accuracy(int8, test_x, test_y)
    manifest = {
        "format": FORMAT,
        "task": task.name,
        "model_version": round_,
        "round": round_,
        "device_class": student_class.name,
        "model": {"file": "model.onnx", "sha256": hashlib.sha256(int8).hexdigest(),
                  "bytes": len(int8), "precision": "int8", "quantization": method,
                  "parameters": _params(student), "opset": OPSET, "ir_version": IR_VERSION},
        **io_fields(task),
        "accuracy": {"int8": int8_accuracy, "split": "the task's test split",
                     "examples": len(test_y)},
        "min_runtime": {"onnxruntime": MIN_ONNXRUNTIME},
    }
    manifest = key.sign_manifest(manifest)
    files = ArtifactFiles(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n",
                          int8)
    report = BuildReport(
        round=round_, artifact=str(out_dir), teacher_params=_params(teacher),
        student_params=_params(student), fp32_onnx_bytes=len(fp32),
        student_fp32_onnx_bytes=len(student_fp32), int8_onnx_bytes=len(int8),
        teacher_accuracy=evaluate(task, teacher, test_x, test_y)["accuracy"],
        student_fp32_accuracy=_onnx_accuracy(student_fp32, test_x, test_y),
        int8_accuracy=int8_accuracy,
        max_abs_diff_teacher=max_abs_diff(teacher, fp32, test_x),
        max_abs_diff_student=max_abs_diff(student, student_fp32, test_x),
        latency_ms_batch1_fp32=fp32_b1, latency_ms_batch1_int8=int8_b1,
        latency_ms_batch256_fp32=fp32_b256, latency_ms_batch256_int8=int8_b256,
        quantization=method, proxy_examples=len(splits.proxy_x),
        seconds=time.perf_counter() - started, device_class=student_class.name)
    _write_atomically(files, Path(out_dir), report)
    log.info("edge artifact of round %d for class %s: %d -> %d bytes, accuracy teacher "
             "%.4f int8 %.4f, %.1f s", round_, student_class.name, report.fp32_onnx_bytes,
             report.int8_onnx_bytes, report.teacher_accuracy, report.int8_accuracy,
             report.seconds)
    return report


def _write_atomically(files: ArtifactFiles, out: Path, report: BuildReport) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write_artifact(files, staging)
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        for name in (MANIFEST_FILE, "model.onnx", REPORT_FILE):
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
