"""CPU backend: NumPy arrays, Numba kernels (radix sort, merge counts, decayed scans)."""
from __future__ import annotations

import numpy as np

from . import _numba_sort
from ._base import SIDE_ROWS_X
from ._numba_plan import merge_counts
from ._numba_scan import decays, scan

__all__ = ["NumbaBackend", "NumbaPlan"]

_EMPTY_PERM = np.empty(0, dtype=np.int64)
_DECAY_CACHE_SIZE = 4


class _Side:
    """One orientation of a plan: sorted rows against sorted columns."""

    __slots__ = ("rs", "cs", "rperm", "cperm", "lo", "hi")

    def __init__(self, rs, cs, rperm, cperm):
        self.rs, self.cs, self.rperm, self.cperm = rs, cs, rperm, cperm
        index = np.int32 if rs.shape[0] + cs.shape[0] < 2**31 else np.int64
        self.lo = np.empty(rs.shape[0], dtype=index)
        self.hi = np.empty(rs.shape[0], dtype=index)
        merge_counts(rs, cs, self.lo, self.hi)


class NumbaPlan:
    """Sorted anchors of both sides, their merge counts, and a small cache of decays per rate.

    An empty permutation marks anchors that were already sorted: no sort and no gathers for them.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.shape = (x.shape[0], y.shape[0])
        self.shared = y is x
        sort = _numba_sort.argsort
        xperm = _EMPTY_PERM if _numba_sort.is_sorted(x) else None
        if self.shared:
            yperm = xperm = sort(x) if xperm is None else xperm
        else:
            yperm = _EMPTY_PERM if _numba_sort.is_sorted(y) else None
            if xperm is None and yperm is None:  # both sorts at once, one per core
                xperm, yperm = _numba_sort.argsort_two(x, y)
            xperm = sort(x) if xperm is None else xperm
            yperm = sort(y) if yperm is None else yperm
        xs = x if xperm is _EMPTY_PERM else x[xperm]
        ys = xs if self.shared else (y if yperm is _EMPTY_PERM else y[yperm])
        rows_x = _Side(xs, ys, xperm, yperm)
        self.sides = (rows_x, rows_x if self.shared else _Side(ys, xs, yperm, xperm))
        self._decays: dict = {}

    def decays(self, side: int, rate, dtype: np.dtype):
        """``(d, el, er)`` of a side for ``rate`` in ``dtype``, cached (a few rates at a time)."""
        if self.shared:
            side = SIDE_ROWS_X
        key = (side, rate, dtype)
        hit = self._decays.get(key)
        if hit is None:
            s = self.sides[side]
            hit = (np.empty(s.cs.shape[0], dtype), np.empty(s.rs.shape[0], dtype),
                   np.empty(s.rs.shape[0], dtype))
            real = np.finfo(dtype).dtype
            decays(s.rs.astype(real, copy=False), s.cs.astype(real, copy=False), s.lo, s.hi,
                   dtype.type(rate), *hit)
            if len(self._decays) >= _DECAY_CACHE_SIZE:
                self._decays.pop(next(iter(self._decays)))
            self._decays[key] = hit
        return hit


class NumbaBackend:
    """Backend for host data (NumPy and anything DLPack-exportable to it)."""

    name = "numba"
    device = "cpu"

    def asarray(self, a, dtype=None):
        if not isinstance(a, np.ndarray):
            try:
                a = np.from_dlpack(a)
            except (TypeError, AttributeError, BufferError, RuntimeError):
                a = np.asarray(a)
        return a if dtype is None else a.astype(dtype, copy=False)

    def plan(self, x, y):
        return NumbaPlan(x, y)

    def apply(self, plan, side, rate, b, want_sum=True, want_signed=False, want_moment=False):
        s = plan.sides[side]
        d, el, er = plan.decays(side, rate, b.dtype)
        b = np.ascontiguousarray(b)
        m, k = s.rs.shape[0], b.shape[1]
        real = np.finfo(b.dtype).dtype
        outs = [np.empty((m, k) if want else (0, 0), dtype=b.dtype)
                for want in (want_sum, want_signed, want_moment)]
        scan(s.rs.astype(real, copy=False), s.cs.astype(real, copy=False), s.lo, s.hi,
             s.rperm, s.cperm, d, el, er, b, *outs)
        return tuple(o if want else None
                     for o, want in zip(outs, (want_sum, want_signed, want_moment)))

