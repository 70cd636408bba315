"""The int8 variants onnxruntime's quantiser offers, timed against the fp32 student: what
bench/edge.py tries before it says int8 misses its target on a task.

Each variant quantises the same fp32 ONNX student on the same calibration set; only the
option named changes from what the server ships (static QDQ, per-channel int8 weights,
uint8 activations, every operator quantised).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from fedge.edge.compiler.export import make_portable
from fedge.edge.compiler.measure import latencies_ms
from fedge.edge.compiler.quantize import ProxyReader, drop_output_requantization

SHIPPED: dict[str, Any] = dict(quant_format=QuantFormat.QDQ, per_channel=True,
                               weight_type=QuantType.QInt8,
                               activation_type=QuantType.QUInt8)
# name -> the quantize_static arguments that differ from SHIPPED ("first op fp32" leaves
# the first Conv or Gemm, the one reading the raw input, in float).
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped (QDQ, per-channel)": {},
    "per-tensor weights": dict(per_channel=False),
    "QOperator format": dict(quant_format=QuantFormat.QOperator),
    "uint8 weights (U8U8)": dict(weight_type=QuantType.QUInt8, per_channel=False),
    "first op fp32": dict(first_fp32=True),
}


def quantize_variant(fp32: bytes, calibration: np.ndarray, **changes: Any) -> bytes:
    """fp32 quantised with SHIPPED's arguments, changes applied."""
    options = {**SHIPPED, **changes}
    exclude: list[str] = []
    if options.pop("first_fp32", False):
        graph = onnx.load_from_string(fp32).graph
        exclude = [next(n.name for n in graph.node if n.op_type in ("Conv", "Gemm"))]
    with tempfile.TemporaryDirectory(prefix="fedge-quant-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(fp32)
        quantize_static(source, target, ProxyReader(calibration), nodes_to_exclude=exclude,
                        **options)
        quantized = target.read_bytes()
    if options["quant_format"] == QuantFormat.QDQ:
        quantized = drop_output_requantization(quantized)
    return make_portable(quantized)


def int8_options(fp32: bytes, calibration: np.ndarray, x: np.ndarray,
                 calls: int = 300) -> dict[str, float]:
    """Each variant's throughput on batch x over the fp32 model's (> 1: int8 is faster),
    all timed in one round robin."""
    models = [fp32] + [quantize_variant(fp32, calibration, **v) for v in VARIANTS.values()]
    times = latencies_ms(models, x, calls=calls)
    return {name: times[0] / t for name, t in zip(VARIANTS, times[1:], strict=True)}
