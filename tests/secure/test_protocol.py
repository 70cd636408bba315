"""SecAgg+ end to end in process: exact sums of the survivors with dropouts at every
stage, failure below the threshold, masked inputs that say nothing of their plaintexts,
and a device that refuses a lying server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fedge.secure import masks, prg, quantize
from fedge.secure.device import KeyRing, MaskingDevice, ProtocolError, UnmaskRefused
from fedge.secure.masked_sum import MaskedSum
from fedge.secure.masks import Advert
from tests.secure import rounds


def _inputs(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"dev-{i:02d}": rng.integers(0, 1 << 20, size, dtype=np.uint32)
            for i in range(n)}


def _sum(inputs: dict[str, np.ndarray], ids: list[str]) -> np.ndarray:
    total = np.zeros(next(iter(inputs.values())).size, np.uint32)
    for d in ids:
        total += inputs[d]
    return total


def test_no_dropouts_sum_is_exact() -> None:
    inputs = _inputs(12, 50)
    out = rounds.run(inputs, rounds.params_for(12, 50))
    assert out.error == ""
    assert out.total is not None and np.array_equal(out.total, _sum(inputs, sorted(inputs)))


@pytest.mark.parametrize("kind", prg.NAMES)
@pytest.mark.parametrize("premask", [False, True], ids=["masked-at-once", "premasked"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_thirty_percent_dropped_at_each_stage_leaves_the_survivors_exact_sum(
        stage: int, premask: bool, kind: str) -> None:
    # premasked: the masks of every neighbour were added before the share stage closed,
    # and those of the neighbours that dropped at stage 2 are taken back in mask().
    inputs = _inputs(20, 64, seed=stage)
    ids = sorted(inputs)
    gone = set(ids[::3][:6])  # 30%
    out = rounds.run(inputs, rounds.params_for(20, 64), {stage: gone}, premask,
                     dict.fromkeys(ids, kind))
    assert out.error == "" and out.prg == kind
    survivors = [d for d in ids if d not in gone] if stage < 3 else ids
    assert out.survivors == survivors
    assert out.total is not None and np.array_equal(out.total, _sum(inputs, survivors))


@pytest.mark.parametrize(("prefers", "used"), [
    ({}, prg.AES_CTR), ({"dev-03": prg.CHACHA20}, prg.CHACHA20)])
def test_round_uses_aes_ctr_only_when_every_device_prefers_it(
        prefers: dict[str, str], used: str) -> None:
    inputs = _inputs(12, 40, seed=7)
    ids = sorted(inputs)
    prefers = {d: prefers.get(d, prg.AES_CTR) for d in ids}
    gone = {ids[1], ids[5]}  # their pair masks are removed with the round's generator
    out = rounds.run(inputs, rounds.params_for(12, 40), {2: gone}, True, prefers)
    assert out.prg == used and out.error == ""
    survivors = [d for d in ids if d not in gone]
    assert out.total is not None and np.array_equal(out.total, _sum(inputs, survivors))


def test_round_prg_reads_unknown_or_missing_preferences_as_chacha20() -> None:
    def adverts(*kinds: str) -> dict[str, Advert]:
        return {f"d{i}": Advert(f"d{i}", bytes(32), bytes(32), k) for i, k in enumerate(kinds)}
    assert masks.round_prg(adverts(prg.AES_CTR, prg.AES_CTR)) == prg.AES_CTR
    assert masks.round_prg(adverts(prg.AES_CTR, "")) == prg.CHACHA20
    assert masks.round_prg(adverts(prg.AES_CTR, "aes-512-future")) == prg.CHACHA20
    # An older device's AES-256 name is unknown now: the round falls back, on both sides
    assert masks.round_prg(adverts(prg.AES_CTR, "aes-256-ctr")) == prg.CHACHA20
    assert masks.round_prg({}) == prg.CHACHA20
    with pytest.raises(ValueError, match="unknown"):
        MaskingDevice("d0", rounds.params_for(2, 4), "rot13")


def _advertised(n: int, size: int, seed: int = 0) -> tuple[
        dict[str, np.ndarray], dict[str, MaskingDevice], MaskedSum]:
    """n devices' inputs, the devices, and a server whose advertise stage has closed."""
    inputs = _inputs(n, size, seed)
    params = rounds.params_for(n, size)
    devices = {d: MaskingDevice(d, params) for d in inputs}
    server = MaskedSum(params)
    for d in sorted(devices):
        server.add_advert(devices[d].advertise())
    server.close_adverts()
    return inputs, devices, server


def test_premasked_input_equals_the_one_masked_at_once() -> None:
    inputs, devices, server = _advertised(8, 32, seed=4)
    for d in sorted(devices)[1:]:  # dev-00 never shares: its neighbours must take it back
        server.add_shares(d, devices[d].share(server.adverts))
    for d in sorted(devices)[1:]:
        messages = server.messages_for(d)
        at_once = devices[d].mask(inputs[d], messages)
        devices[d].premask()
        assert np.array_equal(devices[d].mask(inputs[d], messages), at_once)
    with pytest.raises(ProtocolError, match="before share"):
        devices["dev-00"].premask()


def test_too_many_dropouts_fail_to_unmask_instead_of_a_wrong_sum() -> None:
    inputs = _inputs(10, 16)
    ids = sorted(inputs)
    out = rounds.run(inputs, rounds.params_for(10, 16), {3: set(ids[:7])})
    assert out.total is None and "shares" in out.error


def test_server_sees_masked_inputs_uncorrelated_with_plaintexts() -> None:
    n, size = 10, 20_000
    rng = np.random.default_rng(3)
    clip = 1.0
    params = rounds.params_for(n, size, clip=clip, cap=1)
    plain = {f"dev-{i}": quantize.clip_norm(rng.normal(0, 1, size), clip) for i in range(n)}
    inputs = {d: quantize.encode(x, 1.0, params.scale) for d, x in plain.items()}
    out = rounds.run(inputs, params, {3: {"dev-0"}})
    for d, masked in out.masked.items():
        signed = masked.view(np.int32).astype(np.float64)
        corr = np.corrcoef(signed, plain[d])[0, 1]
        # two independent vectors: corr ~ N(0, 1/size), so 6 standard errors (p ~ 2e-9)
        assert abs(corr) < 6 / np.sqrt(size)
        # and uniform over Z_2^32: the top byte's histogram against uniform, chi-square
        # with 255 degrees of freedom; 414.5 is exceeded by chance with p = 1e-9. (A
        # bound on each bin's count alone failed CI once: 256 bins x 9 devices make a
        # 4.7-sigma bin likely about once in 55 runs.)
        counts = np.bincount(masked >> 24, minlength=256)
        expected = size / 256
        assert float(np.sum((counts - expected) ** 2) / expected) < 414.5
    assert out.total is not None
    mean = quantize.decode(out.total, params.scale) / n
    exact = np.mean([plain[d] for d in sorted(plain)], axis=0)
    worst = float(np.max(np.abs(mean - exact)))
    print(f"largest difference from the plain mean: {worst:.3g}")
    assert worst <= 0.5 / params.scale


def test_device_refuses_to_reveal_both_shares_of_one_peer() -> None:
    inputs, devices, server = _advertised(6, 8)
    for d in sorted(devices):
        server.add_shares(d, devices[d].share(server.adverts))
    for d in sorted(devices):
        server.add_masked(d, devices[d].mask(inputs[d], server.messages_for(d)), 1.0)
    victim, asked = "dev-01", devices["dev-00"]
    with pytest.raises(UnmaskRefused, match="both"):
        asked.reveal([victim], [victim])
    asked.reveal([victim], [])  # honestly: victim survived
    with pytest.raises(UnmaskRefused, match="both"):
        asked.reveal([], [victim])  # a second request claiming it dropped


def test_sparse_graph_survives_dropouts_it_can_afford() -> None:
    # 40 devices: k = 24 < 39, t = 13; losing 8 can never leave a neighbourhood short.
    inputs = _inputs(40, 32, seed=9)
    ids = sorted(inputs)
    params = rounds.params_for(40, 32)
    assert params.degree == 24
    out = rounds.run(inputs, params, {3: set(ids[1::5])})
    assert out.error == ""
    assert out.total is not None and np.array_equal(out.total, _sum(inputs, ids))


def test_the_servers_stage_count_agrees_with_its_sets_at_every_message() -> None:
    # SecureRound.complete() counts instead of comparing sets; here it is held to the
    # sets after each message of each stage, dropouts included.
    from fedge.server.secure_round import MASKED, SHARE, UNMASK, SecureRound

    inputs = _inputs(6, 8)
    ids = sorted(inputs)
    params = rounds.params_for(6, 8)
    devices = {d: MaskingDevice(d, params) for d in ids}
    # One sampled device brought no keys: the round's roster (U1) leaves it out.
    secure = SecureRound(params, ids, {d: devices[d].advertise() for d in ids[:-1]})
    assert secure.expected() == set(ids[:-1])
    assert list(secure.message.devices) == ids[:-1]

    def agree() -> bool:
        assert secure.complete() == (secure.expected() <= secure.arrived())
        return secure.complete()

    steps = [(SHARE, ids[:-2], lambda d: secure.sum.add_shares(
                 d, devices[d].share(secure.sum.adverts))),
             (MASKED, ids[:-3], lambda d: secure.sum.add_masked(
                 d, devices[d].mask(inputs[d], secure.sum.messages_for(d)), 1.0)),
             (UNMASK, ids[:-3], lambda d: secure.sum.add_reveal(
                 d, *devices[d].reveal(*secure.sum.request(d))))]
    # Each stage loses one device; only the unmasking hears from all it waits for.
    for (stage, senders, send), done in zip(steps, [False, False, True], strict=True):
        secure.stage = stage
        for d in senders:
            assert not agree()
            send(d)
        assert agree() == done


def test_a_key_ring_hands_each_advertised_pair_out_once_and_drops_older_ones() -> None:
    # Every poll brings fresh keys; the server keeps a device's latest only, so once a
    # roster names one advert, no later roster can name an older one.
    ring = KeyRing("dev-0")
    adverts = [ring.fresh() for _ in range(3)]
    assert len({a.mask_public for a in adverts} | {a.encrypt_public for a in adverts}) == 6
    encrypt, mask = ring.take(adverts[1])
    assert (encrypt.public, mask.public) == (adverts[1].encrypt_public, adverts[1].mask_public)
    for spent in adverts[:2]:  # taken, and older than the one taken
        with pytest.raises(ProtocolError, match="does not hold"):
            ring.take(spent)
    assert ring.take(adverts[2])[1].public == adverts[2].mask_public
    kept = [ring.fresh() for _ in range(KeyRing.KEEP + 1)]
    with pytest.raises(ProtocolError):  # only the latest KEEP are kept
        ring.take(kept[0])
    assert ring.take(kept[-1])[0].public == kept[-1].encrypt_public


def test_a_device_refuses_a_roster_that_lists_other_keys_for_it() -> None:
    params = rounds.params_for(3, 8)
    ring = KeyRing("dev-0")
    device = MaskingDevice("dev-0", params, pairs=ring.take(ring.fresh()))
    others = {d: MaskingDevice(d, params).advertise() for d in ("dev-0", "dev-1", "dev-2")}
    with pytest.raises(ProtocolError, match="other keys"):
        device.share(others)


def test_a_secure_round_takes_each_sampled_devices_keys_once() -> None:
    from fedge.server.registry import Device
    from fedge.server.round_state import RoundSettings
    from fedge.server.secure_round import open_secure

    settings = RoundSettings(rounds=1, min_clients=1, fraction=1.0, round_timeout_s=1.0,
                             retry_backoff_s=0.0, epochs=1, lr=0.1, batch_size=8, seed=0,
                             linger_s=0.0, secure=True)
    sample = [Device(f"dev-{i}", f"session-{i}", 10) for i in range(4)]
    for d in sample[:3]:  # dev-3's poll brought no keys
        d.advert = KeyRing(d.device_id).fresh()
    adverts = {d.device_id: d.advert for d in sample}
    first = open_secure(settings, 1, sample, 8)
    assert list(first.message.devices) == ["dev-0", "dev-1", "dev-2"]
    roster = first.task_params("dev-0").roster  # 3 devices: everyone's a neighbour
    assert [a.mask_public for a in roster] == [
        adverts[f"dev-{i}"].mask_public for i in range(3)]  # type: ignore[union-attr]
    assert first.sampled == [d.device_id for d in sample]
    assert all(d.advert is None for d in sample)  # taken: no second round lists them
    assert not open_secure(settings, 2, sample, 8).message.devices


def test_a_sampled_device_without_keys_is_settled_at_once_and_never_handed_the_task(
        tmp_path: Path) -> None:
    # The driver samples only devices with keys; one whose keys a race took (it rejoined
    # between the sampling and the open, say) is refused at the round's start instead
    # of holding a TRAIN task it cannot do.
    import threading

    from fedge.server.registry import Registry
    from fedge.server.round_state import RoundSettings
    from fedge.server.rounds import Rounds
    from fedge.server.secure_round import close_secure_round
    from fedge.server.store import StateStore
    from fedge.tensors import fingerprint
    from tests.faults.rawdevice import digits_weights

    initial = digits_weights()
    settings = RoundSettings(rounds=1, min_clients=3, fraction=1.0, round_timeout_s=2.0,
                             retry_backoff_s=0.1, epochs=1, lr=0.1, batch_size=8, seed=0,
                             linger_s=0.0, secure=True, secure_stage_timeout_s=0.5)
    registry = Registry(60.0)
    rounds = Rounds(settings, fingerprint(initial), registry, StateStore(tmp_path),
                    lambda _: {"accuracy": 0.0, "loss": 0.0}, initial, "digits-mlp")
    sample = [registry.join(name, 10, {}, authenticated=True) for name in ("a", "b", "c")]
    for device in sample[:2]:
        device.advert = KeyRing(device.device_id).fresh()
    rounds.open_round(sample)
    stages = threading.Thread(target=close_secure_round, args=(rounds,), daemon=True)
    stages.start()
    try:
        assert rounds.current.secure is not None
        assert sorted(rounds.current.secure.sum.adverts) == ["a", "b"]
        deadline = time.monotonic() + 10
        while not rounds.current.assignments["c"].settled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rounds.current.assignments["c"].refused == "brought no keys for the secure round"
        assert rounds.poll(sample[2], 0.0).kind == "WAIT"
        assert rounds.poll(sample[0], 0.0).kind == "TRAIN"
    finally:
        rounds.stop()
        stages.join(10)


def test_a_task_carries_the_keys_of_its_neighbourhood_only() -> None:
    # SecAgg+'s point: a device's cost grows with k, not n. Its task lists every id (12
    # bytes each: the graph and the share points follow from them) but k + 1 adverts.
    from fedge.server.secure_round import SecureRound

    ids = [f"dev-{i:02d}" for i in range(12)]
    params = rounds.params_for(12, 8, degree=4)
    devices = {d: MaskingDevice(d, params) for d in ids}
    secure = SecureRound(params, ids, {d: devices[d].advertise() for d in ids})
    for d in ids:
        task = secure.task_params(d)
        assert list(task.devices) == ids and task.mask_prg == secure.sum.prg
        assert [a.device_id for a in task.roster] == sorted([d, *secure.sum.neighbours(d)])
        assert len(task.roster) == 5
    # What a device makes of such a task equals what the whole roster gives.
    d = ids[0]
    known = {a.device_id: secure.sum.adverts[a.device_id] for a in secure.task_params(d).roster}
    sealed = devices[d].share(known, ids, secure.sum.prg)
    assert sorted(sealed) == secure.sum.neighbours(d)
    # A task without a neighbour's keys, with keys of a device outside the round, or
    # with an unknown generator is refused.
    lacking = {p: v for p, v in known.items() if p != secure.sum.neighbours(d)[0]}
    stranger = {**known, "dev-99": Advert("dev-99", bytes(32), bytes(32))}
    for adverts, roster, name, why in ((lacking, ids, secure.sum.prg, "lacks the keys"),
                                       (stranger, ids, secure.sum.prg, "not in the round"),
                                       (known, ids, "rot13", "unknown mask generator")):
        with pytest.raises(ProtocolError, match=why):
            devices[d].share(adverts, roster, name)
