"""A plan's linear passes (Numba): the anchors' snapshots, and the merge counts of two sorted anchor
sets, the O(m + n) half of building a plan."""

from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange

from ._numba_memory import POOL
from ._numba_threads import kernel, use_threads

__all__ = ["merge_counts", "snapshot"]


@kernel
def _copy_counting(a, out):  # pragma: no cover - compiled
    """``out[i] = a[i]`` (in ``out``'s dtype), returning how many of the copies are not finite.
    O(n), in parallel."""
    bad = 0
    for i in prange(a.shape[0]):
        out[i] = a[i]
        bad += 0 if math.isfinite(out[i]) else 1
    return bad


def snapshot(a: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """A copy of the 1-D float32 or float64 ``a`` in ``dtype`` (float32 or float64) and the
    number of its values that are not finite (after the conversion), from one read of ``a``."""
    out = POOL.empty(a.shape[0], dtype)
    return out, int(_copy_counting(a, out, work=a.shape[0]))


@njit(cache=True, nogil=True, inline="always")
def _step(rs, cs, out, r, a):  # pragma: no cover - compiled
    """One step of a merge walk at row ``r``, column ``a``: ``(r, a, tie)``. Column ``a`` is
    passed when it lies strictly left of the row; else the row's count is ``a`` and the walk
    moves to the next row, ``tie`` telling whether that row equals column ``a``. No branch
    depends on the data."""
    n = cs.shape[0]
    z = rs[r]
    c = cs[min(a, n - 1)]
    inside = a < n
    passed = inside & (c < z)
    out[r] = a  # the last write for row r is the one that moves on
    tie = (not passed) & inside & (c == z)
    return r + np.intp(not passed), a + np.intp(passed), tie


@njit(cache=True, nogil=True, inline="always")
def _walk(rs, cs, lo, r, stop, a):  # pragma: no cover - compiled
    """The merge walk of rows ``r .. stop - 1`` from column ``a`` (see :func:`_step`); returns
    how many of those rows equal a column."""
    ties = 0
    while r < stop:
        r, a, tie = _step(rs, cs, lo, r, a)
        ties += np.intp(tie)
    return ties


@kernel
def _merge_counts(rs, cs, lo, chunks, tied):  # pragma: no cover - compiled
    """``lo[r] = #{c : cs[c] < rs[r]}``, and the number of rows equal to a column in
    ``tied[chunk]``, for the rows in ``chunks`` chunks, in parallel.

    A merge walk takes a step per row and per column passed, each waiting on the one before (a
    load, a compare, an add: about 9 cycles). Each chunk therefore walks four parts of its rows
    at once, each part started by a binary search, so that the four chains overlap in the core.
    O(m + n)."""
    m = rs.shape[0]
    size = (m + chunks - 1) // chunks
    for chunk in prange(chunks):
        start = chunk * size
        stop = min(m, start + size)
        quarter = (max(stop - start, 0) + 3) // 4
        e0 = min(stop, start + quarter)
        e1 = min(stop, e0 + quarter)
        e2 = min(stop, e1 + quarter)
        r0, r1, r2, r3 = start, e0, e1, e2
        a0 = np.searchsorted(cs, rs[r0]) if r0 < stop else 0
        a1 = np.searchsorted(cs, rs[r1]) if r1 < stop else 0
        a2 = np.searchsorted(cs, rs[r2]) if r2 < stop else 0
        a3 = np.searchsorted(cs, rs[r3]) if r3 < stop else 0
        ties = 0
        while r0 < e0 and r1 < e1 and r2 < e2 and r3 < stop:
            r0, a0, t0 = _step(rs, cs, lo, r0, a0)
            r1, a1, t1 = _step(rs, cs, lo, r1, a1)
            r2, a2, t2 = _step(rs, cs, lo, r2, a2)
            r3, a3, t3 = _step(rs, cs, lo, r3, a3)
            ties += np.intp(t0) + np.intp(t1) + np.intp(t2) + np.intp(t3)
        # the parts' rests, one after another
        ties += _walk(rs, cs, lo, r0, e0, a0)
        ties += _walk(rs, cs, lo, r1, e1, a1)
        ties += _walk(rs, cs, lo, r2, e2, a2)
        ties += _walk(rs, cs, lo, r3, stop, a3)
        tied[chunk] = ties


@kernel
def _upper_counts(rs, cs, lo, hi):  # pragma: no cover - compiled
    """``hi[r] = lo[r]`` plus the number of columns equal to row ``r`` (the run from ``lo[r]``
    on), each row on its own, in parallel: the run's end found by doubling steps, then halving
    them, O(log run) per tied row and O(1) per other row (a binary search of all the columns
    per tied row took three times as long at a million float32 anchors)."""
    n = cs.shape[0]
    for r in prange(rs.shape[0]):
        z = rs[r]
        a = lo[r]
        if a < n and cs[a] == z:
            step = 1  # cs[a] == z; cs[a + step] is the next to try
            while a + step < n and cs[a + step] == z:
                a += step
                step *= 2
            end = min(a + step, n)  # cs[a] == z, and cs[end] != z or end == n
            while end - a > 1:
                mid = (a + end) // 2
                if cs[mid] == z:
                    a = mid
                else:
                    end = mid
            hi[r] = end
        else:
            hi[r] = a


def merge_counts(rs, cs, lo):
    """For sorted ``rs`` and ``cs`` fill ``lo[r] = #{cs < rs[r]}``, and return ``hi`` with
    ``hi[r] = #{cs <= rs[r]}``: ``lo`` itself when no row equals a column, else a new array.

    Merge walks over row chunks, four interleaved per chunk, each started by one binary search:
    O(m + n) work (``np.searchsorted`` of every row would be O(m log n)); ``hi`` is made from
    ``lo`` by a second pass, only where some row ties. Large inputs walk one chunk per Numba
    thread in parallel, smaller ones one chunk in the serial build (no parallel region).
    """
    if cs.shape[0] == 0:  # (the walks read a column)
        lo[:] = 0
        return lo
    chunks = get_num_threads() if use_threads(rs.shape[0] + cs.shape[0]) else 1
    tied = np.zeros(chunks, np.int64)
    _merge_counts(rs, cs, lo, chunks, tied, work=rs.shape[0] + cs.shape[0])
    if not tied.any():
        return lo
    hi = POOL.empty_like(lo)
    _upper_counts(rs, cs, lo, hi, work=rs.shape[0])
    return hi
