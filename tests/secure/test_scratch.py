"""The scratch pool: a vector given back is the next borrower's, the pool keeps no more
than its bound, and two holders never share one vector."""

from __future__ import annotations

import threading

import numpy as np

from fedge.secure.scratch import ScratchPool


def test_a_vector_given_back_is_lent_again_for_the_same_size_and_type() -> None:
    pool = ScratchPool(1 << 20)
    with pool.borrow(1000, np.uint32) as first:
        first[:] = 7
    with pool.borrow(1000, np.uint32) as again:
        assert again is first
    with pool.borrow(1000, np.float64) as other_type, pool.borrow(999, np.uint32) as other:
        assert other_type is not first and other is not first
        assert other_type.dtype == np.float64 and other.shape == (999,)


def test_two_holders_at_once_get_two_vectors() -> None:
    pool = ScratchPool(1 << 20)
    with pool.borrow(100, np.uint32) as a, pool.borrow(100, np.uint32) as b:
        assert a is not b
        assert not np.shares_memory(a, b)
    assert pool.kept_bytes == 800


def test_the_pool_keeps_no_more_than_its_bound() -> None:
    pool = ScratchPool(4000)  # room for one vector of 1000 uint32
    with pool.borrow(1000, np.uint32), pool.borrow(1000, np.uint32), \
            pool.borrow(1000, np.uint32):
        assert pool.kept_bytes == 0
    assert pool.kept_bytes == 4000
    with pool.borrow(2000, np.uint32):  # larger than the bound: never kept
        pass
    assert pool.kept_bytes == 4000


def test_a_vector_is_given_back_when_its_block_raises() -> None:
    pool = ScratchPool(1 << 20)
    try:
        with pool.borrow(10, np.uint32) as lent:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with pool.borrow(10, np.uint32) as again:
        assert again is lent


def test_threads_borrowing_at_once_never_hold_the_same_vector() -> None:
    pool = ScratchPool(1 << 24)
    held: set[int] = set()
    clash = threading.Event()
    guard = threading.Lock()

    def work() -> None:
        for _ in range(300):
            with pool.borrow(256, np.uint32) as vector:
                with guard:
                    if id(vector) in held:
                        clash.set()
                    held.add(id(vector))
                vector.fill(1)
                with guard:
                    held.discard(id(vector))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clash.is_set()
    assert 0 < pool.kept_bytes <= 8 * 256 * 4
