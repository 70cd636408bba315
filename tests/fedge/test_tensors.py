"""The tensor codec: chunk streams and model blobs round-trip exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.protos import fedge_pb2
from fedge.tensors import (
    CHUNK_BYTES,
    SUPPORTED_DTYPES,
    Spec,
    TensorAssembler,
    TensorError,
    decode_chunks,
    fingerprint,
    from_blob,
    iter_chunks,
    to_blob,
)


def _sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_every_dtype_round_trips_through_chunks_and_blobs(dtype: str) -> None:
    arrays = {"a": _sample(dtype, (3, 5)), "scalar": _sample(dtype, ())}
    back = decode_chunks(iter_chunks(arrays), fingerprint(arrays))
    blob_back, _ = from_blob(to_blob(arrays))
    for name, array in arrays.items():
        for got in (back[name], blob_back[name]):
            assert got.dtype == array.dtype and got.shape == array.shape
            np.testing.assert_array_equal(got, array)


def test_empty_tensors_arrive() -> None:
    arrays = {"empty": np.zeros((0, 4), np.float32), "w": np.ones(3, np.float32)}
    chunks = list(iter_chunks(arrays))
    assert [c.name for c in chunks] == ["empty", "w"]
    back = decode_chunks(chunks, fingerprint(arrays))
    assert back["empty"].shape == (0, 4)
    assert from_blob(to_blob(arrays))[0]["empty"].shape == (0, 4)


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_chunk_boundaries(extra: int) -> None:
    """Tensors one byte short of, exactly at and one byte past a chunk boundary."""
    size = 2 * CHUNK_BYTES + extra
    arrays = {"x": _sample("uint8", (size,))}
    chunks = list(iter_chunks(arrays))
    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)
    assert len(chunks) == -(-size // CHUNK_BYTES)
    assert [c.offset for c in chunks] == [i * CHUNK_BYTES for i in range(len(chunks))]
    np.testing.assert_array_equal(decode_chunks(chunks, fingerprint(arrays))["x"], arrays["x"])


def test_large_tensor_with_small_chunks() -> None:
    arrays = {"big": _sample("float32", (1000, 1001)), "b": _sample("float64", (7,))}
    chunks = list(iter_chunks(arrays, chunk_bytes=4096 + 3))  # rounded to whole values
    assert {len(c.data) for c in chunks if c.name == "big"} == {4096, 1000 * 1001 * 4 % 4096}
    back = decode_chunks(chunks, fingerprint(arrays))
    np.testing.assert_array_equal(back["big"], arrays["big"])
    np.testing.assert_array_equal(back["b"], arrays["b"])


def test_non_contiguous_and_big_endian_inputs_are_sent_little_endian() -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    arrays = {"t": base.T}  # non-contiguous and big-endian
    back = decode_chunks(iter_chunks(arrays), [Spec("t", "float32", (6, 4))])
    np.testing.assert_array_equal(back["t"], base.T)
    assert back["t"].dtype.byteorder in ("=", "<")


def _chunk(name: str = "w", dtype: str = "float32", shape: tuple[int, ...] = (2,),
           offset: int = 0, data: bytes = b"\0" * 8) -> fedge_pb2.TensorChunk:
    return fedge_pb2.TensorChunk(name=name, dtype=dtype, shape=shape, offset=offset, data=data)


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([_chunk(name="other")], "unexpected tensor"),
        ([_chunk(dtype="float64", data=b"\0" * 16)], "does not match"),
        ([_chunk(shape=(3,))], "does not match"),
        ([_chunk(offset=4)], "expected byte 0"),
        ([_chunk(data=b"\0" * 12)], "12 bytes sent"),
        ([_chunk(data=b"\0" * 4)], "incomplete"),
        ([], "incomplete"),
    ],
)
def test_assembler_refuses_streams_that_do_not_fit(chunks: list[fedge_pb2.TensorChunk],
                                                   message: str) -> None:
    assembler = TensorAssembler([Spec("w", "float32", (2,))])
    with pytest.raises(TensorError, match=message):
        for chunk in chunks:
            assembler.add(chunk)
        assembler.finish()


def test_assembler_enforces_the_size_limit() -> None:
    assembler = TensorAssembler([Spec("w", "float32", (100,))], max_bytes=100)
    with pytest.raises(TensorError, match="maximum"):
        for chunk in iter_chunks({"w": np.zeros(100, np.float32)}, chunk_bytes=64):
            assembler.add(chunk)


def test_unsupported_dtypes_are_refused() -> None:
    with pytest.raises(TensorError, match="not supported"):
        list(iter_chunks({"c": np.zeros(2, np.complex64)}))


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x10\0\0\0\0\0\0\0{}", b"\x02\0\0\0\0\0\0\0[]",
     b"\x04\0\0\0\0\0\0\0{{{{"],
)
def test_damaged_blobs_are_refused(blob: bytes) -> None:
    with pytest.raises(TensorError):
        from_blob(blob)


def test_blob_with_a_range_past_the_end_is_refused() -> None:
    blob = to_blob({"w": np.ones(4, np.float32)})
    with pytest.raises(TensorError, match="bad byte range"):
        from_blob(blob[:-1])


def test_blob_is_readable_by_safetensors_and_keeps_metadata() -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {"w": _sample("float32", (3, 4)), "n": _sample("int64", (2,))}
    blob = to_blob(arrays, {"round": "3"})
    loaded = safetensors_numpy.load(blob)
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])
    assert from_blob(blob)[1] == {"round": "3"}
