"""Key agreement and sealing, the mask generator, quantization and the neighbour graph."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedge.secure import graph, keys, prg, quantize
from fedge.threads import cores


def test_both_sides_agree_and_labels_separate_keys() -> None:
    a, b = keys.generate(), keys.generate()
    assert keys.agree(a.private, b.public, b"x") == keys.agree(b.private, a.public, b"x")
    assert keys.agree(a.private, b.public, b"x") != keys.agree(a.private, b.public, b"y")
    assert keys.public_of(a.private) == a.public


def test_sealed_message_opens_only_with_its_key_and_binding() -> None:
    key, other = bytes(range(32)), bytes(32)
    sealed = keys.seal(key, b"share", b"round 1 a->b")
    assert keys.open_sealed(key, sealed, b"round 1 a->b") == b"share"
    for k, aad, blob in ((other, b"round 1 a->b", sealed), (key, b"round 1 a->c", sealed),
                         (key, b"round 1 a->b", sealed[:-1] + bytes([sealed[-1] ^ 1]))):
        with pytest.raises(InvalidTag):
            keys.open_sealed(k, blob, aad)


def test_prg_is_chacha20_keystream_and_looks_uniform() -> None:
    seed = bytes(range(32))
    mask = prg.expand(seed, 100_000)
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), None).encryptor().update(bytes(8))
    assert mask[:2].tolist() == np.frombuffer(stream, "<u4").tolist()
    assert np.array_equal(prg.expand(seed, 10), mask[:10])
    assert not np.array_equal(prg.expand(bytes(32), 10), mask[:10])
    # Each of the 32 bits is set in half the words (binomial sd ~158 of 50,000).
    bits = np.unpackbits(mask.view(np.uint8)).reshape(-1, 32).sum(axis=0).astype(np.int64)
    assert np.all(np.abs(bits - 50_000) < 1000)


def test_prg_aes_ctr_is_its_keystream_and_differs_from_chacha20() -> None:
    seed = bytes(range(32))
    mask = prg.expand(seed, 1000, kind=prg.AES_CTR)
    # AES-128: the seed's first 16 bytes are the key
    stream = Cipher(algorithms.AES(seed[:16]), modes.CTR(bytes(16))).encryptor().update(
        bytes(8))
    assert mask[:2].tolist() == np.frombuffer(stream, "<u4").tolist()
    assert not np.array_equal(mask, prg.expand(seed, 1000))
    assert prg.preferred() in prg.NAMES
    with pytest.raises(ValueError, match="unknown mask generator"):
        prg.expand(seed, 10, kind="rot13")


def test_cpu_features_decide_the_preferred_generator() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 aes pclmulqdq\n"
    pi4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    graviton = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
    assert prg.cpu_has_aes(x86) is True
    assert prg.cpu_has_aes(x86.replace(" aes", "")) is False
    assert prg.cpu_has_aes(pi4) is False
    assert prg.cpu_has_aes(graviton) is True
    assert prg.cpu_has_aes("processor\t: 0\nvendor_id\t: x\n") is None


def test_the_preferred_generator_does_not_depend_on_how_busy_the_process_is() -> None:
    # Timed while other threads held the interpreter lock, the choice was chance; one
    # device that chose ChaCha20 slowed its whole round. Where the CPU's features cannot
    # be read the choice is still timed, and may be.
    if prg.this_cpu_has_aes() is None:
        pytest.skip("this CPU's features cannot be read: the generator is timed")
    quiet = prg.preferred()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinners = [threading.Thread(target=spin) for _ in range(4)]
    for t in spinners:
        t.start()
    try:
        answers = set()
        for _ in range(10):
            prg._preference.cache_clear()
            answers.add(prg.preferred())
    finally:
        stop.set()
        for t in spinners:
            t.join()
    assert answers == {quiet}


def test_keystream_loops_run_at_most_one_a_core_at_once(monkeypatch) -> None:
    # A simulation's devices all mask at once; each loop's working set is 8 MiB of
    # cache, and more loops than cores only evict each other's.
    inner, lock = prg._add_keystreams, threading.Lock()
    running, most = [0], [0]

    def counted(*args: object) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        inner(*args)  # type: ignore[arg-type]
        with lock:
            running[0] -= 1

    monkeypatch.setattr(prg, "_add_keystreams", counted)
    seeds = [bytes([i]) * 32 for i in range(3)]
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(prg.accumulate(
        np.empty(1000, np.uint32), [(s, 1) for s in seeds], fresh=True)))
        for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= most[0] <= cores()
    expected = sum((prg.expand(s, 1000) for s in seeds), np.zeros(1000, np.uint32))
    assert len(results) == 8 and all(np.array_equal(r, expected) for r in results)


@pytest.mark.parametrize("kind", prg.NAMES)
@pytest.mark.parametrize("first", [1, -1])
def test_accumulate_is_the_signed_sum_of_expansions(kind: str, first: int) -> None:
    # A size that is not a whole number of accumulate()'s blocks.
    size = 2 * (prg._BLOCK // 4) + 17
    terms = [(bytes([i]) * 32, first if i == 0 else (-1) ** i) for i in range(5)]
    expected = np.zeros(size, np.uint32)
    for seed, sign in terms:
        mask = prg.expand(seed, size, kind=kind)
        expected = expected + mask if sign > 0 else expected - mask
    fresh = np.full(size, 7, np.uint32)  # whatever it held is ignored
    assert np.array_equal(prg.accumulate(fresh, terms, kind, fresh=True), expected)
    onto = np.arange(size, dtype=np.uint32)
    prg.accumulate(onto, terms, kind)
    assert np.array_equal(onto, expected + np.arange(size, dtype=np.uint32))
    assert np.array_equal(prg.accumulate(np.ones(4, np.uint32), [], kind, fresh=True),
                          np.zeros(4, np.uint32))
    with pytest.raises(ValueError, match="sign"):
        prg.accumulate(onto, [(bytes(32), 2)], kind)


def test_quantized_sum_decodes_to_weighted_sum_within_rounding() -> None:
    rng = np.random.default_rng(0)
    clip, cap, n = 2.0, 100, 7
    scale = quantize.round_scale(clip, cap, n)
    xs = [quantize.clip_norm(rng.normal(0, 1, 1000), clip) for _ in range(n)]
    weights = rng.integers(1, cap + 1, n)
    assert all(np.linalg.norm(x) <= clip + 1e-9 for x in xs)
    total = np.zeros(1000, np.uint32)
    for x, w in zip(xs, weights, strict=True):
        total += quantize.encode(x, float(w), scale)
    exact = sum(w * x for x, w in zip(xs, weights, strict=True))
    assert np.max(np.abs(quantize.decode(total, scale) - exact)) <= n * 0.5 / scale
    assert quantize.in_range(total, clip, float(weights.sum()), scale, n)
    assert not quantize.in_range(total + np.uint32(1 << 31), clip, float(weights.sum()),
                                 scale, n)


def _blocks(vector: np.ndarray, size: int = 65_536) -> quantize.Blocks:
    """vector's blocks, copied afresh at each call (encode_blocks may overwrite them)."""
    return lambda: (vector[i:i + size].copy() for i in range(0, vector.size, size))


@pytest.mark.parametrize("clip", [0.5, 1e6], ids=["clipped", "short"])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_encode_blocks_is_clip_noise_and_encode_in_one_pass(clip: float, noise: float
                                                            ) -> None:
    vector = np.random.default_rng(2).normal(0, 0.01, 200_003)
    scale = quantize.round_scale(clip, 100, 10, noise)
    expected = quantize.clip_norm(vector, clip)
    if noise:  # the same generator state: drawn per block, the same stream
        expected = expected + np.random.default_rng(9).normal(0.0, noise, vector.size)
    expected = quantize.encode(expected, 37.0, scale)
    got = quantize.encode_blocks(_blocks(vector), vector.size, clip, 37.0, scale, noise,
                                 np.random.default_rng(9))
    assert got.dtype == np.uint32 and got.shape == expected.shape
    # The norm is summed per block: its last bit may differ, and move a rounding by 1.
    off = np.abs((got - expected).view(np.int32))
    assert off.max() <= (0 if clip > 1 else 1) and np.mean(off) < 1e-3
    assert np.abs(quantize.decode(got, scale) / 37.0).max() <= clip + noise * 10


def test_encode_blocks_saturates_a_value_beyond_int32_instead_of_wrapping() -> None:
    # Only a draw of the DP noise dozens of deviations out gets here (the round's scale
    # keeps |value| <= 2^30). Saturated, the value stays an extreme of its sign, so the
    # sum fails its range check; no "invalid value" cast warning on the way.
    vector = np.array([0.5, -0.5, 0.25, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = quantize.encode_blocks(_blocks(vector, 2), 4, 1.0, 1.0, float(1 << 33), 1e-12,
                                     np.random.default_rng(0))
    assert got.view(np.int32).tolist() == [2**31 - 1, -2**31, 2**31 - 1, 0]


def test_encode_blocks_refuses_non_finite_and_wrong_sizes() -> None:
    vector = np.ones(100)
    vector[70] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        quantize.encode_blocks(_blocks(vector, 32), 100, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="99 parameters"):
        quantize.encode_blocks(_blocks(np.ones(100), 32), 99, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="generator"):
        quantize.encode_blocks(_blocks(np.ones(100), 32), 100, 1.0, 1.0, 1.0, 0.1)


def test_clip_norm_refuses_non_finite_and_never_scales_up() -> None:
    small = np.array([0.1, 0.2])
    assert np.array_equal(quantize.clip_norm(small, 1.0), small)
    with pytest.raises(ValueError, match="non-finite"):
        quantize.clip_norm(np.array([1.0, np.nan]), 1.0)


def test_graph_is_regular_symmetric_deterministic_and_order_free() -> None:
    ids = [f"dev-{i:03d}" for i in range(100)]
    k = graph.default_degree(len(ids))
    assert k == 28
    g = graph.neighbours(ids, k, b"round-seed")
    assert g == graph.neighbours(list(reversed(ids)), k, b"round-seed")
    assert g != graph.neighbours(ids, k, b"another-seed")
    assert all(len(peers) == k for peers in g.values())
    assert all(d in g[p] and d not in peers for d, peers in g.items() for p in peers)
    full = graph.neighbours(ids[:5], 8, b"s")
    assert all(len(peers) == 4 for peers in full.values())


@pytest.mark.parametrize("version,releases", [("46.0.7", False), ("49.0.0", False),
                                              ("50.0.2", True), ("51.0.0.dev1", True)])
def test_which_cryptography_releases_the_lock_while_expanding(
        monkeypatch: pytest.MonkeyPatch, version: str, releases: bool) -> None:
    import cryptography

    monkeypatch.setattr(cryptography, "__version__", version)
    assert prg.releases_interpreter_lock() is releases
