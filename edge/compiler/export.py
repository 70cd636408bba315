"""torch -> ONNX with a dynamic batch axis, written so that older onnxruntimes load it.

torch's exporter writes IR version 10, and onnxruntime's quantiser can add opset imports
no node uses; onnxruntime 1.17 refuses both. :func:`make_portable` rewrites the IR
version and drops unused imports (after checking that nothing needs the newer IR).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 18  # the exporter's lowest; onnxruntime supports it since 1.14
IR_VERSION = 9  # what onnxruntime 1.15 .. 1.17 accept (IR 10 came with 1.18's ONNX 1.16)
MIN_ONNXRUNTIME = "1.17"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Types IR 10 introduced; a model holding them cannot be rewritten down to IR 9.
_IR10_TYPES = {onnx.TensorProto.UINT4, onnx.TensorProto.INT4}


# What the exporter logs on every export and a user can do nothing about: a warning per
# torchvision op it skips when torchvision is absent (as it is for us), and its graph
# passes' INFO lines, about thirty of them, in every server log that builds an artifact.
_EXPORTER_CHATTER = {"torch.onnx._internal.exporter._registration": logging.ERROR,
                     "onnxscript": logging.WARNING, "onnx_ir": logging.WARNING}


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = {name: logging.getLogger(name) for name in _EXPORTER_CHATTER}
    saved = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(_EXPORTER_CHATTER[name])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(saved[name])


def export_onnx(model: nn.Module, example: np.ndarray) -> bytes:
    """model as portable ONNX bytes, input ``input`` [batch, ...], output ``logits``."""
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            model, (torch.from_numpy(np.ascontiguousarray(example)),), None,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},), opset_version=OPSET, external_data=False,
            dynamo=True, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return make_portable(program.model_proto.SerializeToString())


def make_portable(model_bytes: bytes) -> bytes:
    """The model with IR version 9 and only the opset imports its nodes use, checked."""
    model = onnx.load_from_string(model_bytes)
    for init in model.graph.initializer:
        if init.data_type in _IR10_TYPES:
            raise ValueError(f"initializer {init.name} is 4-bit, which IR 9 cannot hold")
    used = {node.domain or "" for node in model.graph.node}
    for function in model.functions:
        used |= {node.domain or "" for node in function.node}
    keep = [op for op in model.opset_import if (op.domain or "") in used or op.domain == ""]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.ir_version = min(model.ir_version, IR_VERSION)
    # The exporter's per-node provenance (names, stack traces) is a third of the bytes
    # of a small model and tells a device nothing.
    entry: Any
    for entry in [*model.graph.node, *model.graph.input, *model.graph.output,
                  *model.graph.value_info, *model.graph.initializer]:
        del entry.metadata_props[:]
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def max_abs_diff(model: nn.Module, onnx_bytes: bytes, x: np.ndarray) -> float:
    """Largest absolute difference between torch's and onnxruntime's outputs on x."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(x)})
    return float(np.max(np.abs(expected - actual)))
