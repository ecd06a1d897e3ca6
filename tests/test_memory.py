"""Memory: no O(m n) allocation outside ``to_dense``; a product's peak extra memory is O(m + n).

NumPy reports its allocations to ``tracemalloc``, and every array the Numba backend uses (plan,
scratch, results) is allocated through NumPy, so the traced peak bounds what a call needs.
"""

import tracemalloc

import numpy as np
import pytest

import laplexops as lx
from laplexops.backends._numba_memory import POOL


@pytest.fixture(autouse=True)
def _nothing_kept_for_reuse(monkeypatch):
    """What a call needs, measured with the CPU backend keeping no memory for reuse: kept
    buffers would serve it from memory allocated before the trace (``test_memory_pool``)."""
    lx.release_memory()
    monkeypatch.setattr(POOL, "keep_bytes", 0)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rate", [1.0, 0.5 + 2j])
def test_fresh_product_and_gradient_memory_is_linear(dtype, rate, rng):
    m, n = 150_000, 100_000
    x = (rng.random(m) * m).astype(dtype)
    y = (rng.random(n) * n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(m).astype(dtype)
    itemsize = np.dtype(
        np.result_type(dtype, np.complex64 if isinstance(rate, complex) else dtype)
    ).itemsize
    budget = 40 * (m + n) * max(itemsize, 8)  # a generous constant; m * n would be ~1e10 entries

    def work():
        op = lx.LaplexOperator(x, y, rate)
        op @ v
        op.rmatvec(g)
        op.gradient(v, g)

    # once outside the trace: Numba compiles the kernels that only large calls use (the parallel
    # builds, routes) on first use, and its compiler's Python objects would count in the peak
    work()
    peak = _peak_bytes(work)
    assert peak < budget, f"peak {peak / 1e6:.1f} MB exceeds O(m + n) budget {budget / 1e6:.1f} MB"


def test_matmat_memory_is_linear_in_columns(rng):
    n, k = 100_000, 6
    x = rng.random(n) * n
    V = rng.standard_normal((n, k))
    op = lx.LaplexOperator(x, rng.permutation(x))
    lx.LaplexOperator(x, rng.permutation(x)) @ V  # the kernels compiled outside the trace
    op @ V[:, :1]  # the plan outside the trace (its scratch for k columns inside)
    peak = _peak_bytes(lambda: op @ V)
    assert peak < 12 * n * k * 8, f"peak {peak / 1e6:.1f} MB for a ({n}, {k}) matmat"


@pytest.mark.parametrize("dtype, per_point", [(np.float64, 61), (np.float32, 41)])
def test_fresh_matvec_peak_per_point(dtype, per_point, rng):
    """A fresh float64 matvec (validation, snapshots, plan, product) peaks at about 58.4 bytes
    per point of m + n (38.4 for float32); of these the routes of the permutations take 6 and
    the rows' route's inverse 2 per row. The results are staged for their route in the sorted
    operand's scratch, made as large as the larger of the two (here the rows')."""
    m, n = 300_000, 200_000
    x, y = (rng.random(m) * m).astype(dtype), (rng.random(n) * n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    lx.LaplexOperator(x, y) @ v  # every kernel this size uses compiled outside the trace
    peak = _peak_bytes(lambda: lx.LaplexOperator(x, y) @ v)
    assert peak <= per_point * (m + n), f"{peak / (m + n):.1f} bytes per point"


@pytest.mark.parametrize("m, n, per_anchor", [(200_000, 150_000, 41), (150_000, 200_000, 43)])
def test_scratch_and_decays_above_the_keep_limits_are_made_per_call(
    m, n, per_anchor, rng, monkeypatch
):
    """A plan keeps its scan scratch between calls only up to ``_Scratch.KEEP_BYTES``, and its
    decays up to ``_DECAY_CACHE_BYTES`` beyond the newest set: larger ones (a training step at
    1e8) are made for each call and dropped. A gradient then holds neither the product's
    scratch nor both sides' decays (nor, above ``_COUNTS_KEEP_BYTES``, both sides' merge
    counts), takes its decays out of the cache and lets each array go once read for the last
    time: in float64 it peaks at about 39.4 bytes per anchor of m + n with more rows than
    columns, 41.2 with fewer (then the operands' sorted copies also stage its first side's
    result). Same bits either way."""
    from laplexops.backends import _numba

    x, y = rng.random(m) * m, rng.random(n) * n
    v, g = rng.standard_normal(n), rng.standard_normal(m)

    def run(op):
        u = op.prepare() @ v
        grads = op.gradient(v, g)
        return [u, grads.x, grads.y, grads.v, np.asarray(grads.rate)]

    kept_op = lx.LaplexOperator(x, y)
    kept = run(kept_op)
    assert kept_op._build_plan().scratch._sets  # at this size, kept
    assert len(kept_op._build_plan()._decays) == 2  # both sides'
    monkeypatch.setattr(_numba._Scratch, "KEEP_BYTES", 1 << 16)
    monkeypatch.setattr(_numba, "_DECAY_CACHE_BYTES", 1 << 16)
    monkeypatch.setattr(_numba, "_COUNTS_KEEP_BYTES", 1 << 16)
    op = lx.LaplexOperator(x, y).prepare()
    assert not op._build_plan().scratch._sets
    op @ v  # the decays and routes of the side, made outside the trace
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        u = op @ v
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < u.nbytes + 64 * 1024, f"{retained - u.nbytes} bytes kept beyond the result"
    op.gradient(v, g)  # every kernel it uses compiled outside the trace
    fresh = lx.LaplexOperator(x, y).prepare()  # a training step's: after a product, as here
    fresh @ v
    peak = _peak_bytes(lambda: fresh.gradient(v, g))
    assert peak <= per_anchor * (m + n), f"{peak / (m + n):.1f} bytes per anchor"
    got = run(op)
    assert not op._build_plan().scratch._sets
    assert not op._build_plan()._decays  # the gradient's sets handed over, then let go
    for a, b in zip(kept, got):
        assert np.array_equal(a, b)


def test_plan_holds_the_anchors_and_one_sides_merge_counts_above_the_limits(rng, monkeypatch):
    """Above ``_ANCHORS_KEEP_BYTES`` an operator lets its anchors' snapshots go once its plan is
    built (the plan gives them back), and above ``_COUNTS_KEEP_BYTES`` the plan holds one side's
    merge counts: the side last used. Every result the same bits, the anchors the same values."""
    from laplexops import _operator
    from laplexops.backends import _numba

    m, n = 3_000, 2_000
    x, y = rng.random(m) * m, rng.random(n) * n
    x[:50] = y[:50]  # ties: both counts arrays held
    v, g = rng.standard_normal(n), rng.standard_normal(m)

    def run(op):
        u = op @ v
        grads = op.gradient(v, g)
        t = op.T @ g
        r = op.with_rate(0.3 + 1j).H @ g
        return [u, t, r, grads.x, grads.y, grads.v, np.asarray(grads.rate), op.to_dense()]

    want = run(lx.LaplexOperator(x, y))
    monkeypatch.setattr(_operator, "_ANCHORS_KEEP_BYTES", 0)
    monkeypatch.setattr(_numba, "_COUNTS_KEEP_BYTES", 0)
    op = lx.LaplexOperator(x, y)
    assert op._cell.anchors is not None  # no plan yet
    op.prepare()
    assert op._cell.anchors is None
    got = run(op)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(op.x, x)
    np.testing.assert_array_equal(op.T.x, y)
    assert not op.x.flags.writeable
    sides = [s for s in op._cell.plan._sides if s is not None]
    assert len(sides) == 2 and sum(s.counts_nbytes() > 0 for s in sides) == 1
    step = op.with_anchors(x + 0.25, y)
    np.testing.assert_array_equal(step.x, x + 0.25)
    np.testing.assert_array_equal(step @ v, lx.LaplexOperator(x + 0.25, y) @ v)
    shared = lx.LaplexOperator(y, y).prepare()
    assert shared._cell.anchors is None and shared.x is not shared.y
    np.testing.assert_array_equal(shared.y, y)


def _step_results(op, moved, y, v, g):
    """A training step's results on ``op``, its anchors' copy and the next step's."""
    step = op.with_anchors(moved, y)
    grads = step.gradient(v, g)
    return [op @ v, op.T @ g, step @ v, grads.x, grads.y, np.asarray(grads.rate), op.x]


@pytest.mark.parametrize("m, n", [(20_000, 13_001), (5_000, 9_000)])
def test_a_route_stands_for_its_permutation_above_the_limit(m, n, rng, monkeypatch):
    """Above ``_PERM_KEEP_BYTES`` a plan lets a permutation go once its route is built, and
    makes it again from the route where it needs it: the next training step's plan, the Gram's
    factor, the anchors. Same bits as a plan that keeps it."""
    from laplexops.backends import _numba
    from laplexops.backends._numba_route import Route

    monkeypatch.setattr(_numba, "ROUTE_MIN", 0)  # routes at this size, in several blocks
    x, y = rng.random(m) * m, rng.random(n) * n
    x[:100] = y[:100]
    v, g = rng.standard_normal(n), rng.standard_normal(m)
    moved = x + rng.uniform(-0.01, 0.01, m)
    monkeypatch.setattr(_numba, "_PERM_KEEP_BYTES", 1 << 62)
    want = _step_results(lx.LaplexOperator(x, y).prepare(), moved, y, v, g)
    monkeypatch.setattr(_numba, "_PERM_KEEP_BYTES", 0)
    op = lx.LaplexOperator(x, y).prepare()
    op.T.prepare()
    perms = [p for _, p in op._build_plan().sorted]
    assert all(isinstance(p, Route) for p in perms)
    for p, a in zip(perms, (x, y)):
        np.testing.assert_array_equal(a[p.permutation()], np.sort(a, kind="stable"))
    for a, b in zip(want, _step_results(op, moved, y, v, g)):
        np.testing.assert_array_equal(a, b)
    solves = []
    for keep in (0, 1 << 62):  # the Gram's factor on the square plan, its route built first
        monkeypatch.setattr(_numba, "_PERM_KEEP_BYTES", keep)
        gram = lx.LaplexGram(x, rate=0.7, weights=np.ones(m), noise=np.full(m, 0.5))
        gram._op @ g
        assert isinstance(gram._op._build_plan().sorted[0][1], Route) == (keep == 0)
        solves.append(gram.solve(g))
    np.testing.assert_array_equal(*solves)
