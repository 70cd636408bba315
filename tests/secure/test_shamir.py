"""Shamir sharing: known vectors, reconstruction from any t shares, and t-1 shares that
are uniform whatever the secret."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections import Counter

import pytest

from fedge.secure import shamir


def test_known_vector_from_shamir_wikipedia_example() -> None:
    # Wikipedia's worked example: secret 1234, f(x) = 1234 + 166x + 94x^2 over GF(1613).
    shares = shamir.split(1234, 3, range(1, 7), prime=1613, coefficients=[166, 94])
    assert shares == {1: 1494, 2: 329, 3: 965, 4: 176, 5: 1188, 6: 775}
    assert shamir.combine({2: 329, 4: 176, 5: 1188}, prime=1613) == 1234


def test_any_t_shares_reconstruct_and_fewer_do_not() -> None:
    rng = random.Random(7)
    for _ in range(5):
        secret = rng.randbytes(32)
        shares = shamir.split_bytes(secret, 4, range(1, 8))
        for subset in itertools.combinations(shares, 4):
            assert shamir.combine_bytes({x: shares[x] for x in subset}, 32) == secret
        three = {x: shares[x] for x in (1, 3, 6)}
        with contextlib.suppress(ValueError):  # the wrong value may not fit 32 bytes
            assert shamir.combine_bytes(three, 32) != secret


def test_t_minus_one_shares_are_uniform_whatever_the_secret() -> None:
    # Over a small field, the distribution of (share at 1, share at 2) of a 3-of-n
    # sharing is uniform over GF(p)^2 for every secret: chi-square against uniform.
    p, draws = 11, 24200
    for secret in (0, 5):
        counts = Counter(tuple(shamir.split(secret, 3, [1, 2, 3], prime=p).values())[:2]
                         for _ in range(draws))
        expected = draws / p**2
        chi2 = sum((counts[(a, b)] - expected) ** 2 / expected
                   for a in range(p) for b in range(p))
        assert len(counts) == p**2
        assert chi2 < 237.3  # 120 degrees of freedom: p = 1e-9 to exceed by chance


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(1, 4, [1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(1, 2, [1, 1, 2])
    with pytest.raises(ValueError, match="64 bytes"):
        shamir.split_bytes(bytes(65), 2, [1, 2])
