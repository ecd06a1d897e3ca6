"""The CPU backend's routes (``_numba_route``): permutations applied through cache-sized blocks.

Data only moves, so everything computed through routes must equal, bit for bit, what the direct
gathers and scatters give; those are checked against dense references elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

import laplexops as lx
from laplex_testing import make_anchors
from laplexops.backends import _numba, _numba_route
from laplexops.backends._numba_route import Route


@pytest.mark.parametrize("m", [1, 4095, 4096, 4097, 3 * 4096 + 5, 70_001])
@pytest.mark.parametrize("dtype, k", [(np.float64, 1), (np.float32, 1), (np.float64, 3)])
@pytest.mark.parametrize("inverse", [True, False])
def test_route_moves_rows_as_the_permutation(m, dtype, k, inverse, rng, monkeypatch):
    """Scatters read their slots through the route's inverse, or (beyond ``INVERSE_MAX``, as
    at 1e8 anchors) write them at their offsets: the same moves."""
    if not inverse:
        monkeypatch.setattr(_numba_route, "INVERSE_MAX", m - 1)
    perm = rng.permutation(m).astype(rng.choice([np.int32, np.int64]))
    route = Route(perm)
    assert route.starts[0] == 0 and route.starts[-1] == m
    a = rng.standard_normal((m, k)).astype(dtype)
    out, stage = np.full_like(a, np.nan), np.full_like(a, np.nan)
    route.gather(a, out, stage)
    np.testing.assert_array_equal(out, a[perm])
    assert route.inverse is None  # made by the first scatter
    held = route.slot.nbytes + route.offset.nbytes + route.starts.nbytes + route.sink.nbytes
    assert route.nbytes == held
    # a kernel writes sorted row r to its slot; the scatter puts it at row perm[r]
    stage[route.slot] = a
    route.scatter(stage, out)
    assert (route.inverse is not None) == inverse
    assert route.nbytes == held + 2 * m * inverse
    expected = np.empty_like(a)
    expected[perm] = a
    np.testing.assert_array_equal(out, expected)
    # put is that move from rows in sorted order: the inverse of gather
    moved, stage = np.full_like(a, np.nan), np.full_like(a, np.nan)
    route.put(a, moved, stage)
    np.testing.assert_array_equal(moved, expected)
    if k == 1:  # one column moves as a 1-D array
        flat = np.full(m, np.nan, dtype)
        route.put(a[:, 0], flat, np.empty(m, dtype))
        np.testing.assert_array_equal(flat, expected[:, 0])
    # rows in blocks (an empty one too), put and gathered in turn without joining them
    cuts = np.sort(rng.integers(0, m + 1, 3))
    blocks = np.split(a, cuts)
    moved, stage = np.full_like(a, np.nan), np.full_like(a, np.nan)
    route.put(blocks, moved, stage)
    np.testing.assert_array_equal(moved, expected)
    out, stage = np.full_like(a, np.nan), np.full_like(a, np.nan)
    route.gather(blocks, out, stage)
    np.testing.assert_array_equal(out, a[perm])


@pytest.mark.parametrize("n", [1, 4096, 70_001, 2**17 + 3])
@pytest.mark.parametrize("share", [0.02, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 3])
def test_route_of_part_of_a_permutation_gathers(n, share, k, rng):
    """``Route(perm, length)``: ``perm`` some of ``range(length)`` in any order (one worker's
    rows of a distributed plan); its blocks then hold unequal counts, some none."""
    m = max(1, int(share * n))
    perm = rng.permutation(n)[:m]
    route = Route(perm, n)
    assert route.starts[-1] == m and np.all(np.diff(route.starts) >= 0)
    a = rng.standard_normal((n, k))
    out, stage = np.full((m, k), np.nan), np.full((m, k), np.nan)
    route.gather(a, out, stage)
    np.testing.assert_array_equal(out, a[perm])
    # the rows as pieces (a worker's chunks, not joined): pieces smaller than a route's block
    # of 2**12 rows and larger, cut anywhere, one empty
    cuts = np.sort(np.concatenate([rng.integers(0, n + 1, 4), rng.integers(0, min(n, 50), 2)]))
    out = np.full((m, k), np.nan)
    route.gather(np.split(a, cuts), out, stage)
    np.testing.assert_array_equal(out, a[perm])
    with pytest.raises(ValueError, match="rows"):
        route.gather([a[1:]], out, stage)
    if m < n:
        with pytest.raises(ValueError, match="gathers only"):
            route.put(out, np.empty_like(a), stage)


def _everything(op, v, g, V):
    """Every product and gradient of ``op`` (one column and three), as a list of arrays."""
    grads = op.gradient(v, g)
    grads3 = op.gradient(V, np.repeat(g[:, None], 3, axis=1))
    return [
        op.matvec(v),
        op.rmatvec(g),
        op.matmat(V),
        grads.x,
        grads.y,
        np.asarray(grads.rate),
        grads.v,
        grads3.x,
        grads3.y,
        np.asarray(grads3.rate),
        grads3.v,
    ]


@pytest.mark.parametrize("layout", ["random", "ties", "same", "dup", "shared", "reversed"])
@pytest.mark.parametrize("rate", [0.7, 0.5 + 2j])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_routed_operator_equals_direct_bitwise(layout, rate, dtype, rng, monkeypatch):
    """Several blocks on each side (routes forced down to small sizes), more rows than columns
    (the gradient then stages the rows' result apart) and the reverse."""
    for m, n in [(13_000, 9_001), (5_000, 12_345)]:
        x, y = make_anchors(rng, layout, m, n, 50.0)
        x, y = x.astype(dtype), y.astype(dtype)
        m, n = x.shape[0], y.shape[0]
        v = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(m).astype(dtype)
        V = rng.standard_normal((n, 3)).astype(dtype)
        monkeypatch.setattr(_numba, "ROUTE_MIN", 2**62)
        direct = lx.LaplexOperator(x, y, rate)
        want = _everything(direct, v, g, V)
        monkeypatch.setattr(_numba, "ROUTE_MIN", 0)
        routed = lx.LaplexOperator(x, y, rate)
        got = _everything(routed, v, g, V)
        side = routed._plan.side(routed._side)
        assert side.rroute is not None or side.rperm is None
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_prepare_makes_the_rows_route_inverse_and_a_scatter_the_columns(rng, monkeypatch):
    """A matvec scatters through the rows' route only: ``prepare`` makes that route's inverse
    (the first product then makes nothing), and the columns' route gets its own on the first
    adjoint product."""
    monkeypatch.setattr(_numba, "ROUTE_MIN", 0)
    m, n = 9_000, 7_000
    x, y = rng.uniform(0.0, m, m), rng.uniform(0.0, n, n)
    op = lx.LaplexOperator(x, y).prepare()
    side = op._plan.side(op._side)
    assert side.rroute.inverse is not None and side.croute.inverse is None
    v, u = rng.standard_normal(n), rng.standard_normal(m)
    before = op @ v
    assert side.croute.inverse is None
    adjoint = op.rmatvec(u)
    assert side.croute.inverse is not None
    np.testing.assert_allclose(u @ before, adjoint @ v, rtol=1e-12)
