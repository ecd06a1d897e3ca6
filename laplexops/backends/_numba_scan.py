"""The one primitive of the CPU backend: decayed scans over a merged, sorted plan (Numba).

Notation (one *side* of a plan): ``rs`` are the sorted row anchors (length m), ``cs`` the sorted
column anchors (length n). For every sorted row ``r``

    lo[r] = #{c : cs[c] <  rs[r]}        hi[r] = #{c : cs[c] <= rs[r]}

so columns ``[0, lo)`` lie strictly left of the row, ``[lo, hi)`` tie with it and ``[hi, n)`` lie
strictly right. With the decays (only differences of neighbouring sorted anchors enter ``exp``)

    d[c]  = exp(-s (cs[c] - cs[c-1]))          (d[0] unused)
    el[r] = exp(-s (rs[r] - cs[lo[r]-1]))      (0 when lo[r] == 0)
    er[r] = exp(-s (cs[lo[r]] - rs[r]))        (0 when lo[r] == n; 1 when the row ties)

the forward recurrence ``F_c = d[c] F_{c-1} + b_c`` gives the left sum at row r as ``el[r]
F_{lo-1}`` and the backward recurrence ``B_c = d[c+1] B_{c+1} + b_c`` the sum over the columns
from ``lo`` on as ``er[r] B_{lo}``. Columns that tie with the row contribute their plain sum T
(weight exp(0) = 1); between tied columns the decay is exactly 1, so ``B_{lo}`` of a tied row
holds T and the right sum: ``T + right = B_{lo}``, and a row's sum needs ``lo`` alone, tie or
not. The signed and moment reductions leave T out: they take the right sum from ``B_{hi}``, with
the *split* decay ``er'[r] = exp(-s (cs[hi[r]] - rs[r]))``, which for a tied row is ``d[hi]``
(:func:`split_decays` makes it from ``er``). Three reductions come out of the scans:

    sum      (W b)_r                       = left + T + right  = el F_{lo-1} + er B_{lo}
    signed   sum_c sign(r - c) W_rc b_c    = left - right            (sign(0) = 0)
    moment   sum_c |r - c| W_rc b_c        from first-moment scans F1, B1:
             moving by Δ:  F1 <- e (F1 + Δ F),  F <- e F

Phase 1 runs the forward and the backward scans of every right-hand side as independent tasks (two
cores busy even for one vector); phase 2 combines them row by row, in parallel over rows. The column
scans walk memory in order and have no data-dependent branches. O((m + n) k) work, O(n k) scratch.
The row passes write sorted row ``r``'s results to output row ``rdest[r]``: the original row (the
rows' sorting permutation; none when the rows came sorted), or its slot in a route's staging order
(``_numba_route``), which the caller then copies into original order. Each kernel also has a
serial build, which calls below ``PARALLEL_MIN_WORK`` take (see
``_numba_threads``): their caller passes ``work=``, the elements the call touches.

When rows and columns are one set of distinct anchors (a square Gram operator, x = y), ``lo[r] =
r``, ``hi[r] = r + 1``, ``el[r] = d[r]`` and ``er[r] = d[r+1]``: ``scan_square`` then folds phase 2
into the backward scan, reading about half the bytes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ._numba_exp import NO_GAPS, exponentials, exponentials_complex
from ._numba_threads import kernel

__all__ = [
    "column_scans",
    "decays",
    "rows_signed_moment_dot",
    "rows_sum_signed_dot",
    "scan",
    "scan_ends",
    "scan_square",
    "split_decays",
]


@kernel
def exponents(rs, cs, lo, rate, d, el, er):  # pragma: no cover - compiled
    """The exponents ``-s Δ`` of the side's decays ``d`` (unless empty), ``el``, ``er`` for
    ``rate`` (see above; ``-inf`` where a decay is 0); O(m + n)."""
    n = cs.shape[0]
    for c in prange(d.shape[0]):
        d[c] = -rate * (cs[c] - cs[c - 1]) if c > 0 else -np.inf
    for r in prange(lo.shape[0]):
        a = lo[r]
        el[r] = -rate * (rs[r] - cs[a - 1]) if a > 0 else -np.inf
        er[r] = -rate * (cs[a] - rs[r]) if a < n else -np.inf


def decays(rs, cs, lo, rate, d, el, er):
    """The side's decays for ``rate`` (see above) into ``d`` (length n), ``el`` and ``er``
    (length m each; separate arrays, so that one can go before the other): the exponents, then
    their exponentials in place (a real rate's in SIMD lanes, ``_numba_exp``, which for ``d``
    takes the gaps of ``cs`` itself: one pass over ``d``); O(m + n). Returns ``(d, el, er)``."""
    m, n = lo.shape[0], cs.shape[0]
    if d.dtype.kind == "c":
        exponents(rs, cs, lo, rate, d, el, er, work=m + n)
        for a in (d, el, er):
            exponentials_complex(a, work=a.shape[0])
    else:
        exponentials(d, False, cs, float(rate), work=n)
        exponents(rs, cs, lo, rate, d[:0], el, er, work=m)
        for a in (el, er):
            exponentials(a, False, NO_GAPS, 0.0, work=m)
    return d, el, er


@kernel
def split_decays(lo, hi, d, er, out):  # pragma: no cover - compiled
    """The split decays ``out[r] = exp(-s (cs[hi[r]] - rs[r]))`` (see above) from the side's
    ``er``: the same where the row ties with no column, ``d[hi[r]]`` where it does (0 when
    ``hi[r] == n``). ``out`` may be ``er``. O(m)."""
    m, n = lo.shape[0], d.shape[0]
    if m == 0:
        return
    zero = er[0] * 0
    for r in prange(m):
        e = hi[r]
        if lo[r] == e:
            out[r] = er[r]
        else:
            out[r] = d[e] if e < n else zero


# The column scans are chains of dependent multiply-adds, so their speed is the latency of a link
# of the chain: these take four columns per link, fused multiply-adds (two per part of a complex
# value), the rest of the work off the chain, where the core overlaps it. The fused multiply-adds
# are explicit, not left to the compiler (``fastmath`` contraction reached other kernels' complex
# arithmetic through Numba's shared implementations, and only in some builds: their bits then
# differed).


def _mul_add(a, b, c):  # pragma: no cover - only compiled
    """``a * b + c`` of real or complex values, each real part rounded once: a fused
    multiply-add for real values; for complex ones ``re = fma(a.re, b.re, fma(-a.im, b.im,
    c.re))``, ``im = fma(a.re, b.im, fma(a.im, b.re, c.im))`` (a real factor or addend's
    vanishing terms left out)."""
    raise NotImplementedError


@intrinsic
def _fma(typingctx, a, b, c):
    """The hardware's fused multiply-add of three floats of one type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


def _part_type(*ts):
    """The float type of the parts of values of types ``ts`` (Float or Complex), or None."""
    if not all(isinstance(t, (types.Float, types.Complex)) for t in ts):
        return None
    floats = [t.underlying_float if isinstance(t, types.Complex) else t for t in ts]
    return np.float64 if types.float64 in floats else np.float32


@overload(_mul_add, inline="always")
def _mul_add_impl(a, b, c):
    real = _part_type(a, b, c)
    if real is None:
        return None
    if not any(isinstance(t, types.Complex) for t in (a, b, c)):
        return lambda a, b, c: _fma(real(a), real(b), real(c))  # pragma: no cover - compiled
    cplx = np.complex128 if real is np.float64 else np.complex64
    if isinstance(a, types.Float):  # a real factor: put it first
        return lambda a, b, c: _mul_add(b, a, c)  # pragma: no cover - compiled
    a_im_b = isinstance(b, types.Complex)
    c_im = isinstance(c, types.Complex)
    if a_im_b and c_im:

        def both(a, b, c):  # pragma: no cover - compiled
            re = _fma(real(a.real), real(b.real), _fma(-real(a.imag), real(b.imag), real(c.real)))
            im = _fma(real(a.real), real(b.imag), _fma(real(a.imag), real(b.real), real(c.imag)))
            return cplx(complex(re, im))

        return both
    if a_im_b:

        def real_addend(a, b, c):  # pragma: no cover - compiled
            re = _fma(real(a.real), real(b.real), _fma(-real(a.imag), real(b.imag), real(c)))
            im = _fma(real(a.real), real(b.imag), real(a.imag) * real(b.real))
            return cplx(complex(re, im))

        return real_addend
    if c_im:

        def real_factor(a, b, c):  # pragma: no cover - compiled
            re = _fma(real(a.real), real(b), real(c.real))
            im = _fma(real(a.imag), real(b), real(c.imag))
            return cplx(complex(re, im))

        return real_factor

    def real_both(a, b, c):  # pragma: no cover - compiled
        return cplx(complex(_fma(real(a.real), real(b), real(c)), real(a.imag) * real(b)))

    return real_both


@njit(cache=True, nogil=True)
def _forward_quads(d, b, j, f):  # pragma: no cover - compiled
    """``f[c] = d[c] f[c-1] + b_c``, left to right, four steps per link of the dependency chain:
    with ``p_i = d[c+i] ... d[c]`` and ``g_i = d[c+i] g_{i-1} + b_{c+i}`` (``g_0 = b_c``),
    ``f[c+i] = p_i f[c-1] + g_i``, of which only ``f[c+3]`` is on the chain."""
    n = f.shape[0]
    acc = b[0, j]
    f[0] = acc
    c = 1
    while c + 3 < n:
        d0, d1, d2, d3 = d[c], d[c + 1], d[c + 2], d[c + 3]
        p1 = d1 * d0
        p2 = d2 * p1
        g0 = b[c, j]
        g1 = _mul_add(d1, g0, b[c + 1, j])
        g2 = _mul_add(d2, g1, b[c + 2, j])
        f[c] = _mul_add(d0, acc, g0)
        f[c + 1] = _mul_add(p1, acc, g1)
        f[c + 2] = _mul_add(p2, acc, g2)
        acc = _mul_add(d3 * p2, acc, _mul_add(d3, g2, b[c + 3, j]))
        f[c + 3] = acc
        c += 4
    while c < n:
        acc = _mul_add(d[c], acc, b[c, j])
        f[c] = acc
        c += 1


@njit(cache=True, nogil=True)
def _backward_quads(d, b, j, f):  # pragma: no cover - compiled
    """``f[c] = d[c+1] f[c+1] + b_c``, right to left, four steps per link (see
    :func:`_forward_quads`)."""
    n = f.shape[0]
    acc = b[n - 1, j]
    f[n - 1] = acc
    c = n - 2
    while c >= 3:
        e0, e1, e2, e3 = d[c + 1], d[c], d[c - 1], d[c - 2]
        p1 = e1 * e0
        p2 = e2 * p1
        g0 = b[c, j]
        g1 = _mul_add(e1, g0, b[c - 1, j])
        g2 = _mul_add(e2, g1, b[c - 2, j])
        f[c] = _mul_add(e0, acc, g0)
        f[c - 1] = _mul_add(p1, acc, g1)
        f[c - 2] = _mul_add(p2, acc, g2)
        acc = _mul_add(e3 * p2, acc, _mul_add(e3, g2, b[c - 3, j]))
        f[c - 3] = acc
        c -= 4
    while c >= 0:
        acc = _mul_add(d[c + 1], acc, b[c, j])
        f[c] = acc
        c -= 1


@njit(cache=True, nogil=True)
def _forward(cs, d, b, j, f, f1, want_moment):  # pragma: no cover - compiled
    """``f[c] = d[c] f[c-1] + b_c`` and its first moment ``f1``, left to right."""
    if not want_moment:
        _forward_quads(d, b, j, f)
        return
    acc = b[0, j] * 0
    acc1 = acc
    for c in range(cs.shape[0]):
        if c > 0:
            if want_moment:
                acc1 = d[c] * (acc1 + (cs[c] - cs[c - 1]) * acc)
                f1[c] = acc1
            acc = d[c] * acc
        acc += b[c, j]
        f[c] = acc
    if want_moment and cs.shape[0] > 0:
        f1[0] = 0


@njit(cache=True, nogil=True)
def _backward(cs, d, b, j, f, f1, want_moment):  # pragma: no cover - compiled
    """``f[c] = d[c+1] f[c+1] + b_c`` and its first moment ``f1``, right to left."""
    if not want_moment:
        _backward_quads(d, b, j, f)
        return
    n = cs.shape[0]
    acc = b[0, j] * 0
    acc1 = acc
    for c in range(n - 1, -1, -1):
        if c < n - 1:
            if want_moment:
                acc1 = d[c + 1] * (acc1 + (cs[c + 1] - cs[c]) * acc)
                f1[c] = acc1
            acc = d[c + 1] * acc
        acc += b[c, j]
        f[c] = acc
    if want_moment and n > 0:
        f1[n - 1] = 0


@njit(cache=True, nogil=True, inline="always")
def _row(rdest, r):  # pragma: no cover - compiled
    """Where sorted row ``r``'s results go: ``rdest[r]`` (empty ``rdest``: to row ``r``)."""
    return np.intp(r) if rdest.shape[0] == 0 else np.intp(rdest[r])


# A row's sums over the columns left and right of it, from column j's scans (a, e: its lo, hi):
#     left  = el[r] fwd[j, a - 1]  (0 when a = 0),   right = er[r] bwd[j, e]  (0 when e = n),
# and its first moment, the same from the scans and their moments fwd1, bwd1, are written out
# in each row loop: an njit helper taking the arrays, inlined or not, cost the kernels' serial
# builds a reference count taken and dropped per array and row (atomic operations, 4 to 20
# times the time of the loop without them; the parallel builds' outlined loops had none).


@njit(cache=True, nogil=True)
def _task_count(k, want_moment):  # pragma: no cover - compiled
    """The tasks of a scan's first phase: a forward and a backward one per group of four
    columns (without moments) and per column left over (see :func:`_column_task`)."""
    fours = 0 if want_moment else k // 4
    return 2 * (fours + k - 4 * fours)


@njit(cache=True, nogil=True)
def _scan_four(d, b, j, f, forward):  # pragma: no cover - compiled
    """The forward (``f[i, c] = d[c] f[i, c-1] + b[c, i]``) or backward (``f[i, c] = d[c+1]
    f[i, c+1] + b[c, i]``) scans of columns ``j`` to ``j + 3`` of ``b`` at once, row by row:
    each row of ``b`` read once, four independent chains in registers."""
    n = f.shape[1]
    c = 0 if forward else n - 1
    a0, a1, a2, a3 = b[c, j], b[c, j + 1], b[c, j + 2], b[c, j + 3]
    f[j, c], f[j + 1, c], f[j + 2, c], f[j + 3, c] = a0, a1, a2, a3
    for step in range(1, n):
        c = step if forward else n - 1 - step
        e = d[c] if forward else d[c + 1]
        a0 = _mul_add(e, a0, b[c, j])
        a1 = _mul_add(e, a1, b[c, j + 1])
        a2 = _mul_add(e, a2, b[c, j + 2])
        a3 = _mul_add(e, a3, b[c, j + 3])
        f[j, c], f[j + 1, c], f[j + 2, c], f[j + 3, c] = a0, a1, a2, a3


@njit(cache=True, nogil=True)
def _column_task(cs, d, b, task, fwd, bwd, fwd1, bwd1, want_moment):  # pragma: no cover
    """Task ``task`` of a scan's first phase (``_task_count`` of them): a forward scan when
    ``task`` is even, else a backward one, of a group of four columns (the first ``k // 4``
    pairs of tasks, when no moments are wanted: each row of the operand then read once per
    direction rather than once per column) or of one column."""
    t = task // 2
    fours = 0 if want_moment else b.shape[1] // 4
    if t < fours:
        if task % 2 == 0:
            _scan_four(d, b, 4 * t, fwd, True)
        else:
            _scan_four(d, b, 4 * t, bwd, False)
        return
    j = t + 3 * fours  # the columns after the groups
    if task % 2 == 0:
        _forward(cs, d, b, j, fwd[j], fwd1[j], want_moment)
    else:
        _backward(cs, d, b, j, bwd[j], bwd1[j], want_moment)


@kernel
def column_scans(cs, d, b, fwd, bwd, fwd1, bwd1, want_moment):  # pragma: no cover
    """The first phase of :func:`scan` alone: forward and backward scans of every column of
    ``b`` (with first moments), as independent tasks. O(n k)."""
    if cs.shape[0] > 0:
        for task in prange(_task_count(b.shape[1], want_moment)):
            _column_task(cs, d, b, task, fwd, bwd, fwd1, bwd1, want_moment)


@njit(cache=True, nogil=True)
def _scan_end(cs, d, b, j, start, forward, want_moment, ends):  # pragma: no cover - compiled
    """Column ``j``'s forward scan ``F_c = d[c] F_{c-1} + b[c - start]`` over the columns
    ``start .. start + len(b) - 1``, to its last value (``ends[0, j]``) and its first moment
    (``ends[1, j]``), or the backward one to its value at ``start`` (``ends[2:4, j]``): chains
    of dependent multiply-adds, nothing written on the way. Without moments, four columns per
    link of the chain (``_forward_quads``)."""
    n = b.shape[0]
    step = 1 if forward else -1
    first = 0 if forward else n - 1
    acc = b[first, j]
    acc1 = acc * 0
    i = first + step  # b's row; column start + i, whose decay from the last is e(i) below
    left = n - 1  # the steps still to take
    if not want_moment:
        while left >= 4:
            e0 = d[start + i] if forward else d[start + i + 1]
            e1 = d[start + i + step] if forward else d[start + i]
            e2 = d[start + i + 2 * step] if forward else d[start + i - 1]
            e3 = d[start + i + 3 * step] if forward else d[start + i - 2]
            g = _mul_add(e1, b[i, j], b[i + step, j])
            g = _mul_add(e2, g, b[i + 2 * step, j])
            g = _mul_add(e3, g, b[i + 3 * step, j])
            acc = _mul_add(e3 * e2 * (e1 * e0), acc, g)
            i += 4 * step
            left -= 4
    while left > 0:
        at = start + i if forward else start + i + 1
        if want_moment:
            gap = cs[at] - cs[at - 1]
            acc1 = d[at] * (acc1 + gap * acc)
        acc = _mul_add(d[at], acc, b[i, j])
        i += step
        left -= 1
    row = 0 if forward else 2
    ends[row, j] = acc
    ends[row + 1, j] = acc1


@kernel
def scan_ends(cs, d, b, start, want_moment, ends):  # pragma: no cover
    """The end states of the column scans of ``b`` (shape (n, k)), whose rows are the sorted
    columns ``start .. start + n - 1``, one task per column and direction: ``ends`` (shape (4,
    k)) gets, with ``z = cs[start + n - 1]`` and ``a = cs[start]``,

        F = sum_c exp(-s (z - c)) b_c,   F1 = sum_c (z - c) exp(-s (z - c)) b_c,
        B = sum_c exp(-s (c - a)) b_c,   B1 = sum_c (c - a) exp(-s (c - a)) b_c

    (the moments ``F1``, ``B1`` zero unless ``want_moment``): what a distributed product
    carries from one range of the anchors to the next. O(n k), no scratch."""
    if b.shape[0] > 0:
        for task in prange(2 * b.shape[1]):
            _scan_end(cs, d, b, task // 2, start, task % 2 == 0, want_moment, ends)


@kernel
def rows_signed_moment_dot(
    rs, cs, lo, hi, rdest, el, er, w, fwd, bwd, fwd1, bwd1, out_dot, parts, zero
):  # pragma: no cover
    """The gradient's pass onto the rows, contracted with a row operand ``w`` (shape (m, k), in
    sorted row order), from :func:`column_scans` with moments:

        out_dot[i] = sum_j w_ij signed_ij          (row i = rdest[r])
        parts[p]   = sum over the rows of block p of sum_j w_ij moment_ij

    ``parts`` has one entry per fixed block of rows (the same blocks for any thread count, so
    the caller's sum of ``parts`` is repeatable to the bit). ``zero``: 0 in the result's dtype.
    O(m k)."""
    m = rs.shape[0]
    n = bwd.shape[1]
    k = w.shape[1]
    blocks = parts.shape[0]
    size = (m + blocks - 1) // blocks
    for p in prange(blocks):
        acc = zero
        for r in range(p * size, min(m, (p + 1) * size)):
            a = lo[r]
            e = hi[r]
            dot = zero
            for j in range(k):
                wr = w[r, j]
                left = el[r] * fwd[j, a - 1] if a > 0 else zero
                right = er[r] * bwd[j, e] if e < n else zero
                dot += wr * (left - right)
                m1 = zero
                if a > 0:
                    m1 = el[r] * (fwd1[j, a - 1] + (rs[r] - cs[a - 1]) * fwd[j, a - 1])
                if e < n:
                    m1 += er[r] * (bwd1[j, e] + (cs[e] - rs[r]) * bwd[j, e])
                acc += wr * m1
            out_dot[_row(rdest, r)] = dot
        parts[p] = acc


@kernel
def rows_sum_signed_dot(
    lo, hi, rdest, el, er, w, ties, fwd, bwd, out_sum, out_dot, zero
):  # pragma: no cover
    """The adjoint's pass of the gradient onto the rows, from :func:`column_scans` of an
    operand (without moments): ``out_sum`` as :func:`scan` writes it, and the signed reduction
    contracted with a row operand ``w`` (shape (m, k), in sorted row order), ``out_dot[i] =
    sum_j w_ij signed_ij``, both to rows ``rdest``. ``zero``: 0 in the result's dtype. O(m k).
    """
    m = lo.shape[0]
    n = bwd.shape[1]
    k = w.shape[1]
    if k == 1:  # one column in one-dimensional views (see rows_sum_one_column)
        w1, o = w[:, 0], out_sum[:, 0]
        for r in prange(m):
            a = lo[r]
            e = hi[r]
            i = _row(rdest, r)
            left = el[r] * fwd[0, a - 1] if a > 0 else zero
            right = er[r] * bwd[0, e] if e < n else zero
            o[i] = (fwd[0, e - 1] if ties and a < e else left) + right
            out_dot[i] = zero + w1[r] * (left - right)
        return
    for r in prange(m):
        a = lo[r]
        e = hi[r]
        i = _row(rdest, r)
        dot = zero
        for j in range(k):
            left = el[r] * fwd[j, a - 1] if a > 0 else zero
            right = er[r] * bwd[j, e] if e < n else zero
            out_sum[i, j] = (fwd[j, e - 1] if ties and a < e else left) + right
            dot += w[r, j] * (left - right)
        out_dot[i] = dot


@kernel
def rows_sum_one_column(lo, rdest, el, er, fwd, bwd, out):  # pragma: no cover
    """The row pass of :func:`scan` for a product with one column (after :func:`column_scans`
    of it, at least one column), in one-dimensional views, on scan states stored one apart:
    ``fwd`` (shape (1, n + 1)) holds ``F_{c-1}`` at ``c`` and 0 at 0, ``bwd`` (shape (1, n + 1))
    ``B_c`` at ``c`` and 0 at ``n``. ``out`` (shape (m,)) gets row ``r``'s sum ``el[r] F_{lo-1}
    + er[r] B_{lo}`` at ``rdest[r]`` (empty ``rdest``: at ``r``). O(m).

    A kernel of its own, with one loop for each kind of ``rdest``: in the serial builds a loop
    that reads ``rdest`` under a condition, or that follows the inlined column scans, took and
    dropped an atomic reference count on every row (about 17 ns a row); and the general loop of
    ``scan`` takes half as long again for one column. With the zeros at both ends a row beyond
    the last column or before the first needs no test (its decay on that side is 0 too), so the
    loop has no branch and no select: where LLVM does not use SIMD gathers (without AVX-512)
    it runs as a third fewer scalar instructions."""
    m = lo.shape[0]
    f, b = fwd[0], bwd[0]
    if rdest.shape[0] == 0:
        for r in prange(m):
            a = lo[r]
            out[r] = _mul_add(el[r], f[a], er[r] * b[a])
    else:
        for r in prange(m):
            a = lo[r]
            out[rdest[r]] = _mul_add(el[r], f[a], er[r] * b[a])


@kernel
def scan(
    rs,
    cs,
    lo,
    hi,
    rdest,
    d,
    el,
    er,
    b,
    ties,
    out_sum,
    out_signed,
    out_moment,
    fwd,
    bwd,
    fwd1,
    bwd1,
):  # pragma: no cover
    """Apply one side of a plan to the columns of ``b`` (shape (n, k), in sorted column order).

    Writes whichever of ``out_sum``, ``out_signed``, ``out_moment`` (each (m, k), or (0, 0) when
    not wanted) is requested, sorted row ``r`` to row ``rdest[r]`` (empty: to row ``r``).
    With signed or moment reductions, ``hi`` and ``er`` are the split ones (see above) and
    ``ties`` says whether some row ties with a column (a row's sum is then ``F_{hi-1} +
    right``); for sums alone, ``hi`` is ``lo``, ``er`` the side's own and ``ties`` false.
    Scratch, shape (k, n): ``fwd``, ``bwd``, and ``fwd1``, ``bwd1`` for moments (each (k, 0)
    when not wanted). O((m + n) k).
    """
    m = rs.shape[0]
    n = cs.shape[0]
    k = b.shape[1]
    if m == 0 or k == 0:
        return
    want_sum = out_sum.shape[0] > 0
    want_signed = out_signed.shape[0] > 0
    want_moment = out_moment.shape[0] > 0
    want_ties = want_sum and ties
    if n > 0:
        for task in prange(_task_count(k, want_moment)):
            _column_task(cs, d, b, task, fwd, bwd, fwd1, bwd1, want_moment)
    zero = el[0] * 0
    for r in prange(m):
        a = lo[r]
        e = hi[r]
        i = _row(rdest, r)
        for j in range(k):
            left = el[r] * fwd[j, a - 1] if a > 0 else zero
            right = er[r] * bwd[j, e] if e < n else zero
            if want_sum:
                out_sum[i, j] = (fwd[j, e - 1] if want_ties and a < e else left) + right
            if want_signed:
                out_signed[i, j] = left - right
    if not want_moment:
        return
    # the moments in a pass of their own: their code in the loop above, even untaken, made the
    # product's pass half as fast again
    for r in prange(m):
        a = lo[r]
        e = hi[r]
        i = _row(rdest, r)
        for j in range(k):
            m1 = zero
            if a > 0:
                m1 = el[r] * (fwd1[j, a - 1] + (rs[r] - cs[a - 1]) * fwd[j, a - 1])
            if e < n:
                m1 += er[r] * (bwd1[j, e] + (cs[e] - rs[r]) * bwd[j, e])
            out_moment[i, j] = m1


@kernel
def scan_square(cs, rdest, d, b, out_sum, out_signed, out_moment, fwd, fwd1):  # pragma: no cover
    """``scan`` for rows equal to the columns (distinct anchors): one forward scan into ``fwd``
    (``fwd1``), then the backward scan writes the outputs directly. O(n k), parallel over
    columns."""
    n = cs.shape[0]
    k = b.shape[1]
    want_sum = out_sum.shape[0] > 0
    want_signed = out_signed.shape[0] > 0
    want_moment = out_moment.shape[0] > 0
    if n == 0:
        return
    for j in prange(k):
        f = fwd[j]
        f1 = fwd1[j]
        _forward(cs, d, b, j, f, f1, want_moment)
        zero = b[0, j] * 0
        # the backward scan B, two rows per link of its chain (see _forward_quads): from
        # acc = B[c+1], right(c) = d[c+1] acc and right(c-1) = (d[c] d[c+1]) acc + d[c] b_c
        acc = zero  # B[c + 1]
        c = n - 1
        while c >= 0:  # the last row, and rows left over below the pairs
            right = d[c + 1] * acc if c < n - 1 else zero
            left = d[c] * f[c - 1] if c > 0 else zero
            i = np.intp(c) if rdest.shape[0] == 0 else np.intp(rdest[c])
            if want_sum:
                out_sum[i, j] = left + b[c, j] + right
            if want_signed:
                out_signed[i, j] = left - right
            acc = right + b[c, j]
            c -= 1
            if c == n - 2:
                while c >= 2:  # rows c and c - 1, both with a left neighbour
                    e1 = d[c + 1]
                    e2 = d[c]
                    right = e1 * acc
                    left = e2 * f[c - 1]
                    i = np.intp(c) if rdest.shape[0] == 0 else np.intp(rdest[c])
                    if want_sum:
                        out_sum[i, j] = left + b[c, j] + right
                    if want_signed:
                        out_signed[i, j] = left - right
                    e2b = e2 * b[c, j]
                    p = e2 * e1
                    right = _mul_add(p, acc, e2b)
                    left = d[c - 1] * f[c - 2]
                    i = np.intp(c - 1) if rdest.shape[0] == 0 else np.intp(rdest[c - 1])
                    if want_sum:
                        out_sum[i, j] = left + b[c - 1, j] + right
                    if want_signed:
                        out_signed[i, j] = left - right
                    acc = _mul_add(p, acc, e2b + b[c - 1, j])
                    c -= 2
        if want_moment:
            _square_moments(cs, rdest, d, b, j, f, f1, out_moment)


@njit(cache=True, nogil=True)
def _square_moments(cs, rdest, d, b, j, f, f1, out_moment):  # pragma: no cover - compiled
    """The first moments of column ``j`` of :func:`scan_square`, in a backward pass of their own
    (the scan ``B`` again, with its moment), from the forward scan ``f`` and its moment ``f1``:
    their code in the sums' pass, even untaken, made that pass a fifth slower."""
    n = cs.shape[0]
    zero = b[0, j] * 0
    acc = zero
    acc1 = zero
    for c in range(n - 1, -1, -1):
        right = zero
        right1 = zero
        if c < n - 1:
            right = d[c + 1] * acc
            right1 = d[c + 1] * (acc1 + (cs[c + 1] - cs[c]) * acc)
        left1 = d[c] * (f1[c - 1] + (cs[c] - cs[c - 1]) * f[c - 1]) if c > 0 else zero
        i = np.intp(c) if rdest.shape[0] == 0 else np.intp(rdest[c])
        out_moment[i, j] = left1 + right1
        acc = right + b[c, j]
        acc1 = right1
