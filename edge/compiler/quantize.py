"""int8 quantisation with onnxruntime: static QDQ with per-channel weights, calibrated on
the proxy set; dynamic quantisation (weights int8, activations quantised at run time) as
the fallback where static quantisation fails."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from fedge.edge.compiler.export import INPUT_NAME, make_portable

log = logging.getLogger(__name__)


class ProxyReader(CalibrationDataReader):
    """Feeds calibration batches of x to the quantiser."""

    def __init__(self, x: np.ndarray, batch_size: int = 64) -> None:
        self._batches = iter([{INPUT_NAME: np.ascontiguousarray(x[i:i + batch_size])}
                              for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def int8_weights(model_bytes: bytes) -> int:
    """How many of the model's initialisers hold int8 values."""
    model = onnx.load_from_string(model_bytes)
    return sum(init.data_type == onnx.TensorProto.INT8 for init in model.graph.initializer)


def drop_output_requantization(model_bytes: bytes) -> bytes:
    """The model without the QuantizeLinear -> DequantizeLinear pair on its outputs.

    The quantiser rounds the logits to 8 bits and back: that costs accuracy (close
    logits tie) and, at batch 1, two more kernels than the fp32 model runs. Without the
    pair, onnxruntime fuses the last layer into a QGemm with a float output.
    """
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    drop = []
    for output in graph.output:
        dq = producer.get(output.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" \
            else None
        if dq is None or q is None or q.op_type != "QuantizeLinear":
            continue
        if consumers.get(q.output[0], 0) != 1 or consumers.get(q.input[0], 0) != 1:
            continue  # the quantised value is used elsewhere too: keep it
        source = producer.get(q.input[0])
        if source is None:
            continue
        source.output[list(source.output).index(q.input[0])] = output.name
        drop += [q, dq]
    for node in drop:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)  # the dropped pair's scale and zero point
    return model.SerializeToString()


class _PreprocessTip(logging.Filter):
    """Drops onnxruntime's "consider pre-processing before quantization" tip, which
    it logs on the root logger on every call: our exporter's graphs need no shape
    inference pass, and the tip would print at WARNING in every `fedge simulate`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(fp32: bytes, calibration: np.ndarray) -> tuple[bytes, str]:
    """The int8 model and how it was quantised ("static-qdq" or "dynamic")."""
    with tempfile.TemporaryDirectory(prefix="fedge-quant-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(fp32)
        method = "static-qdq"
        tip = _PreprocessTip()
        logging.getLogger().addFilter(tip)
        try:
            quantize_static(source, target, ProxyReader(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
        except Exception as exc:  # the quantiser raises assorted errors on unsupported ops
            log.warning("static quantisation failed (%s); falling back to dynamic", exc)
            method = "dynamic"
            quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(tip)
        quantized = make_portable(drop_output_requantization(target.read_bytes()))
    if int8_weights(quantized) == 0:
        raise RuntimeError("quantisation left no int8 weights in the model")
    return quantized, method
