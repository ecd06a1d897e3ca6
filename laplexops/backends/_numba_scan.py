"""The one primitive of the CPU backend: decayed scans over a merged, sorted plan (Numba).

Notation (one *side* of a plan): ``rs`` are the sorted row anchors (length m), ``cs`` the sorted
column anchors (length n). For every sorted row ``r``

    lo[r] = #{c : cs[c] <  rs[r]}        hi[r] = #{c : cs[c] <= rs[r]}

so columns ``[0, lo)`` lie strictly left of the row, ``[lo, hi)`` tie with it and ``[hi, n)`` lie
strictly right. With the decays (only differences of neighbouring sorted anchors enter ``exp``)

    d[c]  = exp(-s (cs[c] - cs[c-1]))          (d[0] unused)
    el[r] = exp(-s (rs[r] - cs[lo[r]-1]))      (0 when lo[r] == 0)
    er[r] = exp(-s (cs[hi[r]] - rs[r]))        (0 when hi[r] == n)

the forward recurrence ``F_c = d[c] F_{c-1} + b_c`` gives the left sum at row r as ``el[r] F_{lo-1}``
and the backward recurrence ``B_c = d[c+1] B_{c+1} + b_c`` the right sum as ``er[r] B_{hi}``. Columns
that tie with the row contribute their plain sum (weight exp(0) = 1), accumulated exactly by a run
sum that restarts at every new column value. Three reductions come out of the same two passes:

    sum      (W b)_r                       = left + ties + right
    signed   sum_c sign(r - c) W_rc b_c    = left - right            (sign(0) = 0)
    moment   sum_c |r - c| W_rc b_c        from the first-moment pair (F1, F):
             moving by Δ:  F1 <- e (F1 + Δ F),  F <- e F

Each pass is O(m + n) per right-hand side; columns of a matmat run in parallel (``prange``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["decays", "scan"]


@njit(cache=True, parallel=True)
def decays(rs, cs, lo, hi, rate, d, el, er):  # pragma: no cover - compiled
    """Fill ``d``, ``el``, ``er`` (the side's decays for ``rate``) in place; O(m + n)."""
    n = cs.shape[0]
    for c in prange(n):
        d[c] = np.exp(-rate * (cs[c] - cs[c - 1])) if c > 0 else 0
    for r in prange(rs.shape[0]):
        a = lo[r]
        e = hi[r]
        el[r] = np.exp(-rate * (rs[r] - cs[a - 1])) if a > 0 else 0
        er[r] = np.exp(-rate * (cs[e] - rs[r])) if e < n else 0


@njit(cache=True, inline="always")
def _value(b, cperm, c, j):  # pragma: no cover - compiled
    if cperm.shape[0] == 0:
        return b[c, j]
    return b[cperm[c], j]


@njit(cache=True, inline="always")
def _step_right(b, cperm, cs, d, c, j, f, f1, want_moment):  # pragma: no cover - compiled
    """Move the forward state from column c-1 to column c and add b_c."""
    if c > 0:
        if want_moment:
            f1 = d[c] * (f1 + (cs[c] - cs[c - 1]) * f)
        f = d[c] * f
    return f + _value(b, cperm, c, j), f1


@njit(cache=True, inline="always")
def _step_left(b, cperm, cs, d, c, j, f, f1, g, want_moment):  # pragma: no cover - compiled
    """Move the backward state from column c+1 to column c, add b_c, update the run sum g."""
    n = cs.shape[0]
    val = _value(b, cperm, c, j)
    if c < n - 1:
        if want_moment:
            f1 = d[c + 1] * (f1 + (cs[c + 1] - cs[c]) * f)
        f = d[c + 1] * f
        if cs[c] == cs[c + 1]:
            return f + val, f1, g + val
    return f + val, f1, val


@njit(cache=True, parallel=True)
def scan(rs, cs, lo, hi, rperm, cperm, d, el, er, b,
         out_sum, out_signed, out_moment):  # pragma: no cover - compiled
    """Apply one side of a plan to the columns of ``b`` (shape (n, k), original column order).

    Writes, in original row order, whichever of ``out_sum``, ``out_signed``, ``out_moment`` (each
    (m, k), or (0, 0) when not wanted) is requested. ``rperm`` / ``cperm`` map sorted position to
    original index; an empty permutation means the anchors were already sorted. O((m + n) k).
    """
    m = rs.shape[0]
    n = cs.shape[0]
    k = b.shape[1]
    want_sum = out_sum.shape[0] > 0
    want_signed = out_signed.shape[0] > 0
    want_moment = out_moment.shape[0] > 0
    for j in prange(k):
        left = np.empty(m, dtype=b.dtype)
        left1 = np.empty(m if want_moment else 0, dtype=b.dtype)
        # forward: F = sum_{c' <= c} exp(-s (cs[c] - cs[c'])) b_c',  F1 its first moment
        f = b.dtype.type(0)
        f1 = b.dtype.type(0)
        c = 0
        for r in range(m):
            a = lo[r]
            while c < a:
                f, f1 = _step_right(b, cperm, cs, d, c, j, f, f1, want_moment)
                c += 1
            left[r] = el[r] * f
            if want_moment:
                left1[r] = el[r] * (f1 + (rs[r] - cs[a - 1]) * f) if a > 0 else 0
        # backward: B = sum_{c' >= c} exp(-s (cs[c'] - cs[c])) b_c',  B1 its first moment,
        # g = plain sum of the run of columns equal to cs[c] (the ties of a row)
        bb = b.dtype.type(0)
        b1 = b.dtype.type(0)
        g = b.dtype.type(0)
        right = b.dtype.type(0)
        right1 = b.dtype.type(0)
        c = n
        for r in range(m - 1, -1, -1):
            a = lo[r]
            e = hi[r]
            if c >= e:  # else: this row ties with the previous one, reuse its right sums
                while c > e:
                    c -= 1
                    bb, b1, g = _step_left(b, cperm, cs, d, c, j, bb, b1, g, want_moment)
                right = er[r] * bb
                if want_moment:
                    right1 = er[r] * (b1 + (cs[e] - rs[r]) * bb) if e < n else 0
            tie = b.dtype.type(0)
            if a < e:
                while c > a:  # the tied run [a, e): fold it into B and the run sum g
                    c -= 1
                    bb, b1, g = _step_left(b, cperm, cs, d, c, j, bb, b1, g, want_moment)
                tie = g
            i = r if rperm.shape[0] == 0 else rperm[r]
            if want_sum:
                out_sum[i, j] = left[r] + tie + right
            if want_signed:
                out_signed[i, j] = left[r] - right
            if want_moment:
                out_moment[i, j] = left1[r] + right1
