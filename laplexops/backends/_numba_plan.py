"""Merge counts of two sorted anchor sets (Numba), the O(m + n) half of building a plan."""
from __future__ import annotations

from numba import njit

__all__ = ["merge_counts"]


@njit(cache=True)
def merge_counts(rs, cs, lo, hi):  # pragma: no cover - compiled
    """For sorted ``rs`` and ``cs`` fill ``lo[r] = #{cs < rs[r]}`` and ``hi[r] = #{cs <= rs[r]}``.

    One linear merge walk, O(m + n) (``np.searchsorted`` would be O(m log n)).
    """
    n = cs.shape[0]
    a = 0
    e = 0
    for r in range(rs.shape[0]):
        z = rs[r]
        while a < n and cs[a] < z:
            a += 1
        if e < a:
            e = a
        while e < n and cs[e] <= z:
            e += 1
        lo[r] = a
        hi[r] = e
