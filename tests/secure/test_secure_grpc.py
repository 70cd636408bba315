"""Secure rounds over real gRPC with real daemons: the committed model equals plain
FedAvg's within the quantization error while the server only ever holds masked inputs;
devices that vanish at each stage leave the survivors' exact sum; too few, a retry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.client.session import Stopped
from fedge.protos import fedge_pb2
from fedge.secure import prg, quantize, vector
from fedge.secure.device import MaskingDevice
from fedge.secure.masked_sum import MaskedSum
from fedge.server import secure_service
from fedge.tensors import from_blob
from tests.fleet import Fleet


class Spy:
    """Records what the server received and what the devices masked (calls through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.received: dict[str, np.ndarray] = {}  # masked inputs the server added
        self.inputs: dict[str, np.ndarray] = {}  # encoded inputs, before masking
        self.totals: list[np.ndarray] = []  # unmasked sums
        self.scale = 0.0
        self.victims: set[str] = set()
        self.fleet: Fleet | None = None
        spy = self
        add, mask, unmask = MaskedSum.add_masked, MaskingDevice.mask, MaskedSum.unmask

        def add_masked(self: MaskedSum, device_id: str, masked: np.ndarray,
                       weight: float) -> None:
            spy.received[device_id] = masked.copy()
            spy.scale = self.params.scale
            add(self, device_id, masked, weight)

        def masking(self: MaskingDevice, encoded: np.ndarray, messages: Any) -> np.ndarray:
            spy.inputs[self.device_id] = encoded.copy()
            return mask(self, encoded, messages)

        def unmasking(self: MaskedSum) -> np.ndarray:
            total = unmask(self)
            spy.totals.append(total.copy())
            return total

        monkeypatch.setattr(MaskedSum, "add_masked", add_masked)
        monkeypatch.setattr(MaskingDevice, "mask", masking)
        monkeypatch.setattr(MaskedSum, "unmask", unmasking)

    def vanish_at(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        """The victims stop (as if killed) when their device reaches method."""
        original: Callable[..., Any] = getattr(MaskingDevice, method)
        spy = self

        def vanish(self: MaskingDevice, *args: Any) -> Any:
            if self.device_id in spy.victims:
                assert spy.fleet is not None
                for c in spy.fleet.clients:
                    if c.daemon.config.device_id == self.device_id:
                        c.daemon.stop()
                raise Stopped()
            return original(self, *args)

        monkeypatch.setattr(MaskingDevice, method, vanish)


def _run(fleet: Fleet, parts: list[Path], rounds: int = 1, **server: object) -> Any:
    s = fleet.server(rounds=rounds, min_clients=len(parts), **server)
    port = s.start()
    for i, part in enumerate(parts):
        fleet.client(port, part, f"dev-{i}")
    return s


def test_secure_round_is_fedavg_and_the_server_sees_only_masked_inputs(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    parts = fleet.partitions("digits-mlp", 4)
    # Plain FedAvg: without the fleet-relative bounds, which need each update in the
    # clear and so do not apply to a secure round (devices clip to secure_clip there).
    plain = _run(fleet, parts, state_dir=str(tmp_path / "plain"), examples_factor=0.0,
                 norm_factor=0.0)
    plain.wait(120)
    fleet.join_clients()
    fleet.clients.clear()
    spy = Spy(monkeypatch)
    stages: list[int] = []
    step = secure_service.secure_step

    def counted(rounds: Any, device: Any, request: fedge_pb2.SecureRequest) -> Any:
        stages.append(request.stage)
        return step(rounds, device, request)

    monkeypatch.setattr(secure_service, "secure_step", counted)
    secure = _run(fleet, parts, state_dir=str(tmp_path / "secure"),
                  secure_aggregation=True)
    with caplog.at_level(logging.INFO, logger="fedge.server.secure_round"):
        records = secure.wait(120)
    # Every device runs in this process and prefers the same generator: the round used it.
    assert [r.mask_prg for r in caplog.records if hasattr(r, "mask_prg")] == [
        prg.preferred()]
    # The unmasking request came in each masked input's reply: no device had to ask.
    assert fedge_pb2.SECURE_UNMASK not in stages
    assert stages.count(fedge_pb2.SECURE_REVEAL) == 4, stages
    fleet.join_clients()
    expected, _ = from_blob(plain.store.blob(1))
    got, _ = from_blob(secure.store.blob(1))
    worst = max(float(np.max(np.abs(expected[k] - got[k]))) for k in expected)
    # Each device rounds each entry by at most 1/2 in fixed point; the mean's error is
    # bounded by n / (2 scale total_weight) <= n / (2 scale).
    print(f"largest difference from plain FedAvg: {worst:.3g}")
    assert worst <= 4 / (2 * spy.scale) + 1e-6
    assert sorted(spy.received) == [f"dev-{i}" for i in range(4)]
    global0, _ = from_blob(secure.store.blob(0))
    for device_id, masked in spy.received.items():
        plain_input = spy.inputs[device_id].view(np.int32).astype(np.float64)
        seen = masked.view(np.int32).astype(np.float64)
        assert abs(np.corrcoef(plain_input, seen)[0, 1]) < 5 / np.sqrt(seen.size)
        counts = np.bincount(masked >> 28, minlength=16)  # uniform over Z_2^32
        assert counts.min() > seen.size / 16 * 0.8
    total = np.zeros_like(spy.totals[0])
    for encoded in spy.inputs.values():
        total += encoded
    assert np.array_equal(spy.totals[0], total)
    assert vector.size_of(global0) == total.size
    assert records[-1].round == 1 and records[-1].clients == 4


@pytest.mark.slow
@pytest.mark.parametrize("method,survive", [("share", 3), ("mask", 3), ("reveal", 4)])
def test_devices_vanishing_at_a_stage_leave_the_survivors_exact_sum(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, method: str, survive: int) -> None:
    # share: vanished after advertising; mask: after sharing; reveal: after its input.
    parts = fleet.partitions("digits-mlp", 4)
    spy = Spy(monkeypatch)
    spy.fleet, spy.victims = fleet, {"dev-3"}
    spy.vanish_at(monkeypatch, method)
    server = fleet.server(rounds=1, min_clients=4, quorum_fraction=0.5,
                          secure_aggregation=True, secure_stage_timeout_s=3.0,
                          round_timeout_s=12.0)
    port = server.start()
    for i, part in enumerate(parts):
        fleet.client(port, part, f"dev-{i}")
    records = server.wait(120)
    assert records[-1].round == 1 and records[-1].clients == survive
    survivors = sorted(spy.received)
    assert len(survivors) == survive
    total = np.zeros_like(spy.totals[-1])
    for device_id in survivors:
        total += spy.inputs[device_id]
    assert np.array_equal(spy.totals[-1], total)


@pytest.mark.slow
def test_too_few_survivors_retry_the_round(fleet: Fleet,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    parts = fleet.partitions("digits-mlp", 4)
    spy = Spy(monkeypatch)
    spy.fleet, spy.victims = fleet, {"dev-1", "dev-2", "dev-3"}
    spy.vanish_at(monkeypatch, "reveal")
    server = fleet.server(rounds=1, min_clients=4, quorum_fraction=0.25,
                          secure_aggregation=True, secure_stage_timeout_s=2.0,
                          round_timeout_s=12.0, max_round_attempts=1)
    port = server.start()
    for i, part in enumerate(parts):
        fleet.client(port, part, f"dev-{i}")
    records = server.wait(120)
    assert not spy.totals  # never unmasked: too few shares of anyone's seed
    assert "missed its quorum" in server.rounds.failure
    assert "could not unmask" in server.rounds.failure
    assert [r.round for r in records] == [0]


def test_quantization_bound_used_above_is_the_modules() -> None:
    scale = quantize.round_scale(10.0, 500, 4)
    assert 4 / (2 * scale) < 1e-4  # the tolerance above is tight, not vacuous


@pytest.mark.slow
def test_devices_refuse_a_lying_server_over_grpc(fleet: Fleet,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The server claims every surviving neighbour also dropped: it asks each device for
    # both the self-mask share and the mask-key share of the same peers.
    def lying(self: MaskedSum, device_id: str) -> tuple[list[str], list[str]]:
        alive = [p for p in self.neighbours(device_id) if p in self.weights]
        return alive, alive

    reveals: list[str] = []
    add_reveal = MaskedSum.add_reveal

    def spy(self: MaskedSum, device_id: str, *shares: Any) -> None:
        reveals.append(device_id)
        add_reveal(self, device_id, *shares)

    monkeypatch.setattr(MaskedSum, "request", lying)
    monkeypatch.setattr(MaskedSum, "add_reveal", spy)
    parts = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=1, min_clients=3, secure_aggregation=True,
                          secure_stage_timeout_s=2.0, round_timeout_s=20.0,
                          max_round_attempts=1)
    port = server.start()
    for i, part in enumerate(parts):
        fleet.client(port, part, f"dev-{i}")
    records = server.wait(120)
    assert reveals == []  # no device answered: each refused instead
    refused = [r for r in caplog.records if "refusing to unmask" in r.getMessage()]
    assert {r.getMessage().split(":")[0] for r in refused} == {"dev-0", "dev-1", "dev-2"}
    assert [r.round for r in records] == [0]
    assert "could not unmask" in server.rounds.failure


@pytest.mark.slow
def test_fedadam_on_delta_updates_matches_plain(fleet: Fleet, tmp_path: Path) -> None:
    # The server optimizer (with state) steps on the unmasked aggregate of deltas.
    parts = fleet.partitions("digits-mlp", 3)
    models = []
    for secure in (False, True):
        server = _run(fleet, parts, rounds=2, state_dir=str(tmp_path / f"s{secure}"),
                      strategy="fedadam", update="delta", secure_aggregation=secure)
        records = server.wait(120)
        fleet.join_clients()
        fleet.clients.clear()
        assert [r.round for r in records] == [0, 1, 2]
        models.append(from_blob(server.store.blob(2))[0])
    worst = max(float(np.max(np.abs(models[0][k] - models[1][k]))) for k in models[0])
    assert worst < 1e-4, worst
