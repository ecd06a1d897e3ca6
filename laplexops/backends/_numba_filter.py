"""The Gram's kernels on the CPU: the scalar Kalman filter of ``Σ = diag(w) K diag(w) + diag(u)``.

Over the anchors in sorted order ``z_0 <= ... <= z_{n-1}`` (``perm[t]`` the caller's index of
sorted position ``t``; an empty ``perm`` means the anchors were sorted), ``K[i, j] = exp(-s |a_i -
a_j|)`` is the covariance of a unit Ornstein-Uhlenbeck process ``f``, and a vector ``r ~ N(0, Σ)``
is the state-space model

    f_t = φ_t f_{t-1} + sqrt(q_t) ε_t,      r_t = w_t f_t + sqrt(u_t) η_t,
    φ_t = exp(-s Δ_t),  q_t = 1 - φ_t² = -expm1(-2 s Δ_t),  Δ_t = z_t - z_{t-1} >= 0

(``φ_0 = 0``, ``q_0 = 1``: the first state has the stationary variance). Only gaps between
neighbouring sorted anchors enter ``expm1``. With ``em_t = expm1(-s Δ_t)`` (``em_0 = -1``) both
come from one call and stay accurate for tiny gaps: ``φ_t = 1 + em_t``, ``q_t = -em_t (1 + φ_t)``.

The filter in covariance form is the LDLᵀ factorisation ``Σ = L D Lᵀ`` in sorted order:

    variance (parameters only):  Pp_t = φ_t² P_{t-1} + q_t            (prior variance of f_t)
                                 S_t  = w_t² Pp_t + u_t                (D, the pivots)
                                 G_t  = w_t Pp_t / S_t                 (gain)
                                 P_t  = Pp_t u_t / S_t                 (posterior variance)
                                 A_t  = φ_t u_t / S_t                  (= (1 - G_t w_t) φ_t)
    mean (per column of data):   e_t  = r_t - w_t φ_t m_{t-1}         (innovation: e = L⁻¹ r)
                                 m_t  = φ_t m_{t-1} + G_t e_t = A_t m_{t-1} + G_t r_t

Every term of the variance recursion is non-negative (no ``1 - G w`` or ``1 - φ²`` cancels), so
the pivots are exact to rounding; a zero pivot is a singular Σ and is reported, never divided by.
``log det Σ = sum_t log S_t`` and ``r Σ⁻¹ r = sum_t e_t² / S_t``. The solve applies ``Lᵀ``'s
inverse as the mean pass's adjoint, the sampler runs the mean pass backwards from ``e = sqrt(S)
z``, and the likelihood's gradient is the reverse-mode derivative of both recursions
(``docs/math.md``). Everything is computed in float64 whatever the data's precision. O(n) per pass
and column; the passes over columns run in parallel (see ``_numba_threads``).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numba import njit, prange

from ._base import DeferredFactor
from ._numba_exp import exponentials
from ._numba_route import gather
from ._numba_threads import kernel

__all__ = [
    "Factor",
    "Ordered",
    "Pool",
    "color_columns",
    "nll_gradient",
    "quadratic",
    "solve",
]


@njit(cache=True, nogil=True, inline="always")
def _index(perm, t):  # pragma: no cover - compiled
    """The caller's index of sorted position ``t``."""
    return np.intp(t) if perm.shape[0] == 0 else np.intp(perm[t])


def decays(z, rate, em) -> None:
    """``em[t] = expm1(-rate (z[t] - z[t-1]))`` for the sorted anchors ``z``, ``em[0] = -1``; the
    ``expm1`` of ``_numba_exp``, in SIMD lanes. O(n), in parallel."""
    exponentials(em, True, z, rate, work=z.shape[0])


#: the range the variance recursion keeps its homogeneous pair in (rescaled by powers of two)
_HUGE = 2.0**256
_TINY = 2.0**-256


@njit(cache=True, nogil=True)
def variance(em, w, u, R, P, G, A, r, mean, perm, m_all):  # pragma: no cover - compiled
    """The variance recursion (module docstring) in sorted order; ``w``, ``u`` sorted too.

    Fills the inverse pivots ``R = 1 / S``, posterior variances ``P``, gains ``G`` and mean
    decays ``A``, and returns ``(t0, log det Σ, quad)``: ``t0`` the first sorted position whose
    pivot is 0 (Σ singular there; the arrays from it on are not filled), or -1. When ``r`` has
    one column (else shape (0, 0)), the mean pass of that column runs in the same loop (one
    likelihood without a second pass over the arrays): ``quad`` is its quadratic form, with
    ``mean``, ``perm`` and ``m_all`` (filled when it has a row) as in :func:`innovations`.

    The recursion ``P_{t-1} -> P_t`` is the Möbius map of the non-negative matrix
    ``[[u φ², u q], [w² φ², w² q + u]]`` (``P_t = (u φ² P + u q) / (w² φ² P + w² q + u)``), so
    it runs on a homogeneous pair ``P = num / den`` whose update has no division: the loop's
    dependency chain is a multiply and a fused multiply-add per step, while the divisions of the
    outputs do not feed the next step. ``den`` grows by exactly the pivot each step (``den_t =
    S_t den_{t-1}``), so ``log det Σ = log den_n`` plus the exponents taken out by the rescaling
    (exact powers of two); ``1 / S_t`` is ``den_{t-1} / den_t``. O(n), serial.
    """
    num = 0.0
    den = 1.0
    rden = 1.0
    shift = 0
    fused = r.shape[0] > 0
    centred = mean.shape[0] > 0
    want_m = m_all.shape[0] > 0
    m = 0.0
    quad = 0.0
    for t in range(em.shape[0]):
        phi = 1.0 + em[t]
        q = -em[t] * (1.0 + phi)
        wt = w[t]
        ut = u[t]
        w2 = wt * wt
        phi2 = phi * phi
        p_prev = num * rden
        pp = phi2 * p_prev + q
        # the pair's step (den' = S_t den) with the matrix formed first: the loop's dependency
        # chain is one multiply and one multiply-add per step
        num_next = (ut * phi2) * num + (ut * q) * den
        den_next = (w2 * phi2) * num + (w2 * q + ut) * den
        s = w2 * pp + ut
        if not s > 0.0:
            return t, 0.0, 0.0
        # one division per step: 1 / den_t, which also gives 1 / S_t = den_{t-1} / den_t
        rden_next = 1.0 / den_next
        inv = den * rden_next
        if not _TINY < den_next < _HUGE:
            mantissa, exponent = math.frexp(den_next)
            den_next = mantissa
            num_next = math.ldexp(num_next, -exponent)
            rden_next = 1.0 / den_next
            shift += exponent
        num = num_next
        den = den_next
        rden = rden_next
        R[t] = inv
        gain = wt * pp * inv
        G[t] = gain
        P[t] = pp * ut * inv
        decay = phi * ut * inv
        A[t] = decay
        if fused:
            i = _index(perm, t)
            x = np.float64(r[i, 0])
            if centred:
                x -= mean[i]
            e = x - wt * phi * m
            quad += e * e * inv
            if want_m:
                m_all[0, t] = m
            m = decay * m + gain * x
    return -1, math.log(den) + shift * math.log(2.0), quad


@kernel
def innovations(r, mean, perm, w, em, G, A, R, c, m_all, quad):  # pragma: no cover - compiled
    """The mean pass over each column ``j`` of ``r`` (shape (n, k), the caller's order).

    ``quad[j] = sum_t e_t² / S_t`` (the quadratic form of ``r_j - mean``); when ``c`` has n rows,
    ``c[t, j] = e_t / S_t`` in sorted order (``D⁻¹ L⁻¹ r``, the solve's first half); when
    ``m_all`` has k rows, ``m_all[j, t] = m_{t-1}`` (for the gradient's reverse pass). ``mean``
    (n,) is subtracted unless empty. The recursion is ``m_t = A_t m_{t-1} + G_t r_t``: one
    multiply-add on the loop's dependency chain. Columns in parallel, O(n) each.
    """
    n = em.shape[0]
    want_c = c.shape[0] > 0
    want_m = m_all.shape[0] > 0
    centred = mean.shape[0] > 0
    for j in prange(r.shape[1]):
        m = 0.0
        acc = 0.0
        for t in range(n):
            i = _index(perm, t)
            x = np.float64(r[i, j])
            if centred:
                x -= mean[i]
            e = x - w[t] * (1.0 + em[t]) * m
            ce = e * R[t]
            acc += e * ce
            if want_c:
                c[t, j] = ce
            if want_m:
                m_all[j, t] = m
            m = A[t] * m + G[t] * x
        quad[j] = acc


@kernel
def innovations4(r, mean, perm, w, em, G, A, R, c, m_all, quad):  # pragma: no cover - compiled
    """:func:`innovations` for the columns of ``r`` in groups of four (``4 * (k // 4)`` columns;
    the rest are :func:`innovations`' to run): each group's four recursions run side by side in
    one loop, so the factor's arrays are read once per group rather than once per column (the
    pass is bound by memory traffic, not by the recursions). The same arithmetic per column as
    :func:`innovations`, so the same bits. Groups in parallel, O(n k)."""
    n = em.shape[0]
    want_c = c.shape[0] > 0
    want_m = m_all.shape[0] > 0
    centred = mean.shape[0] > 0
    for g in prange(r.shape[1] // 4):
        j = 4 * g
        m0 = m1 = m2 = m3 = 0.0
        q0 = q1 = q2 = q3 = 0.0
        for t in range(n):
            i = _index(perm, t)
            x0 = np.float64(r[i, j])
            x1 = np.float64(r[i, j + 1])
            x2 = np.float64(r[i, j + 2])
            x3 = np.float64(r[i, j + 3])
            if centred:
                shift = mean[i]
                x0 -= shift
                x1 -= shift
                x2 -= shift
                x3 -= shift
            wphi = w[t] * (1.0 + em[t])
            rt = R[t]
            at = A[t]
            gt = G[t]
            e0 = x0 - wphi * m0
            e1 = x1 - wphi * m1
            e2 = x2 - wphi * m2
            e3 = x3 - wphi * m3
            c0 = e0 * rt
            c1 = e1 * rt
            c2 = e2 * rt
            c3 = e3 * rt
            q0 += e0 * c0
            q1 += e1 * c1
            q2 += e2 * c2
            q3 += e3 * c3
            if want_c:
                c[t, j] = c0
                c[t, j + 1] = c1
                c[t, j + 2] = c2
                c[t, j + 3] = c3
            if want_m:
                m_all[j, t] = m0
                m_all[j + 1, t] = m1
                m_all[j + 2, t] = m2
                m_all[j + 3, t] = m3
            m0 = at * m0 + gt * x0
            m1 = at * m1 + gt * x1
            m2 = at * m2 + gt * x2
            m3 = at * m3 + gt * x3
        quad[j] = q0
        quad[j + 1] = q1
        quad[j + 2] = q2
        quad[j + 3] = q3


def mean_pass(r, mean, perm, w, em, G, A, R, c, m_all, quad) -> None:
    """:func:`innovations` of every column of ``r``: groups of four by :func:`innovations4`, the
    rest one by one. Arguments as :func:`innovations`."""
    n, k = r.shape
    full = 4 * (k // 4)
    args = (perm, w, em, G, A, R)
    if full:
        innovations4(r, mean, *args, c, m_all, quad, work=n * k if k > 4 else 0)
    if full < k:
        rest = (c[:, full:] if c.shape[0] else c, m_all[full:] if m_all.shape[0] else m_all)
        innovations(r[:, full:], mean, *args, *rest, quad[full:], work=_work(n, k - full))


@kernel
def solve_back(c, perm, w, em, G, A, out):  # pragma: no cover - compiled
    """``out = L⁻ᵀ c`` into the caller's order: the adjoint of the mean pass, right to left,
    for each column of ``c`` (sorted order, from :func:`innovations`). O(n) per column."""
    n = em.shape[0]
    for j in prange(c.shape[1]):
        lam = 0.0
        for t in range(n - 1, -1, -1):
            ct = c[t, j]
            out[_index(perm, t), j] = ct + G[t] * lam
            lam = A[t] * lam - w[t] * (1.0 + em[t]) * ct
    return


@kernel
def color(z, perm, w, em, G, A, R, out):  # pragma: no cover - compiled
    """``out = L D^½ z``: the mean pass run backwards from innovations ``e_t = sqrt(S_t)
    z[t, j]``, written in the caller's order. Standard normal ``z`` gives draws of N(0, Σ)."""
    n = em.shape[0]
    for j in prange(z.shape[1]):
        m = 0.0
        for t in range(n):
            mp = (1.0 + em[t]) * m
            x = z[t, j] / math.sqrt(R[t]) + w[t] * mp
            out[_index(perm, t), j] = x
            m = A[t] * m + G[t] * x
    return


# reassociation lets the sums over the columns run in SIMD lanes, contraction fuses multiply-adds
@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def gradient_reverse(
    r, mean, perm, z, w, u, em, R, P, G, A, m_all, rate, scale, gz, gw, gu, gr
):  # pragma: no cover - compiled
    """The likelihood's reverse pass, right to left, for the columns of ``r`` ((n, k), the
    caller's order) after :func:`innovations` kept ``m_all[j, t] = m_{t-1}``.

    For ``L = scale * sum_j sum_t e_t² / (2 S_t) + (1/2) sum_t log S_t`` (``scale`` the inverse
    batch size), with ``m̄_j`` the adjoint of column j's ``m_t`` and ``P̄`` that of the posterior
    variance, each step first runs the columns' data adjoints (``ē = scale e_t / S_t + G_t m̄``,
    ``m̄ <- φ_t (m̄ - w_t ē)``), summing over the columns the adjoints of ``G_t``, ``w_t``,
    ``φ_t``, ``r_t`` and ``S_t``, then the parameters' (``docs/math.md``, section 7.4). Writes, in
    sorted order, the gradients of the anchors ``gz``, weights ``gw``, noise ``gu`` and residuals
    ``gr`` (summed over columns); returns the rate's, and the sums of the weights' and the noise's
    over the anchors, which replace ``gw`` (``gu``) when that is empty. Each gap's adjoint
    ``Δ̄_t`` goes to ``z_t`` and, negated, to ``z_{t-1}``. O(n k), serial (the columns meet in
    every step's sums).

    Both adjoint recursions are written with the mean decay ``A_t = φ_t u_t / S_t``, so that each
    has one multiply-add on the loop's dependency chain: ``m̄_{t-1} = A_t m̄_t - φ_t w_t scale e_t /
    S_t`` (as ``φ_t (1 - w_t G_t) = A_t``) and ``P̄_{t-1} = A_t² P̄_t + φ_t² (Ḡ_t w_t / S_t +
    S̄⁰_t w_t²)``, ``S̄⁰_t`` the part of ``S̄_t`` without ``P̄_t`` (as ``u_t / S_t - w_t² P_t /
    S_t = (u_t / S_t)²``).
    """
    n = em.shape[0]
    k = r.shape[1]
    centred = mean.shape[0] > 0
    keep_w = gw.shape[0] > 0
    keep_u = gu.shape[0] > 0
    mbar = np.zeros(k)
    pbar = 0.0
    rbar = 0.0
    wsum = 0.0
    usum = 0.0
    for t in range(n):
        gz[t] = 0.0
    for t in range(n - 1, -1, -1):
        i = _index(perm, t)
        phi = 1.0 + em[t]
        q = -em[t] * (1.0 + phi)
        p_prev = P[t - 1] if t > 0 else 0.0
        pp = phi * phi * p_prev + q
        inv = R[t]
        wt = w[t]
        ut = u[t]
        gt = G[t]
        at = A[t]
        wphi = wt * phi
        shift = mean[i] if centred else 0.0
        g0 = 0.0  # Ḡ
        g1 = 0.0  # -w̄ (data)
        g2 = 0.0  # φ̄ (data)
        g3 = 0.0  # r̄
        g4 = 0.0  # sum of e²
        for j in range(k):
            mprev = m_all[j, t]
            e = (np.float64(r[i, j]) - shift) - wphi * mprev
            mb = mbar[j]
            se = scale * e * inv
            ebar = se + gt * mb
            g0 += mb * e
            g1 += ebar * mprev
            g2 += (mb - wt * ebar) * mprev
            g3 += ebar
            g4 += e * e
            mbar[j] = at * mb - wphi * se
        g1 *= phi
        # S̄ without P̄'s part, then P's: P = Pp u / S, S = w² Pp + u, G = w Pp / S
        sbar0 = 0.5 * inv - 0.5 * scale * g4 * inv * inv - g0 * gt * inv
        sbar = sbar0 - pbar * P[t] * inv
        base = g0 * wt * inv + sbar0 * wt * wt
        ratio = ut * inv
        ppbar = base + pbar * (ratio * ratio)
        wbar = g0 * pp * inv - g1 + sbar * 2.0 * wt * pp
        ubar = pbar * pp * inv + sbar
        # Pp = φ² P_{t-1} + q
        phibar = g2 + ppbar * 2.0 * phi * p_prev
        pbar = at * at * pbar + phi * phi * base
        if t > 0:
            # φ = exp(-s Δ), q = 1 - φ²: dφ = -φ (s dΔ + Δ ds), dq = 2 φ² (s dΔ + Δ ds)
            common = -phibar * phi + ppbar * 2.0 * phi * phi
            dgap = common * rate
            rbar += common * (z[t] - z[t - 1])
            gz[t] += dgap
            gz[t - 1] -= dgap
        if keep_w:
            gw[t] = wbar
        else:
            wsum += wbar
        if keep_u:
            gu[t] = ubar
        else:
            usum += ubar
        gr[t] = g3
    return rbar, wsum, usum


@njit(cache=True, nogil=True)
def has_ties(z):  # pragma: no cover - compiled
    """Whether two neighbouring sorted anchors ``z`` are equal (one read, no writes)."""
    for t in range(1, z.shape[0]):
        if z[t] == z[t - 1]:
            return True
    return False


@njit(cache=True, nogil=True)
def reverse_ties(z, perm, out):  # pragma: no cover - compiled
    """``out``: the permutation ``perm`` (empty: the identity) with every run of equal sorted
    anchors ``z`` reversed. Returns the number of runs (0: no ties)."""
    n = z.shape[0]
    for t in range(n):
        out[t] = _index(perm, t)
    runs = 0
    t = 0
    while t < n:
        end = t + 1
        while end < n and z[end] == z[t]:
            end += 1
        if end - t > 1:
            runs += 1
            lo = t
            hi = end - 1
            while lo < hi:
                out[lo], out[hi] = out[hi], out[lo]
                lo += 1
                hi -= 1
        t = end
    return runs


_NO_PERM = np.empty(0, dtype=np.int64)
_NO_MEAN = np.empty(0)
_NO_ROWS = np.empty((0, 0))


class Pool:
    """Float64 blocks kept between calls on one plan: the factor of one parameter set and the
    gradient's scratch are reused by the next (a training step), because fresh multi-megabyte
    arrays cost page faults that take as long as the filter itself. At most one free block per
    shape; a block in use belongs to its caller until given back. Thread-safe. Also keeps what
    depends on the plan's anchors alone: the order of the anchors with every run of ties reversed
    (:meth:`mirrored`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple[int, ...], np.ndarray] = {}
        self._mirrored: Any = False  # not known yet

    def mirrored(self, z: np.ndarray, perm: np.ndarray) -> np.ndarray | None:
        """``perm`` (empty: the identity) with every run of equal sorted anchors ``z`` reversed,
        or ``None`` when the anchors are distinct; found once per plan."""
        with self._lock:
            if self._mirrored is False:
                self._mirrored = None
                if has_ties(z):
                    order = np.empty(z.shape[0], dtype=np.int64)
                    reverse_ties(z, perm, order)
                    self._mirrored = order
            return self._mirrored

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A block of ``shape`` (uninitialised)."""
        with self._lock:
            block = self._free.pop(shape, None)
        return np.empty(shape) if block is None else block

    def give(self, block: np.ndarray) -> None:
        """Return a block taken with :meth:`take`; its caller must not use it again."""
        with self._lock:
            self._free.setdefault(block.shape, block)


class Ordered:
    """What the factors of both filters share: the anchors in sorted order (``z``, ``perm``),
    the parameters in that order (``rate``, ``w``, ``u``), the plan's :class:`Pool`, and how
    gradients return to the caller's order and meet at ties. A subclass is built as
    ``cls(z, perm, rate, w, u, pool)`` and implements ``gradient_sorted``."""

    z: np.ndarray
    perm: np.ndarray
    rate: Any
    w: np.ndarray
    u: np.ndarray
    pool: Pool
    _mirror: Any = None
    _ties: bool | None = None

    def _setup(
        self, z: np.ndarray, perm: np.ndarray | None, rate: Any, w: Any, u: Any, pool: Pool,
        arrays: int,
    ) -> np.ndarray:  # fmt: skip
        """Take one block of the pool (given back when the factor is collected) for ``arrays``
        float64 arrays of the filter plus the anchors (when not float64 already), weights and
        noise in sorted order; set those; return the filter's arrays."""
        n = z.shape[0]
        block = pool.take((arrays + 3, n))
        weakref.finalize(self, pool.give, block)
        self.pool = pool
        if z.dtype == np.float64:
            self.z = z
        else:
            self.z = block[arrays]
            self.z[:] = z
        self.perm = _NO_PERM if perm is None else perm
        self.rate = rate
        self.w = _sorted(w, perm, block[arrays + 1])
        self.u = _sorted(u, perm, block[arrays + 2])
        return block[:arrays]

    @property
    def n(self) -> int:
        return self.z.shape[0]

    def mirror(self) -> Any:
        """The factor of the same Gram with every run of equal anchors in reverse order, or
        ``None`` when no anchors are equal (built once)."""
        if self._ties is None:
            order = self.pool.mirrored(self.z, self.perm)
            self._ties = order is not None
            if self._ties:
                caller = self.perm if self.perm.shape[0] else np.arange(self.n)
                w = np.empty(self.n)  # w and u back in the caller's order
                u = np.empty(self.n)
                w[caller] = self.w
                u[caller] = self.u
                make: Any = type(self)
                self._mirror = make(self.z, order, self.rate, w, u, self.pool)
        return self._mirror

    def gradient_sorted(
        self, r: np.ndarray, mean: np.ndarray, summed: tuple[bool, bool]
    ) -> tuple | None:
        """``(quad, rate, anchors, weights, noise, mean)`` of :func:`nll_gradient` in this
        factor's order of equal anchors, ``None`` when Σ is singular: each filter's own reverse
        pass."""
        raise NotImplementedError(f"{type(self).__name__} has no reverse pass")

    @contextmanager
    def outputs(self, summed: tuple[bool, bool]) -> Iterator[tuple[np.ndarray, ...]]:
        """Arrays for the sorted gradients of anchors, weights, noise and residuals; those of
        weights or noise wanted only as sums (``summed``) are scratch of the pool."""
        n = self.n
        scratch = self.pool.take((2, n))
        gw = scratch[0] if summed[0] else np.empty(n)
        gu = scratch[1] if summed[1] else np.empty(n)
        try:
            yield np.empty(n), gw, gu, np.empty(n)
        finally:
            self.pool.give(scratch)

    def caller_order(self, sorted_: tuple, summed: tuple[bool, bool]) -> list:
        """``(anchors, weights, noise, mean)`` in the caller's order from the sorted gradients of
        anchors, weights, noise and residuals (the mean's is the residuals' negated); weights or
        noise as their sums (floats) where ``summed`` (given as arrays or already as sums). Call
        inside :meth:`outputs`."""
        gz, gw, gu, gr = sorted_
        np.negative(gr, out=gr)
        out: list = []
        for g, total in ((gz, False), (gw, summed[0]), (gu, summed[1]), (gr, False)):
            if total:
                out.append(float(g.sum()) if isinstance(g, np.ndarray) else float(g))
                continue
            if self.perm.shape[0]:
                caller = np.empty(self.n)
                caller[self.perm] = g
                g = caller
            out.append(g)
        return out


class Factor(Ordered, DeferredFactor):
    """The LDLᵀ factor of one Gram on one plan: sorted anchors and parameters, and the variance
    recursion's arrays (all float64, sorted order), in one block of the plan's :class:`Pool`
    (given back when the factor is collected).

    The recursion runs on first use (:meth:`compute`), so that a first likelihood of one vector
    can run its mean pass in the same loop. ``logdet`` is ``log det Σ``; ``zero_pivot`` is
    ``None``, or the caller's indices ``(i, j)`` of the first anchor whose pivot is 0 and of its
    sorted predecessor (``j = -1`` for the first).
    """

    def __init__(
        self, z: np.ndarray, perm: np.ndarray | None, rate: float, w: Any, u: Any, pool: Pool
    ):
        self.em, self.R, self.P, self.G, self.A = self._setup(z, perm, float(rate), w, u, pool, 5)
        self.done = False

    def compute(
        self, r: np.ndarray = _NO_ROWS, mean: np.ndarray = _NO_MEAN, m_all: np.ndarray = _NO_ROWS
    ) -> float:
        """Run the recursion (once); with one column ``r`` (n, 1), its mean pass in the same loop,
        returning its quadratic form (0.0 otherwise) and, when ``m_all`` has a row, keeping its
        states there (as :func:`innovations`)."""
        if self.done:
            return 0.0
        n = self.n
        decays(self.z, self.rate, self.em)
        t, logdet, quad = variance(
            self.em, self.w, self.u, self.R, self.P, self.G, self.A, r, mean, self.perm, m_all
        )
        if t >= 0:
            caller = self.perm if self.perm.shape[0] else np.arange(n)
            self._zero_pivot = (int(caller[t]), int(caller[t - 1]) if t > 0 else -1)
        else:
            self._logdet = float(logdet)
        self.done = True
        return float(quad)

    def gradient_sorted(
        self, r: np.ndarray, mean: np.ndarray, summed: tuple[bool, bool]
    ) -> tuple | None:
        """:func:`nll_gradient` in this factor's order of equal anchors (``None``: Σ singular)."""
        n, k = r.shape
        m_all = self.pool.take((k, n))
        if k == 1 and not self.done:  # the mean pass in the recursion's loop
            quad = np.array([self.compute(r, mean, m_all)])
        else:
            self.compute()
            quad = np.empty(k)
            mean_pass(
                r, mean, self.perm, self.w, self.em, self.G, self.A, self.R, _NO_ROWS, m_all, quad
            )
        if self._zero_pivot is not None:  # Σ singular: no gradient (the front end raises)
            self.pool.give(m_all)
            return None
        with self.outputs(summed) as (gz, gw, gu, gr):
            # weights or noise wanted as sums are summed in the pass (no arrays written)
            grate, wsum, usum = gradient_reverse(
                r, mean, self.perm, self.z, self.w, self.u, self.em, self.R, self.P, self.G,
                self.A, m_all, self.rate, 1.0 / k, gz, gw[: 0 if summed[0] else n],
                gu[: 0 if summed[1] else n], gr,
            )  # fmt: skip
            sums = (wsum if summed[0] else gw, usum if summed[1] else gu)
            parts = self.caller_order((gz, *sums, gr), summed)
        self.pool.give(m_all)
        return (float(quad.sum()), float(grate), *parts)


def _sorted(values: np.ndarray, perm: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """``values`` (the caller's order; a stride-0 view for one value at every anchor) as float64
    in sorted order, in ``out`` unless no copy is needed."""
    values = np.asarray(values, dtype=np.float64)
    if perm is None or values.strides == (0,):
        return values
    gather(values, perm, out, work=perm.shape[0])
    return out


def _work(n: int, k: int) -> int:
    """The ``work=`` of a pass over k columns: one column gains nothing from threads (its
    recursion is serial), so it always runs the serial build."""
    return n * k if k > 1 else 0


def quadratic(f: Factor, r: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """``(r_j - mean)ᵀ Σ⁻¹ (r_j - mean)`` for each column ``r_j`` of ``r`` (n, k); float64 (k,).
    A single column on a factor not yet computed runs in the factor's own loop."""
    n, k = r.shape
    mean = _NO_MEAN if mean is None else mean
    if k == 1 and not f.done:
        return np.array([f.compute(r, mean)])
    f.compute()
    quad = np.empty(k)
    mean_pass(r, mean, f.perm, f.w, f.em, f.G, f.A, f.R, _NO_ROWS, _NO_ROWS, quad)
    return quad


def solve(f: Factor, b: np.ndarray) -> np.ndarray:
    """``Σ⁻¹ b`` for ``b`` (n, k), float64 in the caller's order; O(n k)."""
    f.compute()
    n, k = b.shape
    c = np.empty((n, k))
    quad = np.empty(k)
    mean_pass(b, _NO_MEAN, f.perm, f.w, f.em, f.G, f.A, f.R, c, _NO_ROWS, quad)
    out = np.empty((n, k))
    solve_back(c, f.perm, f.w, f.em, f.G, f.A, out, work=_work(n, k))
    return out


def color_columns(f: Factor, z: np.ndarray) -> np.ndarray:
    """``L D^½ z`` for ``z`` (n, k) (rows in sorted order), float64 in the caller's order."""
    f.compute()
    n, k = z.shape
    out = np.empty((n, k))
    color(z, f.perm, f.w, f.em, f.G, f.A, f.R, out, work=_work(n, k))
    return out


def nll_gradient(
    f: Ordered, r: np.ndarray, mean: np.ndarray | None, summed: tuple[bool, bool] = (False, False)
) -> tuple | None:
    """The gradient of ``nll = (1/k) sum_j (r_j - mean)ᵀ Σ⁻¹ (r_j - mean) / 2 + log det Σ / 2``
    (+ a constant) over the columns of ``r`` (n, k), for a factor of either filter: ``(quad, z,
    rate, w, u, mean)``, ``quad`` the sum of the columns' quadratic forms, the arrays float64 in
    the caller's order; ``w`` (``u``) is the sum over the anchors, a float, where ``summed[0]``
    (``summed[1]``).

    At equal anchors the order of a run is arbitrary and the filter's derivative one-sided; the
    gradient there is the mean of the two runs' orders (the derivative of ``|a_i - a_j|`` at 0
    taken as 0, which central differences also give). ``None`` when Σ is singular. O(n k)."""
    mean_ = _NO_MEAN if mean is None else mean
    result = f.gradient_sorted(r, mean_, summed)
    if result is None:  # Σ singular
        return None
    quad, *parts = result
    mirror = f.mirror()
    if mirror is not None:
        _, *other = mirror.gradient_sorted(r, mean_, summed)
        parts = [0.5 * (a + b) for a, b in zip(parts, other)]
    grate, gz, gw, gu, gmean = parts
    return (quad, gz, grate, gw, gu, gmean)
