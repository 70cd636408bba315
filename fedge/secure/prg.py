"""The mask generator: a 32-byte seed expanded into a vector of Z_{2^32}.

Two vetted stream ciphers from ``cryptography``, keyed by the seed and run over zeros:
ChaCha20 (RFC 8439; the seed is its 256-bit key) and AES-128 in counter mode (the seed's
first 16 bytes are its key). Either keystream, read as little-endian uint32, is
computationally indistinguishable from uniform, which is all a one-time pad mod 2^32
needs. Each seed masks one vector once (it is derived per round and per pair), so the
fixed nonce (counter block) is never reused under a key.

AES-128, not AES-256: a pair seed is as strong as the X25519 agreement it comes from,
about 128 bits, so a longer AES key adds nothing to the masks, while AES-128's 10 rounds
(against 14) expand 1.2-1.3x faster (7.3-7.5 GB/s against 5.7-6.3 on one core of the
bench machine; BENCHMARKS.md). A self-mask seed's first 16 bytes are 128 random bits.

Which one a round uses is a matter of speed only. A CPU with AES instructions (x86's
AES-NI, ARMv8's crypto extensions) runs AES-CTR at about twice ChaCha20's rate; one
without them (a Raspberry Pi 4's Cortex-A72) runs it several times slower. Each device
advertises the one that is faster on it (:func:`preferred`: by whether its CPU has AES
instructions, measured only where that cannot be read), and a round uses AES-CTR only
when every device in it prefers it (``fedge.secure.masks.round_prg``): the slowest
device sets the round's pace.
"""

from __future__ import annotations

import functools
import platform
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedge.secure import scratch
from fedge.threads import cores

CHACHA20 = "chacha20"
AES_CTR = "aes-128-ctr"  # "aes-256-ctr" until 2026-12: now an unknown name
NAMES = (CHACHA20, AES_CTR)
DEFAULT = CHACHA20  # what a round uses unless every device prefers another

LITTLE = sys.byteorder == "little"
_NONCE = bytes(16)  # ChaCha20: 4-byte counter + 12-byte nonce; AES-CTR: the counter block
# Bytes of keystream written per call: accumulate()'s block. Not smaller: in a
# simulation, devices are threads under one interpreter lock, which each call releases
# and must then win back; 12 device premasks (29 masks of 1M entries each) beside 4 busy
# threads took 14.3 s in 256 KiB blocks and 2.1 s in 4 MiB ones (alone, about 31 ms
# each either way).
_BLOCK = 1 << 22
_ZEROS = memoryview(bytes(_BLOCK))  # never written: its pages stay the shared zero page


# How many keystream loops may run at once in this process: one a core. A daemon runs one
# anyway; a simulation runs dozens of devices as threads, and since the cipher and
# numpy release the interpreter lock, all of them would be inside their loops at once,
# each with 8 MiB of scratch and sum in the cache (its block and its output), the cores
# switching between them. 32 threads of one process summing 30 keystreams of 1M
# entries took 35 CPU ms a sum that way, 19.5 ms two at a time (20 alone): the rest were
# the cache misses of working sets that no longer fit (BENCHMARKS.md).
_LOOPS = threading.BoundedSemaphore(cores())


def _encryptor(seed: bytes, kind: str) -> CipherContext:
    if len(seed) != 32:
        raise ValueError("a mask seed is 32 bytes")
    if kind == CHACHA20:
        return Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    if kind == AES_CTR:
        return Cipher(algorithms.AES(seed[:16]), modes.CTR(_NONCE)).encryptor()
    raise ValueError(f"unknown mask generator {kind!r} (known: {', '.join(NAMES)})")


def expand(seed: bytes, size: int, out: np.ndarray | None = None, kind: str = DEFAULT
           ) -> np.ndarray:
    """size uint32 values from the seed's keystream (kind: CHACHA20 or AES_CTR).

    out: a uint32 vector of size to write them into (a caller that expands many seeds
    reuses one buffer). The keystream is written in place, a block at a time
    (accumulate() of the one seed): update() would allocate it as bytes first, which
    costs more than the cipher itself for a large model.
    """
    return accumulate(_vector(out, size), [(seed, 1)], kind, fresh=True)


def accumulate(out: np.ndarray, terms: Sequence[tuple[bytes, int]], kind: str = DEFAULT,
               fresh: bool = False) -> np.ndarray:
    """out + sum of sign * expand(seed) over terms (seed, sign = +1 or -1), mod 2^32, in
    place; fresh: out's contents are ignored (the sum alone).

    The keystreams are produced a block (4 MiB) at a time, and every term's block is
    added into out's before the next block: for a large model no model-sized scratch
    vector is written, and the first term is written straight into out.
    """
    out = _vector(out, out.size)
    if not terms and not fresh:
        return out
    encryptors = [(_encryptor(seed, kind), sign) for seed, sign in terms]
    if any(sign not in (1, -1) for _, sign in encryptors):
        raise ValueError("a term's sign is +1 or -1")
    if fresh and not encryptors:
        out.fill(0)
    with _LOOPS, scratch.POOL.borrow(min(_BLOCK // 4, out.size), np.uint32) as block:
        _add_keystreams(out, encryptors, block, fresh)
    return out


def _add_keystreams(out: np.ndarray, encryptors: list[tuple[CipherContext, int]],
                    block: np.ndarray, fresh: bool) -> None:
    """accumulate()'s loop, with block as the keystream's scratch."""
    raw = memoryview(block.view(np.uint8).data)
    for start in range(0, out.size, block.size):
        part = out[start:start + block.size]
        n = part.size
        for i, (encryptor, sign) in enumerate(encryptors):
            direct = fresh and i == 0 and LITTLE  # the first keystream is the sum so far
            target = memoryview(part.view(np.uint8).data) if direct else raw[:4 * n]
            encryptor.update_into(_ZEROS[:4 * n], target)
            if direct:
                if sign < 0:
                    np.negative(part, out=part)
                continue
            keystream = block[:n]
            if not LITTLE:
                keystream.byteswap(inplace=True)
            if fresh and i == 0:
                np.copyto(part, keystream if sign > 0 else np.negative(keystream))
            elif sign > 0:
                np.add(part, keystream, out=part)
            else:
                np.subtract(part, keystream, out=part)


def _vector(out: np.ndarray | None, size: int) -> np.ndarray:
    if out is None:
        return np.empty(size, np.uint32)
    if out.dtype != np.uint32 or out.shape != (size,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous vector of {size} uint32 values")
    return out


def releases_interpreter_lock() -> bool:
    """Whether the installed ``cryptography`` lets other threads run while it expands a
    keystream: 50.0 and newer (pyca/cryptography#15359). Older releases hold Python's
    interpreter lock through each call, so devices simulated as threads of one process
    mask one at a time, and the rest of the process waits meanwhile (BENCHMARKS.md)."""
    import cryptography

    major = cryptography.__version__.split(".")[0]
    return not major.isdigit() or int(major) >= 50


_MEASURING = threading.Lock()


def preferred() -> str:
    """The generator that is faster on this machine: AES-CTR where the CPU has AES
    instructions, ChaCha20 where it has none (:func:`cpu_has_aes`), and where the CPU's
    features cannot be read, the faster of the two measured (:func:`_measure`). Decided
    once per process; the lock makes the devices that a simulation runs as threads of
    one process wait for the one answer.

    Not measured where the features are known: a timing taken while other threads were
    busy (a simulation's devices, a daemon's own downloads) picked ChaCha20 in 3 to 7 of
    20 tries on an AES machine, wall clock or the thread's CPU clock alike (each short
    call's wait for the interpreter lock outweighs the cipher). One such device makes
    the whole round mask with ChaCha20 (fedge.secure.masks.round_prg), at half the
    speed, and which round did was chance (BENCHMARKS.md)."""
    with _MEASURING:
        return _preference()


@functools.cache
def _preference() -> str:
    has_aes = this_cpu_has_aes()
    if has_aes is None:
        return _measure()
    return AES_CTR if has_aes else CHACHA20


def this_cpu_has_aes() -> bool | None:
    """cpu_has_aes of this machine's /proc/cpuinfo; on an Apple arm64 Mac True (all its
    cores have them); None where neither tells."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpu_has_aes(f.read())
    except OSError:  # not Linux
        return True if sys.platform == "darwin" and platform.machine() == "arm64" else None


def cpu_has_aes(cpuinfo: str) -> bool | None:
    """Whether /proc/cpuinfo's text lists AES instructions: x86's ``aes`` flag (AES-NI),
    ARMv8's ``aes`` feature (its crypto extensions); None when it lists no features.
    OpenSSL uses them where they are, and its AES-CTR then runs about twice as fast as
    its ChaCha20; without them several times slower."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return "aes" in value.split()
    return None


def _measure() -> str:
    """Each generator expands 256 KiB five times, interleaved; the faster best time
    wins (AES-CTR only when it is at least as fast). About 2 ms."""
    out = np.empty(1 << 16, np.uint32)
    best = {kind: float("inf") for kind in NAMES}
    for _ in range(5):
        for kind in NAMES:
            start = time.perf_counter()
            expand(bytes(32), out.size, out, kind)
            best[kind] = min(best[kind], time.perf_counter() - start)
    return AES_CTR if best[AES_CTR] <= best[CHACHA20] else CHACHA20
