"""A device's own edge artifact: its personalized model as int8 ONNX, with a manifest
marked device-local and no signature.

The server never signed it, so no device may take it for the server's model: the
runtime installs only signed artifacts and opens this one only as device-local
(``fedge.edge.runtime.verify.verify_local``). There is no distillation (the device has
no proxy set): the personalized model itself is quantized, calibrated on the device's
own training examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge.compiler.artifact import io_fields
from fedge.edge.compiler.export import IR_VERSION, MIN_ONNXRUNTIME, OPSET, export_onnx
from fedge.edge.compiler.quantize import quantize_int8
from fedge.edge.runtime.artifact import FORMAT, ArtifactFiles, write_artifact
from fedge.edge.runtime.verify import LOCAL_ORIGIN
from fedge.tasks import Task
from fedge.tasks.training import load_weights


def build_local_artifact(task: Task, weights: Mapping[str, np.ndarray], round_: int,
                         out_dir: str | Path, calibration: np.ndarray,
                         device_id: str) -> dict[str, Any]:
    """Writes weights (a model of task, personalized from the global model of round_) as
    an unsigned, device-local int8 artifact in out_dir; returns its manifest."""
    model = task.build_model()
    load_weights(model, dict(weights))
    model.eval()
    fp32 = export_onnx(model, np.ascontiguousarray(calibration[:2]))
    int8, method = quantize_int8(fp32, np.ascontiguousarray(calibration))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "task": task.name,
        "model_version": round_,
        "round": round_,
        # What the runtime checks: never signed, never the server's, this device's own.
        "origin": LOCAL_ORIGIN,
        "device_id": device_id,
        "note": "personalized on this device from the global model of this round; not "
                "signed by the server",
        "model": {"file": "model.onnx", "sha256": hashlib.sha256(int8).hexdigest(),
                  "bytes": len(int8), "precision": "int8", "quantization": method,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "opset": OPSET, "ir_version": IR_VERSION},
        **io_fields(task),
        "min_runtime": {"onnxruntime": MIN_ONNXRUNTIME},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    write_artifact(ArtifactFiles(text, int8), out_dir)
    return manifest
