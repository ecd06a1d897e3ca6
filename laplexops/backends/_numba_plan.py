"""Merge counts of two sorted anchor sets (Numba), the O(m + n) half of building a plan."""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, prange

from ._numba_threads import kernel, use_threads

__all__ = ["merge_counts"]


@kernel
def _merge_counts(rs, cs, lo, hi, chunks):  # pragma: no cover - compiled
    m = rs.shape[0]
    n = cs.shape[0]
    size = (m + chunks - 1) // chunks
    for chunk in prange(chunks):
        start = chunk * size
        stop = min(m, start + size)
        if start >= stop:
            continue
        a = np.searchsorted(cs, rs[start], side="left")  # where this chunk's walk starts
        e = a
        for r in range(start, stop):
            z = rs[r]
            while a < n and cs[a] < z:
                a += 1
            if e < a:
                e = a
            while e < n and cs[e] <= z:
                e += 1
            lo[r] = a
            hi[r] = e


def merge_counts(rs, cs, lo, hi):
    """For sorted ``rs`` and ``cs`` fill ``lo[r] = #{cs < rs[r]}`` and ``hi[r] = #{cs <= rs[r]}``.

    Linear merge walks over row chunks, each started by one binary search: O(m + n) work
    (``np.searchsorted`` of every row would be O(m log n)). Large inputs walk one chunk per Numba
    thread in parallel, smaller ones one chunk in the serial build (no parallel region).
    """
    if use_threads(rs.shape[0] + cs.shape[0]):
        _merge_counts.parallel(rs, cs, lo, hi, get_num_threads())
    else:
        _merge_counts.serial(rs, cs, lo, hi, 1)
