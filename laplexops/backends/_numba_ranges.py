"""Range partitioning of anchors by sorted cut points (the Dask backend's plan), in Numba.

With ``S`` sorted cut points ``cuts``, value ``z`` falls in range ``p = #{c : cuts[c] <= z}``
(``0 .. S``, the rule of ``np.searchsorted(cuts, z, side="right")`` and of ``dask.dataframe``'s
``set_index`` divisions). :func:`range_stats` finds each value's range and every range's count,
least and greatest value in one pass; :func:`scatter_by_range` then writes values and their
positions into range order (a stable counting sort: each range's values keep their order).
Both O(n log S), serial: the Dask backend runs one per chunk, many at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["range_stats", "scatter_by_range"]


#: values searched together: each step of the bisection is one loop over them, without
#: branches on the data (random values would mispredict half of them), which the compiler
#: vectorizes (gathers) and the core overlaps
_BLOCK = 256


@njit(cache=True, nogil=True)
def _ranges(z, cuts, ranges):  # pragma: no cover - compiled
    """``ranges[j] = #{c : cuts[c] <= z[j]}``, by bisection of blocks of values at once."""
    base = np.empty(_BLOCK, np.int64)
    for start in range(0, z.shape[0], _BLOCK):
        m = min(_BLOCK, z.shape[0] - start)
        for j in range(m):
            base[j] = 0
        n = cuts.shape[0]
        while n > 1:
            half = n >> 1
            for j in range(m):
                b = base[j]
                base[j] = b + half if cuts[b + half - 1] <= z[start + j] else b
            n -= half
        for j in range(m):
            b = base[j]
            ranges[start + j] = b + (1 if n == 1 and cuts[b] <= z[start + j] else 0)


@njit(cache=True, nogil=True)
def range_stats(z, cuts, ranges, counts, least, greatest):  # pragma: no cover - compiled
    """Each value's range into ``ranges``; per range, add its values' count to ``counts`` and
    lower ``least`` / raise ``greatest`` to their least and greatest (callers start them at
    ``inf`` / ``-inf``, or at an earlier call's results to accumulate)."""
    _ranges(z, cuts, ranges)
    for j in range(z.shape[0]):
        p = ranges[j]
        counts[p] += 1
        least[p] = min(least[p], z[j])
        greatest[p] = max(greatest[p], z[j])


@njit(cache=True, nogil=True)
def scatter_by_range(z, ranges, first, next_slot, out):  # pragma: no cover - compiled
    """Value ``j`` to row ``next_slot[ranges[j]]`` of ``out`` as ``[z[j], first + j]`` (its
    position), that slot then moved on by one: with ``next_slot`` at each range's start, the
    values land grouped by range in their order."""
    for j in range(z.shape[0]):
        p = ranges[j]
        at = next_slot[p]
        out[at, 0] = z[j]
        out[at, 1] = first + j
        next_slot[p] = at + 1
