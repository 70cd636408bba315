"""Limits on every string, map and number a device sends, checked before it is used
(and the update header's kind and encoding against the run's).

Without them the 4 MiB message cap is the only bound: one device's capability string
would make every Status reply too large to send, its metrics would fill the database, and
a CR/LF in a string would forge log lines. Each check raises
:class:`fedge.refusals.OverLimit` with a message that quotes at most a short prefix of
what was sent (:func:`fedge.refusals.quote`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedge.protos import fedge_pb2
from fedge.refusals import InvalidRequest, OverLimit, quote
from fedge.wire import ENCODINGS, UPDATE_KINDS, enum_name

if TYPE_CHECKING:
    from fedge.server.round_state import RoundSettings
    from fedge.tensors import Spec

TEXT_CHARS = 256  # a capability string, a task name
ID_CHARS = 128  # session and task ids (ours are 32 and 16 hex digits)
METRIC_KEY_CHARS = 256
HEADER_METRICS = 1024  # an update's training and data metrics (a label each, per task)
REPORT_METRICS = 64  # a ReportMetrics message (the daemon sends edge metrics: 4)
FINGERPRINT_TENSORS = 4096
JOIN_BYTES = 1 << 20  # fingerprints of 4096 tensors with 256-character names fit
# The largest count or round taken: far beyond any real one, far below int64's end, so
# sums and products of them stay exact in a float64.
MAX_COUNT = 1 << 50


def check_text(what: str, value: str, limit: int = TEXT_CHARS) -> str:
    """value, if at most limit characters, all printable (no CR, LF or escapes)."""
    if len(value) > limit:
        raise OverLimit(f"{what} is {len(value)} characters, over the limit of {limit}: "
                        f"{quote(value)}")
    if not value.isprintable():
        raise OverLimit(f"{what} holds control characters (line breaks, escapes): "
                        f"{quote(value)}")
    return value


def check_count(what: str, value: int, low: int = 0, high: int = MAX_COUNT) -> int:
    """value, if within low..high."""
    if not low <= value <= high:
        raise OverLimit(f"{what} must be in {low}..{high}, got {value}")
    return value


def check_metrics(metrics: Mapping[str, float], limit: int) -> dict[str, float]:
    """The metrics as a dict, if at most limit keys, each a bounded printable name with a
    finite value (a NaN cannot be stored, and an infinity is no measurement)."""
    if len(metrics) > limit:
        raise OverLimit(f"{len(metrics)} metrics, over the limit of {limit}")
    for key, value in metrics.items():
        check_text("a metric name", key, METRIC_KEY_CHARS)
        if not key:
            raise OverLimit("a metric name must not be empty")
        if not math.isfinite(value):
            raise OverLimit(f"metric {quote(key)} is {value}; metrics must be finite")
    return dict(metrics)


def check_join(request: fedge_pb2.JoinRequest, max_examples: int) -> None:
    """The bounds of a JoinRequest's fields (the device id has its own pattern)."""
    # First the whole message's size, counted by the protobuf runtime: a 4 MiB string is
    # refused before it is ever copied into a Python string.
    if request.ByteSize() > JOIN_BYTES:
        raise OverLimit(f"a join request of {request.ByteSize()} bytes, over the limit of "
                        f"{JOIN_BYTES}")
    check_text("the task name", request.task)
    check_text("previous_session", request.previous_session, ID_CHARS)
    if len(request.fingerprint) > FINGERPRINT_TENSORS:
        raise OverLimit(f"a fingerprint of {len(request.fingerprint)} tensors, over the "
                        f"limit of {FINGERPRINT_TENSORS}")
    for spec in request.fingerprint:
        check_text("a tensor name", spec.name)
        check_text("a tensor dtype", spec.dtype, 16)
        if len(spec.shape) > 16:
            raise OverLimit(f"tensor {quote(spec.name)} has {len(spec.shape)} dimensions, "
                            "over the limit of 16")
    caps = request.capabilities
    for name in ("accelerator", "platform", "runtime"):
        check_text(f"capability {name}", getattr(caps, name))
    check_count("capability memory_bytes", caps.memory_bytes)
    check_text("device_class", request.device_class, ID_CHARS)
    check_count("num_examples", request.num_examples, 0, max_examples)


def check_report(report: fedge_pb2.MetricsReport, latest: int,
                 num_examples: int) -> dict[str, float]:
    """The bounds of a MetricsReport: a round and model version that exist (at most the
    round in progress, latest + 1) and bounded, finite metrics; returns the metrics, held
    to what a device that joined with num_examples could have measured (`plausible`)."""
    check_count("round", report.round, 0, latest + 1)
    check_count("model_version", report.model_version, 0, latest)
    check_text("task_id", report.task_id, 128)
    return plausible(check_metrics(report.metrics, REPORT_METRICS), num_examples)


def check_update_header(header: fedge_pb2.UpdateHeader, settings: RoundSettings,
                        latest: int) -> dict[str, float]:
    """Refuses a header this run cannot take, before its task is looked at; returns
    its metrics, checked before anything is folded."""
    check_text("task_id", header.task_id, 128)
    check_count("round", header.round, 0, latest + 1)
    metrics = check_metrics(header.metrics, HEADER_METRICS)
    # Unspecified means WEIGHTS and F32, what devices sent before these existed.
    kind = header.kind or fedge_pb2.WEIGHTS
    encoding = header.encoding or fedge_pb2.F32
    if kind != UPDATE_KINDS[settings.update_kind]:
        raise InvalidRequest(f"this run takes {settings.update_kind} updates; the device "
                             f"sent {enum_name(fedge_pb2.UpdateKind, kind)}")
    if encoding != ENCODINGS[settings.encoding]:
        raise InvalidRequest(f"this run takes {settings.encoding}-encoded updates; the "
                             f"device sent {enum_name(fedge_pb2.Encoding, encoding)}")
    return metrics


def check_fingerprint(theirs: list[Spec], ours: list[Spec], task_name: str) -> None:
    """Refuses a device whose model's tensors (names, dtypes, shapes) are not the task's,
    naming the first difference."""
    if theirs != ours:
        diff = next((f"{a} != {b}" for a, b in zip(theirs, ours, strict=False) if a != b),
                    f"{len(theirs)} tensors != {len(ours)}")
        raise InvalidRequest(f"the device's model does not match task {task_name!r}: {diff}")


def plausible(metrics: dict[str, float], num_examples: int) -> dict[str, float]:
    """A device's reported metrics held to what it could have measured: an accuracy in
    [0, 1] and an example count no larger than the examples it joined with. The server
    weighs devices by the counts they report (federated evaluation, the canary gate), so
    one device claiming a billion held-out examples must not outvote the fleet."""
    out = {}
    for key, value in metrics.items():
        if key.endswith("_accuracy"):
            value = min(max(value, 0.0), 1.0)
        elif key.endswith("_examples"):
            value = min(max(value, 0.0), float(max(num_examples, 0)))
        out[key] = value
    return out
