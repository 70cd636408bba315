"""Update encodings: exact round trips, error bounds, sizes, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.encodings import (
    ErrorFeedback,
    decode,
    dequantize_int8,
    encode,
    quantize_int8,
    topk_densify,
    topk_sparsify,
    wire_specs,
)
from fedge.tensors import Spec, TensorError, decode_chunks, fingerprint, iter_chunks

RNG = np.random.default_rng(7)
UPDATE: dict[str, np.ndarray] = {"layer.weight": RNG.standard_normal((32, 16)).astype(np.float32),
          "layer.bias": RNG.standard_normal(32).astype(np.float32),
          "steps": np.array([3, 4], np.int64)}
SPECS = fingerprint(UPDATE)


@pytest.mark.parametrize("encoding", ["f32", "f16", "int8", "topk"])
def test_encoded_updates_cross_the_chunk_codec_and_decode_to_task_shapes(encoding: str) -> None:
    wire = encode(UPDATE, encoding, 0.25)
    # What travels is exactly what the receiver expects, chunk by chunk.
    received = decode_chunks(iter_chunks(wire, chunk_bytes=100),
                             wire_specs(SPECS, encoding, 0.25))
    out = decode(received, SPECS, encoding)
    assert fingerprint(out) == [Spec(s.name, "float32" if s.dtype == "float32" else s.dtype,
                                     s.shape) for s in SPECS]
    np.testing.assert_array_equal(out["steps"], UPDATE["steps"])  # integers travel as is
    if encoding == "f32":
        np.testing.assert_array_equal(out["layer.weight"], UPDATE["layer.weight"])


def test_int8_error_is_at_most_half_a_step_per_channel_and_per_tensor() -> None:
    x = UPDATE["layer.weight"] * np.linspace(0.01, 10, 32, dtype=np.float32)[:, None]
    for per_channel in (True, False):
        q, scale = quantize_int8(x, per_channel)
        assert q.dtype == np.int8 and np.abs(q).max() == 127
        assert scale.shape == ((32,) if per_channel else (1,))
        err = np.abs(dequantize_int8(q, scale) - x)
        step = scale[:, None] if per_channel else scale[0]
        assert (err <= step / 2 + 1e-7).all()
    # Per-channel keeps small rows precise where one scale for all would flatten them.
    per_row = np.abs(dequantize_int8(*quantize_int8(x, True)) - x)[0].max()
    per_all = np.abs(dequantize_int8(*quantize_int8(x, False)) - x)[0].max()
    assert per_row < per_all / 50


def test_int8_of_zeros_and_sizes() -> None:
    q, scale = quantize_int8(np.zeros((3, 4), np.float32), True)
    assert not q.any() and not scale.any()
    assert not dequantize_int8(q, scale).any()
    floats = {n: a for n, a in UPDATE.items() if a.dtype == np.float32}
    f32 = sum(a.nbytes for a in floats.values())
    int8 = sum(a.nbytes for a in encode(floats, "int8").values())
    assert int8 == f32 // 4 + 4 * (32 + 1)  # one byte per entry, a float scale per row


def test_topk_keeps_the_largest_magnitudes_exactly() -> None:
    x = np.array([[0.1, -5.0, 0.2], [3.0, -0.3, 0.0]], np.float32)
    index, value = topk_sparsify(x, 0.34)  # ceil(0.34 * 6) = 3 entries
    assert index.tolist() == [1, 3, 4] and value.tolist() == pytest.approx([-5.0, 3.0, -0.3])
    np.testing.assert_array_equal(topk_densify(index, value, (2, 3)),
                                  np.array([[0, -5.0, 0], [3.0, -0.3, 0]], np.float32))
    with pytest.raises(TensorError, match="out of range"):
        topk_densify(np.array([6]), np.array([1.0], np.float32), (2, 3))


def test_error_feedback_delivers_everything_eventually() -> None:
    """With memory, what top-k drops is sent later: over many rounds of the same update,
    the sum of what was sent approaches the sum of what was meant."""
    feedback = ErrorFeedback()
    update = {"w": RNG.standard_normal(200).astype(np.float32)}
    specs = fingerprint(update)
    sent_total = np.zeros(200, np.float32)
    rounds = 40
    for _ in range(rounds):
        sent_total += decode(feedback.encode(update, specs, "topk", 0.1), specs, "topk")["w"]
    meant = rounds * update["w"]
    # The gap is exactly the residual still carried, which stays bounded.
    np.testing.assert_allclose(meant - sent_total, feedback.residual["w"], atol=1e-3)
    assert np.abs(feedback.residual["w"]).max() < 15 * np.abs(update["w"]).max()
    without = rounds * decode(encode(update, "topk", 0.1), specs, "topk")["w"]
    assert np.abs(meant - sent_total).sum() < 0.5 * np.abs(meant - without).sum()


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(TensorError, match="unknown encoding"):
        wire_specs(SPECS, "int4")
    with pytest.raises(TensorError, match="reserve"):
        wire_specs([Spec("a@scale", "float32", (2,))], "int8")
    wire = encode(UPDATE, "int8")
    wire["layer.bias@scale"] = np.array([np.nan], np.float32)
    with pytest.raises(TensorError, match="scales"):
        decode(wire, SPECS, "int8")
