"""Large updates spooled to disk (fedge.server.spool) and a FedAvg sum laid out as the
next blob (fedge.server.next_blob): the same aggregate as the in-memory path, bit for
bit, and no spool file left behind by an accepted, refused or cut upload."""

from __future__ import annotations

import gc
import hashlib
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.wide_task import small
from fedge.client import daemon as daemon_module
from fedge.protos import fedge_pb2
from fedge.refusals import Busy, Corrupt, InvalidUpdate, StaleRequest, StreamCut
from fedge.server import rounds as rounds_module
from fedge.server.intake import Expected
from fedge.server.next_blob import blob_layout, filled_blob
from fedge.server.partial_uploads import PartialUploads
from fedge.server.spool import Spool, fold_any, folds_from_disk, prepare_any
from fedge.server.strategies.dp import CentralDP
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold
from fedge.server.strategies.fedprox import FedProx
from fedge.server.strategies.median import Median
from fedge.simulations.partition import iid, write_partitions
from fedge.tensors import fingerprint, iter_chunks, stream_sha256, to_blob
from tests.cutting_proxy import CuttingProxy
from tests.fleet import Fleet

TASK = "bench.wide_task:small"


def open_spool_files(directory: Path) -> list[str]:
    """This process's open files under directory (a spool file has no name: its link
    reads 'directory/#inode (deleted)' while it is open)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


def _model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(300, 70)).astype(np.float32),
            "b": rng.normal(size=(70,)).astype(np.float32),
            "steps": np.array([seed], np.int64)}


# ------------------------------------------------------------------ pure parts


def test_a_laid_out_blob_is_the_bytes_to_blob_writes() -> None:
    model = _model(0)
    blob, views = blob_layout(model, {"task": "t", "round": "12"})
    for name, array in model.items():
        views[name][...] = array
    assert bytes(blob) == to_blob(model, {"task": "t", "round": "12"})
    other = _model(1)
    assert bytes(filled_blob(blob, other)) == to_blob(other, {"task": "t", "round": "12"})


def _spooled(tmp: Path, spool: Spool, update: dict[str, np.ndarray]) -> object:
    partials = PartialUploads(1 << 20, 60.0, spool=spool)
    expected = Expected(tuple(fingerprint(update)), "f32", 0.1, 1 << 30)
    header = fedge_pb2.UpdateHeader(task_id="t", sha256=stream_sha256(update))
    return partials.receive("d", header, iter_chunks(update, 4096), expected, 2e9)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_a_spooled_fold_equals_the_in_memory_fold_bit_for_bit(tmp_path: Path) -> None:
    global_model = _model(0)
    updates = [{n: a + np.float32(0.01) * (i + 1) if a.dtype.kind == "f" else a + i
                for n, a in global_model.items()} for i in range(3)]
    spool = Spool(tmp_path, 1 << 30, 0, lambda: (global_model, "weights"))
    memory, disk = FedAvgFold(), FedAvgFold()
    _blob, views = blob_layout(global_model, {})
    disk.place({n: v for n, v in views.items() if v.dtype == np.float32})
    for i, update in enumerate(updates):
        prepared = prepare_any({n: a.copy() for n, a in update.items()}, global_model,
                               "weights", 0.0, "clip", 0.0, measure=True)
        memory.add(prepared.gradient, 3.0 + i)
        spooled = _spooled(tmp_path, spool, update)
        on_disk = prepare_any(spooled, global_model, "weights", 0.0, "clip")  # type: ignore[arg-type]
        assert on_disk.norm == pytest.approx(prepared.norm, rel=1e-12)
        fold_any(disk, on_disk.gradient, 3.0 + i)
        spooled.discard()  # type: ignore[attr-defined]
    mine, theirs = memory.result(), disk.result()
    for name in global_model:
        assert mine[name].dtype == theirs[name].dtype
        assert np.array_equal(mine[name], theirs[name]), name
    assert np.shares_memory(theirs["w"], views["w"])  # the sum was the blob's
    assert spool.reserved == 0 and not open_spool_files(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_refused_and_cut_uploads_leave_no_spool_file(tmp_path: Path) -> None:
    global_model = _model(0)
    spool = Spool(tmp_path, 1 << 30, 0, lambda: (global_model, "weights"))
    partials = PartialUploads(1 << 20, 60.0, spool=spool)
    expected = Expected(tuple(fingerprint(global_model)), "f32", 0.1, 1 << 30)
    update = {n: a.copy() for n, a in global_model.items()}
    header = fedge_pb2.UpdateHeader(task_id="t", sha256="0" * 64)  # not its SHA-256
    with pytest.raises(Corrupt):
        partials.receive("d", header, iter_chunks(update, 4096), expected, 2e9)
    assert spool.opened == 1 and spool.reserved == 0 and not open_spool_files(tmp_path)

    update["w"][3, 3] = np.nan
    header = fedge_pb2.UpdateHeader(task_id="t", sha256=stream_sha256(update))
    with pytest.raises(InvalidUpdate, match="NaN"):
        partials.receive("d", header, iter_chunks(update, 4096), expected, 2e9)
    assert spool.reserved == 0 and not open_spool_files(tmp_path)

    def cut() -> Iterator[fedge_pb2.TensorChunk]:
        chunks = iter_chunks(update, 4096)
        yield next(chunks)
        raise StreamCut("the link broke")

    with pytest.raises(StreamCut):
        partials.receive("d", header, cut(), expected, 2e9)
    assert len(partials) == 1 and len(open_spool_files(tmp_path)) == 1  # kept to resume
    with pytest.raises(StreamCut):  # a fresh stream of the same device replaces it
        partials.receive("d", header, cut(), expected, 2e9)
    assert len(open_spool_files(tmp_path)) == 1
    expiring = PartialUploads(1 << 20, 0.001, spool=spool)
    with pytest.raises(StreamCut):
        expiring.receive("e", header, cut(), expected, 2e9)
    time.sleep(0.01)
    assert len(expiring) == 0  # expired: dropped, its file closed
    assert len(open_spool_files(tmp_path)) == 1
    full = Spool(tmp_path, 1000, 0, lambda: (global_model, "weights"))
    with pytest.raises(Busy):  # no room in the budget: the device retries later
        PartialUploads(1 << 20, 60.0, spool=full).receive(
            "f", header, iter_chunks(update, 4096), expected, 2e9)


def test_a_kept_broken_upload_does_not_keep_an_old_global_model_alive(tmp_path: Path) -> None:
    current = {"model": _model(0)}
    spool = Spool(tmp_path, 1 << 30, 0, lambda: (current["model"], "weights"))
    partials = PartialUploads(1 << 20, 60.0, spool=spool)
    update = _model(1)
    expected = Expected(tuple(fingerprint(update)), "f32", 0.1, 1 << 30)
    header = fedge_pb2.UpdateHeader(task_id="t", sha256=stream_sha256(update))
    chunks = iter_chunks(update, 4096)

    def cut() -> Iterator[fedge_pb2.TensorChunk]:
        yield next(chunks)
        raise StreamCut("the link broke")

    with pytest.raises(StreamCut):
        partials.receive("d", header, cut(), expected, 2e9)
    old = weakref.ref(current["model"]["w"])
    current["model"] = _model(2)  # the round committed without it
    gc.collect()
    assert old() is None
    resumed = fedge_pb2.UpdateHeader(task_id="t", sha256=header.sha256,
                                     resume_offset=partials.offset("d", "t", header.sha256))
    with pytest.raises(StaleRequest):
        partials.receive("d", resumed, chunks, expected, 2e9)
    assert spool.reserved == 0


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_a_spooled_update_is_clipped_by_the_rules_of_the_memory_path(tmp_path: Path) -> None:
    global_model = _model(0)
    update = {n: a + np.float32(0.5) if a.dtype.kind == "f" else a
              for n, a in global_model.items()}
    spool = Spool(tmp_path, 1 << 30, 0, lambda: (global_model, "weights"))
    memory, disk = FedAvgFold(), FedAvgFold()
    prepared = prepare_any({n: a.copy() for n, a in update.items()}, global_model,
                           "weights", 20.0, "clip", 10.0)
    memory.add(prepared.gradient, 1.0)
    spooled = _spooled(tmp_path, spool, update)
    on_disk = prepare_any(spooled, global_model, "weights", 20.0, "clip", 10.0)  # type: ignore[arg-type]
    assert on_disk.clipped and prepared.clipped
    fold_any(disk, on_disk.gradient, 1.0)
    for name, array in memory.result().items():
        np.testing.assert_allclose(disk.result()[name], array, rtol=1e-6)
    with pytest.raises(InvalidUpdate, match="exceeds"):
        prepare_any(spooled, global_model, "weights", 20.0, "refuse", 0.0)  # type: ignore[arg-type]
    spooled.discard()  # type: ignore[attr-defined]
    assert spool.reserved == 0


def test_only_the_plain_running_sum_folds_from_disk() -> None:
    # Central DP's fold clips each update in add(): folding blocks would skip the clip.
    assert folds_from_disk(FedAvg()) and folds_from_disk(FedProx(mu=0.1))
    assert not folds_from_disk(CentralDP(FedAvg(), noise_multiplier=1.0, clip=1.0))
    assert not folds_from_disk(Median())


# ------------------------------------------------------------------ over gRPC


@pytest.fixture
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])


def _run(fleet: Fleet, name: str, threshold: int, cut: bool = False) -> list[str]:
    """Two devices (one when cut, through a proxy cutting its upload at half way), two
    rounds of bench.wide_task:small (4 MB); the SHA-256 of each committed model."""
    devices = 1 if cut else 2
    splits = small().load_data()
    parts = write_partitions(splits.train_x, splits.train_y,
                             iid(len(splits.train_y), devices, seed=0),
                             fleet.tmp / f"data-{name}")
    state = fleet.tmp / f"state-{name}"
    server = fleet.server(task=TASK, rounds=2, min_clients=devices, round_timeout_s=60.0,
                          linger_s=1.0, poll_seconds=0.5, state_dir=str(state),
                          spool_threshold_bytes=threshold)
    port = server.start()
    proxy = (CuttingProxy(("127.0.0.1", port), "up",
                          cut_after=len(server.rounds.model_blob(0)[0]) // 2) if cut else None)
    try:
        for i, part in enumerate(parts):
            # d1 a second later: float sums depend on the order updates are folded in.
            fleet.client(proxy.port if proxy else port, part, f"d{i}", task=TASK,
                         token=server.tokens.create(f"d{i}"), train_delay_s=1.5 * i)
        records = server.wait(timeout=90)
        fleet.join_clients(timeout=30)
    finally:
        if proxy is not None:
            proxy.close()
    assert [r.round for r in records] == [0, 1, 2]
    spool = server.service.partials.spool
    assert spool is not None
    if threshold <= 4 << 20:
        assert spool.opened >= 2 * devices  # every update was spooled
        if cut:
            assert server.service.partials.resumed == 1
    else:
        assert spool.opened == 0
    assert spool.reserved == 0 and not open_spool_files(state / "spool")
    return [hashlib.sha256((state / "checkpoints" / f"round-{r:06d}.safetensors")
                           .read_bytes()).hexdigest() for r in (1, 2)]


@pytest.mark.usefixtures("_in_repo_root")
def test_spooled_rounds_commit_the_models_the_in_memory_path_commits(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spooled update is answered once checked and folded on a thread of its own
    (here a second slower than its reply); the round still commits every update."""
    events: list[tuple[str, float]] = []
    fold, submit = rounds_module.fold_any, daemon_module.submit

    def slow_fold(accumulator: Any, gradient: Any, weight: float) -> None:
        time.sleep(1.0)
        fold(accumulator, gradient, weight)
        events.append(("folded", time.monotonic()))

    def timed_submit(*args: Any, **kwargs: Any) -> Any:
        reply = submit(*args, **kwargs)
        events.append(("answered", time.monotonic()))
        return reply

    monkeypatch.setattr(rounds_module, "fold_any", slow_fold)
    monkeypatch.setattr(daemon_module, "submit", timed_submit)
    disk = _run(fleet, "disk", threshold=1)
    monkeypatch.undo()
    answered = sorted(t for e, t in events if e == "answered")
    folded = sorted(t for e, t in events if e == "folded")
    assert len(answered) == len(folded) == 4  # 2 devices x 2 rounds
    assert all(a < f for a, f in zip(answered, folded, strict=True)), events
    assert disk == _run(fleet, "memory", threshold=1 << 30)


@pytest.mark.usefixtures("_in_repo_root")
def test_a_spooled_upload_cut_at_half_way_resumes_from_its_file(fleet: Fleet) -> None:
    _run(fleet, "cut", threshold=1, cut=True)
