"""The intake pipeline's filters one by one, without gRPC: each takes what it should and
raises exactly its one kind of refusal, and the rule of every refusal an update's
content earns settles the device's task."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pytest

from fedge.encodings import encode
from fedge.protos import fedge_pb2
from fedge.refusals import Corrupt, EndedEarly, InvalidUpdate, Refused, TooLarge
from fedge.server.intake import (
    Expected,
    StreamDigest,
    assemble,
    bound_norm,
    check_digest,
    check_finite,
    chunk_limit,
    crc_checked,
    decode_update,
    prepare,
    pseudo_gradient,
    receive,
    update_limit,
)
from fedge.tensors import CHUNK_BYTES, fingerprint, iter_chunks, l2_norm, stream_sha256

Chunks = list[fedge_pb2.TensorChunk]


def _update(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((64, 32)).astype(np.float32),
            "a.bias": rng.standard_normal(64).astype(np.float32),
            "steps": np.array([3], np.int64)}


def _expected(encoding: str = "f32", max_bytes: int = 1 << 20) -> Expected:
    return Expected(tuple(fingerprint(_update())), encoding, 0.1, max_bytes)


def _refused(call: Callable[[], object], kind: type[Refused], text: str) -> Refused:
    with pytest.raises(Refused) as info:
        call()
    assert type(info.value) is kind, info.value
    assert text in str(info.value)
    return info.value


def test_a_good_update_passes_every_filter_unchanged() -> None:
    update = _update()
    arrays = receive(iter_chunks(update, chunk_bytes=1000), _expected(), stream_sha256(update))
    for name, array in update.items():
        np.testing.assert_array_equal(arrays[name], array)
        assert arrays[name].dtype == array.dtype


def test_stream_filters_each_raise_their_one_refusal() -> None:
    update = _update()
    chunks: Chunks = list(iter_chunks(update, chunk_bytes=1000))

    big = fedge_pb2.TensorChunk(data=bytes(CHUNK_BYTES + 4))
    _refused(lambda: list(chunk_limit([big])), TooLarge, "chunk limit")
    _refused(lambda: list(update_limit(chunks, 4000)), TooLarge, "maximum of 4000 bytes")
    assert len(list(update_limit(chunks, 1 << 20))) == len(chunks)

    bare = fedge_pb2.TensorChunk()
    bare.CopyFrom(chunks[0])
    bare.ClearField("crc32")
    assert list(crc_checked([bare])) == [bare]  # the stream's SHA-256 covers it
    flipped = fedge_pb2.TensorChunk()
    flipped.CopyFrom(chunks[0])
    flipped.data = b"\x00" + flipped.data[1:]
    _refused(lambda: list(crc_checked([flipped])), Corrupt, "CRC-32")

    wire = _expected().wire
    reshaped = fedge_pb2.TensorChunk()
    reshaped.CopyFrom(chunks[0])
    reshaped.shape[:] = [65]
    _refused(lambda: assemble([reshaped, *chunks[1:]], wire), InvalidUpdate, "does not match")
    _refused(lambda: assemble(chunks[:-1], wire), EndedEarly, "incomplete")
    renamed = fedge_pb2.TensorChunk()
    renamed.CopyFrom(chunks[0])
    renamed.name = "backdoor"
    _refused(lambda: assemble([renamed], wire), InvalidUpdate, "unexpected tensor")

    check_digest(stream_sha256(update), stream_sha256(update))
    _refused(lambda: check_digest("0" * 64, stream_sha256(update)), Corrupt, "SHA-256")

    int8 = encode(update, "int8")
    int8["a.weight@scale"][0] = -1.0
    _refused(lambda: decode_update(int8, _expected("int8")), InvalidUpdate, "scales")


def test_receive_applies_the_filters_in_order() -> None:
    """A chunk that breaks two rules is refused by the earlier filter."""
    update = _update()
    chunks: Chunks = list(iter_chunks(update, chunk_bytes=1000))
    chunks[-1].data = b"\x00" + chunks[-1].data[1:]  # a bad CRC (filter 3) in the chunk
    total = sum(len(c.data) for c in chunks)  # that takes the stream over its limit (2)
    _refused(lambda: receive(chunks, _expected(max_bytes=total - 1), stream_sha256(update)),
             TooLarge, "maximum")
    _refused(lambda: receive(chunks, _expected(), stream_sha256(update)), Corrupt, "CRC-32")
    good = list(iter_chunks(update, chunk_bytes=1000))
    _refused(lambda: receive(good, _expected(), "f" * 64), Corrupt, "SHA-256")


def test_a_damaged_chunk_without_a_crc_is_refused_by_the_streams_sha256() -> None:
    """The CRC-32 is optional; the stream's SHA-256 is then the integrity check, and
    a flipped bit anywhere in any chunk is refused (Corrupt) however valid the rest."""
    update = _update()
    sha = stream_sha256(update)
    for index in (0, 3, -1):
        chunks: Chunks = list(iter_chunks(update, chunk_bytes=1000))
        for chunk in chunks:
            chunk.ClearField("crc32")
        data = bytearray(chunks[index].data)
        data[len(data) // 2] ^= 0x10
        chunks[index].data = bytes(data)
        _refused(partial(receive, chunks, _expected(), sha), Corrupt, "SHA-256")
    bare = list(iter_chunks(update, chunk_bytes=1000))
    for chunk in bare:
        chunk.ClearField("crc32")
    arrays = receive(bare, _expected(), sha)  # undamaged: taken, bit for bit
    for name, array in update.items():
        np.testing.assert_array_equal(arrays[name], array)


def test_every_refusal_of_an_update_s_content_settles_its_task() -> None:
    for kind in (TooLarge, Corrupt, InvalidUpdate):
        assert kind("x").rule.settles and not kind("x").rule.retry


def test_pseudo_gradients_of_weights_and_deltas_are_identical() -> None:
    """fl(w_g - w_k) == -fl(w_k - w_g) exactly: round-to-nearest is symmetric."""
    rng = np.random.default_rng(1)
    glob = {"w": rng.standard_normal(10_000).astype(np.float32)}
    client = {"w": glob["w"] + (1e-3 * rng.standard_normal(10_000)).astype(np.float32)}
    delta = {"w": client["w"] - glob["w"]}
    from_weights = pseudo_gradient("weights", glob, {"w": client["w"].copy()})
    from_delta = pseudo_gradient("delta", glob, {"w": delta["w"].copy()})
    np.testing.assert_array_equal(from_weights["w"], from_delta["w"])
    unchanged = pseudo_gradient("weights", glob, {"w": glob["w"].copy()})
    assert not unchanged["w"].any()


def test_non_finite_values_are_named() -> None:
    check_finite({"w": np.ones(3, np.float32), "steps": np.array([1, 2])})
    _refused(lambda: check_finite({"w": np.array([1.0, np.nan], np.float32)}),
             InvalidUpdate, "'w' holds NaN")
    _refused(lambda: check_finite({"w": np.array([1.0, -np.inf], np.float32)}),
             InvalidUpdate, "'w' holds infinite")


def test_a_finite_update_whose_difference_overflows_is_refused() -> None:
    glob = {"w": np.array([3e38], np.float32)}
    _refused(lambda: prepare({"w": np.array([-3e38], np.float32)}, glob, "weights", 0.0,
                             "refuse"), InvalidUpdate, "infinite")


def test_the_norm_bound_refuses_or_clips_the_pseudo_gradient_to_exactly_the_bound() -> None:
    glob = {"a": np.zeros(3, np.float32), "b": np.ones(4, np.float32)}
    client = {"a": np.array([3.0, 0.0, 0.0], np.float32),
              "b": np.array([1.0, 1.0, 1.0, 5.0], np.float32)}
    gradient = pseudo_gradient("weights", glob, {k: v.copy() for k, v in client.items()})
    assert l2_norm(gradient) == pytest.approx(5.0)
    assert bound_norm(gradient, 0.0, "refuse") == 0.0  # no bound: nothing to compute
    assert bound_norm(gradient, 6.0, "refuse") == pytest.approx(5.0)
    _refused(lambda: bound_norm(gradient, 2.0, "refuse"), InvalidUpdate,
             "exceeds the bound of 2")
    _refused(lambda: prepare({k: v.copy() for k, v in client.items()}, glob, "weights", 2.0,
                             "refuse"), InvalidUpdate, "exceeds the bound")
    clipped = prepare({k: v.copy() for k, v in client.items()}, glob, "weights", 2.0, "clip")
    assert l2_norm(clipped) == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(clipped["a"], [-1.2, 0, 0], rtol=1e-6)  # direction kept
    delta = prepare({k: v - glob[k] for k, v in client.items()}, glob, "delta", 2.0, "clip")
    np.testing.assert_array_equal(delta["a"], clipped["a"])


def test_a_crc_mismatch_is_checked_with_the_chunk_s_own_checksum() -> None:
    chunk = next(iter(iter_chunks({"w": np.ones(4, np.float32)})))
    assert chunk.crc32 == zlib.crc32(chunk.data)
    assert list(crc_checked([chunk])) == [chunk]


@pytest.mark.parametrize("threaded", [False, True])
def test_the_stream_digest_is_whole_however_the_stream_ends(threaded: bool) -> None:
    """Threaded (a large update hashed beside its parsing) or not: the digest of a whole
    stream is its SHA-256, and a stream cut by its link leaves the digest of exactly the
    chunks that passed, for a resumed stream to go on from."""
    rng = np.random.default_rng(0)
    chunks = [fedge_pb2.TensorChunk(data=rng.bytes(1 << 16)) for _ in range(40)]
    whole = StreamDigest(chunks, threaded=threaded)
    assert len(list(whole)) == 40
    assert whole.hexdigest() == hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest()

    def cut_after(count: int) -> Iterator[fedge_pb2.TensorChunk]:
        yield from chunks[:count]
        raise ConnectionError("link cut")

    digest = hashlib.sha256()
    with pytest.raises(ConnectionError):
        for _ in StreamDigest(cut_after(25), digest, threaded=threaded):
            pass
    assert digest.hexdigest() == hashlib.sha256(
        b"".join(c.data for c in chunks[:25])).hexdigest()
