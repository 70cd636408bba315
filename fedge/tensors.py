"""Named numpy arrays on the wire: tensor chunks, model blobs and fingerprints.

Two shapes of transfer, both pickle-free:

* **Updates** travel as :class:`TensorChunk` messages, each holding a slice (at most
  ``CHUNK_BYTES``) of one tensor's raw little-endian bytes with the tensor's name, dtype
  and shape. :class:`TensorAssembler` turns a stream of them back into arrays, copying
  each slice once into a preallocated array and checking it against what was expected.
* **Models** travel as one blob in the safetensors layout, which is also the checkpoint
  file format, so the server streams checkpoint bytes as they lie on disk.

This module needs only numpy (and the generated protos): edge devices import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from fedge.errors import FedgeError
from fedge.protos import fedge_pb2

CHUNK_BYTES = 1 << 20

# dtypes that cross the wire, with their safetensors names.
_SAFETENSORS_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_NUMPY_DTYPES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
SUPPORTED_DTYPES = tuple(_SAFETENSORS_DTYPES)

Arrays = Mapping[str, np.ndarray]


class TensorError(FedgeError):
    """A tensor stream or blob that does not decode to what was expected."""


class Incomplete(TensorError):
    """A stream that ended before every expected tensor had arrived whole."""


class ChecksumError(TensorError):
    """Bytes that do not match the checksum sent with them."""


class TooLarge(TensorError):
    """A stream larger than the receiver's limit."""


@dataclass(frozen=True)
class Spec:
    """A tensor's name, dtype name and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)}"


def check_dtype(name: str) -> np.dtype:
    """Returns the numpy dtype for a wire dtype name, refusing anything else."""
    if name not in _SAFETENSORS_DTYPES:
        raise TensorError(f"dtype {name!r} is not supported; use one of {SUPPORTED_DTYPES}")
    return np.dtype(name).newbyteorder("<")


def spec_of(name: str, array: np.ndarray) -> Spec:
    check_dtype(array.dtype.name)
    return Spec(name, array.dtype.name, tuple(int(d) for d in array.shape))


def fingerprint(arrays: Arrays) -> list[Spec]:
    """The names, dtypes and shapes of arrays, sorted by name."""
    return [spec_of(name, arrays[name]) for name in sorted(arrays)]


def specs_to_proto(specs: Iterable[Spec]) -> list[fedge_pb2.TensorSpec]:
    return [fedge_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=s.shape) for s in specs]


def specs_from_proto(specs: Iterable[fedge_pb2.TensorSpec]) -> list[Spec]:
    return [Spec(s.name, s.dtype, tuple(s.shape)) for s in specs]


def _raw_bytes(array: np.ndarray) -> memoryview:
    """A little-endian, C-contiguous byte view of array (copying only when it must)."""
    little = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    return memoryview(little.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Piece:
    """One chunk's fields: a slice of one tensor's bytes (a view), with its CRC-32
    (None when not asked for)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    data: memoryview
    crc32: int | None


def iter_pieces(arrays: Arrays, chunk_bytes: int = CHUNK_BYTES, start: int = 0,
                crc: bool = True) -> Iterator[Piece]:
    """Splits named arrays into pieces of at most chunk_bytes of data each, each holding
    whole values (so a chunk decodes on its own), with a CRC-32 of its data unless crc
    is False (a pass over the bytes a server that checks the stream's SHA-256 does not
    need); the data are views of the arrays, which must not change while they are used.

    Every tensor yields at least one piece, so empty tensors arrive too. start: the
    byte of the stream's data (all tensors' bytes in stream order) to begin at, for an
    upload that resumes; it must fall on a value's boundary.
    """
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    before = 0  # stream bytes of the tensors already passed
    for name in sorted(arrays):
        spec = spec_of(name, arrays[name])
        raw = _raw_bytes(arrays[name])
        itemsize = arrays[name].dtype.itemsize
        step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)  # whole values only
        offset, before = max(0, start - before), before + len(raw)
        if offset and offset >= len(raw):
            continue  # sent whole before the break
        if offset % itemsize:
            raise ValueError(f"resume offset {start} splits a value of tensor {name!r}")
        while True:
            piece = raw[offset : offset + step]
            yield Piece(name, spec.dtype, spec.shape, offset, piece,
                        zlib.crc32(piece) if crc else None)
            offset += len(piece)
            if offset >= len(raw):
                break


def iter_chunks(
    arrays: Arrays, chunk_bytes: int = CHUNK_BYTES, start: int = 0
) -> Iterator[fedge_pb2.TensorChunk]:
    """The pieces of :func:`iter_pieces` as TensorChunk messages."""
    for p in iter_pieces(arrays, chunk_bytes, start):
        yield fedge_pb2.TensorChunk(name=p.name, dtype=p.dtype, shape=p.shape,
                                    offset=p.offset, data=bytes(p.data), crc32=p.crc32)


class TensorAssembler:
    """Reassembles tensor chunks into arrays, checking them against expected specs.

    Each tensor must arrive as contiguous slices in order (offset 0 first) with the
    name, dtype and shape the receiver expects; anything else raises TensorError.
    Memory held is the arrays being assembled and nothing more.
    """

    def __init__(self, expected: Iterable[Spec], max_bytes: int | None = None) -> None:
        self._expected = {s.name: s for s in expected}
        self._arrays: dict[str, np.ndarray] = {}
        self._filled: dict[str, int] = {}
        self._max_bytes = max_bytes
        self.bytes_received = 0
        self.bytes_allocated = 0  # of the arrays being assembled

    def add(self, chunk: fedge_pb2.TensorChunk) -> None:
        spec = check_chunk(self._expected, self._filled, chunk)
        self.bytes_received += len(chunk.data)
        if self._max_bytes is not None and self.bytes_received > self._max_bytes:
            raise TooLarge(f"update exceeds the maximum of {self._max_bytes} bytes")
        if chunk.name not in self._arrays:
            self._arrays[chunk.name] = np.empty(spec.shape, dtype=check_dtype(spec.dtype))
            self.bytes_allocated += spec.nbytes
        filled = self._filled.get(chunk.name, 0)
        end = filled + len(chunk.data)
        if chunk.data:
            target = self._arrays[chunk.name].reshape(-1).view(np.uint8)
            target[filled:end] = np.frombuffer(chunk.data, dtype=np.uint8)
        self._filled[chunk.name] = end

    def finish(self) -> dict[str, np.ndarray]:
        """Returns the arrays once every expected tensor has arrived whole."""
        check_complete(self._expected, self._filled)
        arrays = self._arrays
        self._arrays, self._filled = {}, {}
        # Native byte order for arithmetic; a no-op on little-endian hosts.
        return {n: a.astype(a.dtype.newbyteorder("="), copy=False) for n, a in arrays.items()}


def check_chunk(expected: Mapping[str, Spec], filled: Mapping[str, int],
                chunk: fedge_pb2.TensorChunk) -> Spec:
    """The spec of the tensor a chunk belongs to, once the chunk fits it where it
    arrives: an expected name, dtype and shape, at the tensor's next byte (filled: the
    bytes each tensor holds so far; none when absent), whole values, within the tensor.
    TensorError otherwise. Shared by every receiver of an update (in memory or spooled)."""
    spec = expected.get(chunk.name)
    if spec is None:
        raise TensorError(f"unexpected tensor {chunk.name!r}; expected one of "
                          f"{sorted(expected)[:8]}")
    got = Spec(chunk.name, chunk.dtype, tuple(chunk.shape))
    if got != spec:
        raise TensorError(f"tensor {got} does not match the task's {spec}")
    start = filled.get(chunk.name, 0)
    if chunk.offset != start:
        raise TensorError(f"tensor {chunk.name!r}: chunk at byte {chunk.offset}, "
                          f"expected byte {start}")
    itemsize = np.dtype(spec.dtype).itemsize
    if len(chunk.data) % itemsize:
        raise TensorError(f"tensor {chunk.name!r}: a chunk of {len(chunk.data)} bytes "
                          f"does not hold whole {spec.dtype} values")
    end = start + len(chunk.data)
    if end > spec.nbytes:
        raise TensorError(f"tensor {chunk.name!r}: {end} bytes sent for a "
                          f"{spec.nbytes}-byte tensor")
    return spec


def check_complete(expected: Mapping[str, Spec], filled: Mapping[str, int]) -> None:
    """Refuses (Incomplete) an update whose tensors have not all arrived whole; a tensor
    absent from filled never arrived, even an empty one."""
    missing = [n for n, s in expected.items() if filled.get(n, -1) != s.nbytes]
    if missing:
        raise Incomplete(f"update is incomplete: {len(missing)} tensor(s) missing or "
                         f"cut short, first {missing[0]!r}")


def decode_chunks(
    chunks: Iterable[fedge_pb2.TensorChunk], expected: Iterable[Spec]
) -> dict[str, np.ndarray]:
    """Reassembles a whole stream of chunks (see TensorAssembler)."""
    assembler = TensorAssembler(expected)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.finish()


def to_blob(arrays: Arrays, metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialises named arrays in the safetensors layout (header JSON, then raw bytes)."""
    head, _ = blob_head(arrays, metadata)
    return b"".join([head, *(_raw_bytes(arrays[name]) for name in sorted(arrays))])


def blob_head(arrays: Arrays, metadata: Mapping[str, str] | None = None,
              ) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The start of to_blob's blob for arrays: the 8-byte header length and the header
    JSON, padded to 8 bytes (as safetensors aligns its data section); and each tensor's
    data range, counted from the end of that start."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    ranges: dict[str, tuple[int, int]] = {}
    offset = 0
    for name in sorted(arrays):
        spec = spec_of(name, arrays[name])
        ranges[name] = (offset, offset + spec.nbytes)
        header[name] = {"dtype": _SAFETENSORS_DTYPES[spec.dtype], "shape": list(spec.shape),
                        "data_offsets": list(ranges[name])}
        offset += spec.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head, ranges


def from_blob(blob: bytes | bytearray, copy: bool = True
              ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parses a safetensors-layout blob into (arrays, metadata), checking every range.

    copy False: the arrays are views of blob's memory (no model-sized copy; read-only
    for bytes), on little-endian hosts; blob must then not change while they live.
    """
    if len(blob) < 8:
        raise TensorError("model blob is truncated: no header")
    (head_len,) = struct.unpack("<Q", blob[:8])
    if head_len > len(blob) - 8:
        raise TensorError("model blob is truncated: header runs past the end")
    try:
        header = json.loads(blob[8 : 8 + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorError(f"model blob header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise TensorError("model blob header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + head_len :]
    arrays: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        try:
            dtype = check_dtype(_NUMPY_DTYPES[entry["dtype"]])
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TensorError(f"model blob entry {name!r} is malformed") from exc
        if not 0 <= start <= end <= len(data) or end - start != Spec(name, dtype.name,
                                                                      shape).nbytes:
            raise TensorError(f"model blob entry {name!r} has bad byte range")
        array = np.frombuffer(data[start:end], dtype=dtype).reshape(shape)
        arrays[name] = array.astype(dtype.newbyteorder("="), copy=copy)
    return arrays, {str(k): str(v) for k, v in metadata.items()}


def stream_sha256(arrays: Arrays) -> str:
    """SHA-256 (hex) of the data that iter_chunks(arrays) sends, in stream order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(_raw_bytes(arrays[name]))
    return digest.hexdigest()


def check_crc32(chunk: fedge_pb2.TensorChunk, required: bool = True) -> None:
    """Raises ChecksumError unless the chunk carries a CRC-32 that matches its data (or,
    not required, carries none)."""
    if not chunk.HasField("crc32"):
        if not required:
            return
        raise ChecksumError(f"tensor {chunk.name!r}: chunk at byte {chunk.offset} carries "
                            "no crc32")
    if zlib.crc32(chunk.data) != chunk.crc32:
        raise ChecksumError(f"tensor {chunk.name!r}: chunk at byte {chunk.offset} fails "
                            "its CRC-32 check (damaged in transit?)")


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def l2_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """The L2 norm over every floating tensor, summed in float64."""
    total = 0.0
    for array in arrays.values():
        if array.dtype.kind == "f":
            flat = array.ravel()
            # einsum accumulates in float64 without a float64 copy of the model.
            total += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
    return math.sqrt(total)
