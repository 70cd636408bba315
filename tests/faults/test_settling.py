"""A refused update settles its device's task at once, on a real server: the round stops
waiting for that device (it closes well before its deadline once every sampled device
has sent its update or had it refused), and the task takes nothing more."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from fedge.tensors import from_blob
from tests.faults.rawdevice import Arrays, RawDevice, digits_weights, refusal

Code = grpc.StatusCode
Chunks = list[fedge_pb2.TensorChunk]
DEADLINE = 120.0  # the round's deadline: a test that waits for it fails on time
# A round that commits on one of its two devices, well inside DEADLINE if it closes early.
SETTLING: dict[str, object] = dict(quorum_fraction=0.5, round_timeout_s=DEADLINE, edge=False)




def _near(model: Arrays, seed: int, scale: float = 0.01) -> Arrays:
    rng = np.random.default_rng(seed)
    return {n: (a + rng.normal(0, scale, a.shape)).astype(np.float32) for n, a in model.items()}


def _reshaped(chunks: Chunks) -> None:
    chunks[0].shape[:] = [chunks[0].shape[0] + 1, *chunks[0].shape[1:]]


def _flipped(chunks: Chunks) -> None:
    chunks[-1].data = bytes([chunks[-1].data[0] ^ 0xFF]) + chunks[-1].data[1:]


def _truncated(chunks: Chunks) -> None:
    del chunks[-1]


def _padded(chunks: Chunks) -> None:
    extra = fedge_pb2.TensorChunk()
    extra.CopyFrom(chunks[-1])
    chunks.append(extra)  # one chunk more than the model: over --max-update-bytes


def _nan(arrays: Arrays) -> Arrays:
    out = {n: a.copy() for n, a in arrays.items()}
    next(iter(out.values())).flat[0] = np.nan
    return out


def _far(arrays: Arrays) -> Arrays:
    return {n: a + 10.0 for n, a in arrays.items()}


MODEL_BYTES = sum(a.nbytes for a in digits_weights().values())
# kind: (edit of the chunks, edit of the arrays, status, words of the message)
KINDS: dict[str, tuple[Callable[[Chunks], None] | None, Callable[[Arrays], Arrays] | None,
                       Code, str]] = {
    "wrong shape": (_reshaped, None, Code.INVALID_ARGUMENT, "does not match"),
    "bad chunk checksum": (_flipped, None, Code.DATA_LOSS, "CRC-32"),
    "incomplete stream": (_truncated, None, Code.INVALID_ARGUMENT, "incomplete"),
    "oversize update": (_padded, None, Code.RESOURCE_EXHAUSTED, "maximum of"),
    "NaN": (None, _nan, Code.INVALID_ARGUMENT, "NaN"),
    "over the norm bound": (None, _far, Code.INVALID_ARGUMENT, "exceeds the bound"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_refused_update_closes_the_round_without_waiting_for_its_deadline(
        make_server: Callable[..., FedgeServer], kind: str) -> None:
    edit_chunks, edit_arrays, status, words = KINDS[kind]
    server = make_server(**SETTLING, max_update_norm=5.0, max_update_bytes=MODEL_BYTES)
    port = server.start()
    good = RawDevice(port, "good", server.tokens.create("good"))
    bad = RawDevice(port, "bad", server.tokens.create("bad"))
    good.join()
    bad.join()
    tasks = {d.device_id: d.poll_train() for d in (good, bad)}
    model, _ = from_blob(good.fetch(0))
    assert good.submit(good.stream(tasks["good"], _near(model, 1))).accepted
    arrays = _near(model, 2)
    if edit_arrays is not None:
        arrays = edit_arrays(arrays)
    code, message = refusal(lambda: bad.submit(bad.stream(tasks["bad"], arrays, edit_chunks)))
    assert code is status and words in message, (code, message)
    records = server.wait(timeout=DEADLINE / 2)
    assert [r.round for r in records] == [0, 1] and records[1].clients == 1
    assert records[1].seconds < 20, "the round waited for its deadline"
    good.close()
    bad.close()


def test_after_a_refused_update_the_task_takes_nothing_more(
        make_server: Callable[..., FedgeServer]) -> None:
    """An update over the norm bound is refused and settles its task; a good update on
    the same task is then refused too (ALREADY_EXISTS) and not folded: the round's
    model is the other device's update alone."""
    server = make_server(**SETTLING, max_update_norm=5.0)
    port = server.start()
    good = RawDevice(port, "good", server.tokens.create("good"))
    bad = RawDevice(port, "bad", server.tokens.create("bad"))
    good.join()
    bad.join()
    tasks = {d.device_id: d.poll_train() for d in (good, bad)}
    model, _ = from_blob(good.fetch(0))
    code, message = refusal(lambda: bad.submit(bad.stream(tasks["bad"],
                                                          _far(_near(model, 2)))))
    assert code is Code.INVALID_ARGUMENT and "exceeds the bound" in message
    second = _near(model, 3)
    code, message = refusal(lambda: bad.submit(bad.stream(tasks["bad"], second)))
    assert code is Code.ALREADY_EXISTS and "refused" in message, (code, message)
    assert bad.poll(0.5).kind != fedge_pb2.TRAIN  # nothing left to do this round
    update = _near(model, 1)
    assert good.submit(good.stream(tasks["good"], update)).accepted
    records = server.wait(timeout=DEADLINE / 2)
    assert records[1].clients == 1
    committed, _ = from_blob(server.store.checkpoint_path(1).read_bytes())
    for name, array in update.items():
        np.testing.assert_allclose(committed[name], array, rtol=1e-6, atol=1e-7)
    good.close()
    bad.close()
