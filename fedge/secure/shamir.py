"""Shamir's t-of-n secret sharing over a prime field.

Shamir. "How to Share a Secret". Communications of the ACM 22(11), 1979.

A secret s is the constant term of a random polynomial f of degree t-1 over GF(p); share
x is (x, f(x)). Any t shares give f(0) = s by Lagrange interpolation; t-1 shares are
uniformly distributed whatever s is, so they say nothing about it. The default field is
GF(2^521 - 1) (a Mersenne prime), wide enough for a 32-byte key in one share.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # big-endian width of a value of GF(2^521 - 1)


def evaluate(coefficients: Sequence[int], x: int, prime: int = PRIME) -> int:
    """f(x) mod prime for f(x) = sum_i coefficients[i] * x^i (Horner's rule)."""
    value = 0
    for c in reversed(coefficients):
        value = (value * x + c) % prime
    return value


def uniform_below(bound: int, count: int) -> list[int]:
    """count integers drawn uniformly from [0, bound) by the operating system's CSPRNG, in
    one read of its entropy per batch (not a system call per number, as
    secrets.randbelow makes), with the same rejection sampling."""
    bits = max(1, (bound - 1).bit_length())
    width = (bits + 7) // 8
    out: list[int] = []
    while len(out) < count:
        need = count - len(out)
        pool = os.urandom(width * need)
        for i in range(need):
            value = int.from_bytes(pool[i * width:(i + 1) * width], "big") >> (8 * width - bits)
            if value < bound:
                out.append(value)
    return out


def split(secret: int, threshold: int, xs: Iterable[int], prime: int = PRIME,
          coefficients: Sequence[int] | None = None) -> dict[int, int]:
    """Shares of secret at the points xs, any threshold of which reconstruct it.

    coefficients: f's coefficients of degree 1..t-1 (default: drawn uniformly by the
    operating system's CSPRNG); given only to check known vectors.
    """
    points = list(xs)
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold must be in 1..{len(points)}, got {threshold}")
    if not 0 <= secret < prime:
        raise ValueError("secret must be an element of the field")
    if len(set(points)) != len(points) or any(not 0 < x < prime for x in points):
        raise ValueError("share points must be distinct and nonzero")
    if coefficients is None:
        coefficients = uniform_below(prime, threshold - 1)
    if len(coefficients) != threshold - 1:
        raise ValueError(f"need {threshold - 1} coefficients, got {len(coefficients)}")
    poly = [secret, *coefficients]
    return {x: evaluate(poly, x, prime) for x in points}


def combine(shares: Mapping[int, int], prime: int = PRIME) -> int:
    """f(0) from shares {x: f(x)} by Lagrange interpolation (needs at least t shares;
    fewer give a uniformly random-looking wrong answer, not an error)."""
    if not shares:
        raise ValueError("no shares to combine")
    secret = 0
    points = list(shares.items())
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % prime
                den = den * (xi - xj) % prime
        secret = (secret + yi * num * pow(den, -1, prime)) % prime
    return secret


def split_bytes(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, bytes]:
    """Shares of a byte string of at most 64 bytes, each SHARE_BYTES long."""
    if len(secret) > 64:
        raise ValueError("a secret of at most 64 bytes fits one share")
    shares = split(int.from_bytes(secret, "big"), threshold, xs)
    return {x: y.to_bytes(SHARE_BYTES, "big") for x, y in shares.items()}


def combine_bytes(shares: Mapping[int, bytes], length: int) -> bytes:
    """The byte string of the given length that split_bytes shared."""
    value = combine({x: int.from_bytes(y, "big") for x, y in shares.items()})
    if value >= 1 << (8 * length):
        raise ValueError("the shares do not reconstruct a secret of that length")
    return value.to_bytes(length, "big")
