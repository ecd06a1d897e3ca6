"""The CPU backend's buffers kept for reuse (``_numba_memory``): memory is handed out again only
once nothing refers to it, products and plans on reused memory are bitwise those on new memory,
a training loop takes its predecessor's memory, and what is kept stays bounded."""

import os
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest

import laplexops as lx
from laplex_testing import run_in_threads
from laplexops.backends import _numba_memory
from laplexops.backends._numba_memory import MIN_BYTES, POOL, BufferPool

SIZE = MIN_BYTES // 8  # float64 elements of a buffer the pool serves


@pytest.fixture
def pool():
    return BufferPool(64 * MIN_BYTES)


def test_memory_in_use_is_never_handed_out_again(pool, rng):
    a = pool.empty(SIZE, np.float64)
    a[:] = rng.standard_normal(SIZE)
    kept = a.copy()
    b = pool.empty(SIZE, np.float64)  # a is alive: new memory
    b[:] = 0
    assert not np.shares_memory(a, b)
    assert np.array_equal(a, kept)


def test_a_view_keeps_its_memory_in_use(pool):
    a = pool.empty((SIZE // 4, 4), np.float64)
    tail = a[1:].view(np.uint8)[3:, 5:]  # a view of views: its base is the pool's buffer
    del a
    b = pool.empty((SIZE // 4, 4), np.float64)
    assert not np.shares_memory(b, tail)
    addresses = {_address(b), _address(tail.base)}
    del b, tail
    c = pool.empty(SIZE, np.float64)  # both free now: one of them again
    assert _address(c) in addresses
    assert pool.held_bytes() == (SIZE * 8, SIZE * 8)


def _address(a):
    return a.__array_interface__["data"][0]


def test_free_memory_is_handed_out_again_in_any_dtype_and_shape(pool):
    a = pool.empty(2 * SIZE, np.float64)
    address = _address(a)
    del a
    b = pool.empty((SIZE, 2), np.int64)  # the same bytes
    assert _address(b) == address
    assert b.shape == (SIZE, 2) and b.dtype == np.int64 and b.flags.c_contiguous
    del b
    c = pool.empty(4 * SIZE - SIZE // 4, np.float32)  # a sixteenth less
    assert _address(c) == address
    del c
    d = pool.empty(SIZE, np.float64)  # half: too much waste, new memory
    assert _address(d) != address


def test_small_and_large_arrays_are_plain_numpy_arrays(pool):
    small = pool.empty(MIN_BYTES // 8 - 1, np.float64)
    large = pool.empty(pool.keep_bytes // 4 + 8, np.uint8)
    assert small.base is None and large.base is None
    assert pool.held_bytes() == (0, 0)


def test_free_memory_beyond_the_limit_is_let_go(pool):
    arrays = [pool.empty(SIZE * (1 + i % 3), np.float64) for i in range(40)]
    in_use, free = pool.held_bytes()
    assert in_use == sum(a.nbytes for a in arrays) and free == 0
    del arrays
    pool.trim()
    in_use, free = pool.held_bytes()
    assert in_use == 0 and 0 < free <= pool.keep_bytes // 8  # nothing in use
    assert pool.release() == free
    assert pool.held_bytes() == (0, 0)


def test_free_memory_is_bounded_and_goes_when_nothing_is_in_use(pool):
    live = [pool.empty(2 * SIZE, np.float64) for _ in range(2)]  # keep_bytes: 64 MiB
    dead = [pool.empty(2 * SIZE, np.float64) for _ in range(40)]
    del dead
    pool.trim()
    assert pool.held_bytes() == (4 * MIN_BYTES, 64 * MIN_BYTES)
    del live[0]
    pool.trim()
    assert pool.held_bytes() == (2 * MIN_BYTES, 64 * MIN_BYTES)
    del live
    pool.trim()
    assert pool.held_bytes() == (0, 8 * MIN_BYTES)  # an eighth of keep_bytes


def test_a_pool_that_keeps_nothing_hands_out_numpy_arrays():
    off = BufferPool(0)
    a = off.empty(SIZE, np.float64)
    assert a.base is None and off.held_bytes() == (0, 0)


def test_touch_writes_new_memory_once(pool):
    a = pool.empty(SIZE, np.float64, touch=True)
    assert np.all(a == 0)


def test_threads_never_share_memory(pool):
    """Threads taking and dropping arrays at once: every array alive at the same time is on
    memory of its own."""
    errors = []

    def work(seed):
        r = np.random.default_rng(seed)
        held = []
        for _ in range(200):
            a = pool.empty(SIZE * int(r.integers(1, 3)), np.float64)
            a[:] = seed
            held.append(a)
            if len(held) > 3:
                old = held.pop(int(r.integers(0, len(held))))
                if not np.all(old == seed):
                    errors.append(seed)

    run_in_threads(work, 4)
    assert not errors


@contextmanager
def _pool_off():
    """The CPU backend's pool keeping nothing, within the block."""
    keep = POOL.keep_bytes
    POOL.keep_bytes = 0
    try:
        yield
    finally:
        POOL.keep_bytes = keep


def test_products_on_reused_memory_equal_those_on_new_memory(rng):
    """Products, adjoints and gradients of fresh operators, each made where its predecessor's
    memory is free, against the same with the pool off: bitwise."""
    n = 200_000
    x, y = rng.random(n) * n, rng.random(n - 7) * n
    v, g = rng.standard_normal(n - 7), rng.standard_normal(n)

    def results():
        op = lx.LaplexOperator(x, y, 0.7)
        grads = op.gradient(v, g)
        return [op @ v, op.rmatvec(g), grads.x, grads.y, np.array(grads.rate), grads.v]

    first = results()
    again = results()  # on the first one's memory
    with _pool_off():
        new = results()
    for a, b, c in zip(first, again, new):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_a_training_loop_takes_its_predecessors_memory(rng):
    """After a step or two, training steps (``with_anchors`` after small moves, a product, a
    gradient) allocate a small part of what they do with the pool off."""
    n = 300_000
    x, y, v = rng.random(n) * n, rng.random(n) * n, rng.standard_normal(n)

    def moved(a):
        return a + rng.uniform(-0.01, 0.01, n)

    def new_bytes():
        op = lx.LaplexOperator(x, y)
        for _ in range(3):  # the old operator gone before the new plan is built, as in a loop
            op = op.with_anchors(moved(x), moved(y))
            op.gradient(v, op @ v)
        tracemalloc.start()
        try:
            for _ in range(3):
                op = op.with_anchors(moved(x), moved(y))
                op.gradient(v, op @ v)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    reused = new_bytes()
    with _pool_off():
        fresh = new_bytes()
    assert reused < 0.25 * fresh, (reused / (2 * n), fresh / (2 * n))


def test_release_memory_lets_free_memory_go(rng):
    lx.release_memory()
    n = 200_000
    op = lx.LaplexOperator(rng.random(n), rng.random(n))
    op @ rng.standard_normal(n)
    in_use, _ = POOL.held_bytes()
    assert in_use > 0  # the plan's arrays
    del op
    _, free = POOL.held_bytes()
    assert free >= in_use
    assert lx.release_memory() == free
    assert POOL.held_bytes()[1] == 0


@pytest.mark.parametrize("text", ["lots", "-1", "1.5e9"])
def test_a_bad_keep_setting_is_refused_at_import(text):
    done = subprocess.run(
        [sys.executable, "-c", "import laplexops"],
        capture_output=True,
        text=True,
        env=dict(os.environ, LAPLEXOPS_KEEP_BYTES=text),
        check=False,
    )
    assert done.returncode != 0
    assert "LAPLEXOPS_KEEP_BYTES" in done.stderr


def test_the_keep_setting_is_read_at_import(monkeypatch):
    monkeypatch.setenv("LAPLEXOPS_KEEP_BYTES", "12345")
    assert _numba_memory._keep_bytes_from_environment() == 12345
    monkeypatch.setenv("LAPLEXOPS_KEEP_BYTES", " ")
    assert _numba_memory._keep_bytes_from_environment() == 512 << 20


def test_a_trim_while_the_pool_is_busy_waits_for_its_next_call(pool):
    """A plan's finalizer may run inside the pool's own call (the garbage collector): it must
    not wait for the lock that call holds."""
    dead = [pool.empty(2 * SIZE, np.float64) for _ in range(40)]
    del dead
    with pool._lock:
        pool.trim()  # returns at once
    assert pool.held_bytes() == (0, 80 * MIN_BYTES)
    pool.trim()
    assert pool.held_bytes() == (0, 8 * MIN_BYTES)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
def test_a_child_forked_while_the_pool_is_busy_can_use_it(pool):
    """The lock of a pool busy in another thread at a fork is not held in the child."""
    with pool._lock:
        pid = os.fork()
        if pid == 0:  # the child: exit 0 once it has an array, or be killed below
            code = 1
            try:
                pool.empty(SIZE, np.float64)[:] = 1.0
                code = 0
            finally:
                os._exit(code)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child waited for the parent's lock")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
