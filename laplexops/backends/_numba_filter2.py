"""The phased Gram's kernels on the CPU: a two-state Kalman filter (Numba).

For a complex rate ``s = a + iω`` (``a > 0``) the Gram's kernel is ``Re exp(-s |d|) = exp(-a |d|)
cos(ω d)``: the covariance of the first coordinate of a rotating, decaying two-dimensional
Ornstein-Uhlenbeck state over the sorted anchors,

    x_t = ρ_t R(θ_t) x_{t-1} + sqrt(q_t) ε_t,      r_t = w_t x_t[0] + sqrt(u_t) η_t,
    ρ_t = exp(-a Δ_t),  q_t = 1 - ρ_t² = -expm1(-2 a Δ_t),  θ_t = ω Δ_t,

with ``R(θ)`` the rotation by θ, standard normal ``ε_t`` (2-D) and ``η_t``, and ``x_0 ~ N(0, I)``
(``ρ_0 = 0``, ``q_0 = 1``): ``Cov(x_t) = I`` and ``Cov(x_t[0], x_s[0]) = exp(-a d) cos(ω d)``.

The filter keeps the 2 x 2 posterior covariance as its trace ``T``, its traceless part ``(d1, d2)``
(``P = T/2 I + [[d1, d2], [d2, -d1]]``) and its determinant ``det``: a rotation turns ``(d1,
d2)`` by ``2θ`` and keeps ``T`` and ``det``, the prediction ``ρ² R P Rᵀ + q I`` has ``det = ρ⁴ det
+ ρ² q T + q²`` (a sum of non-negative terms), and the observed variance ``Pp00 = T/2 + d1`` is
formed without cancellation from the smaller eigenvalue ``det / (T/2 + |D|)`` plus ``|D| + d1``
(``d2² / (|D| - d1)`` when ``d1 < 0``). The update is ``S = w² Pp00 + u``, ``P00 = Pp00 u / S``,
``P01 = Pp01 u / S``, ``P11 = (u Pp11 + w² det(Pp)) / S``, ``det(P) = det(Pp) u / S``: again no
difference of nearly equal numbers. A zero pivot is a singular Σ, reported as by the scalar filter
(``_numba_filter``), whose interface (a factor with ``logdet`` and ``zero_pivot``) this module
shares. Everything is float64; O(n) per pass and column.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
from numba import njit, prange

from ._numba_filter import _NO_MEAN, _NO_PERM, Pool, _index, _sorted, _work
from ._numba_threads import kernel

__all__ = ["PhasedFactor"]

_HUGE = 2.0**256
_TINY = 2.0**-256


@kernel
def _decays(z, a, omega, rho, cos, sin):  # pragma: no cover - compiled
    """Per sorted position: ``ρ = exp(-a Δ)`` (0 for the first) and the rotation ``θ = ω Δ``."""
    for t in prange(z.shape[0]):
        if t == 0:
            rho[t] = 0.0
            cos[t] = 1.0
            sin[t] = 0.0
        else:
            gap = z[t] - z[t - 1]
            rho[t] = math.exp(-a * gap)
            cos[t] = math.cos(omega * gap)
            sin[t] = math.sin(omega * gap)


@kernel
def _gaps(z, a, out):  # pragma: no cover - compiled
    """``out[t] = expm1(-2 a Δ_t)`` (``-1`` for the first): ``q_t = -out[t]``."""
    for t in prange(z.shape[0]):
        out[t] = math.expm1(-2.0 * a * (z[t] - z[t - 1])) if t > 0 else -1.0


@njit(cache=True)
def _variance(rho, negq, cos, sin, w, u, R, K0, K1):  # pragma: no cover - compiled
    """The two-state variance recursion (module docstring); fills the inverse pivots ``R`` and
    the gains per unit weight ``K0``, ``K1`` (the gain is ``w_t (K0, K1)``), returns ``(t0, log
    det Σ)``, ``t0`` the first zero pivot or -1. Serial, O(n)."""
    T = 0.0
    d1 = 0.0
    d2 = 0.0
    det = 0.0
    prod = 1.0
    shift = 0
    for t in range(rho.shape[0]):
        r = rho[t]
        q = -negq[t]
        c = cos[t]
        s = sin[t]
        c2 = c * c - s * s
        s2 = 2.0 * c * s
        r2 = r * r
        tp = r2 * T + 2.0 * q
        e1 = r2 * (c2 * d1 - s2 * d2)
        e2 = r2 * (s2 * d1 + c2 * d2)
        detp = r2 * r2 * det + r2 * q * T + q * q
        half = 0.5 * tp
        mag = math.sqrt(e1 * e1 + e2 * e2)
        lmin = detp / (half + mag) if half + mag > 0.0 else 0.0
        # |D| + e1 and |D| - e1, whichever would cancel taken as e2² over the other
        if e1 >= 0.0:
            plus = mag + e1
            minus = e2 * e2 / plus if plus > 0.0 else 0.0
        else:
            minus = mag - e1
            plus = e2 * e2 / minus
        pp00 = lmin + plus
        pp11 = lmin + minus
        wt = w[t]
        ut = u[t]
        s_t = wt * wt * pp00 + ut
        if not s_t > 0.0:
            return t, 0.0
        inv = 1.0 / s_t
        R[t] = inv
        K0[t] = pp00 * inv
        K1[t] = e2 * inv
        p00 = pp00 * ut * inv
        p11 = (ut * pp11 + wt * wt * detp) * inv
        T = p00 + p11
        d1 = 0.5 * (p00 - p11)
        d2 = e2 * ut * inv
        det = detp * ut * inv
        prod *= s_t
        if not _TINY < prod < _HUGE:
            mantissa, exponent = math.frexp(prod)
            prod = mantissa
            shift += exponent
    return -1, math.log(prod) + shift * math.log(2.0)


@kernel
def _innovations(r, mean, perm, w, rho, cos, sin, R, K0, K1, c, quad):  # pragma: no cover
    """The mean pass of every column of ``r`` ((n, k), the caller's order): ``quad[j]`` the
    quadratic form of ``r_j - mean`` and, when ``c`` has n rows, ``c[t, j] = e_t / S_t``.
    Columns in parallel."""
    n = rho.shape[0]
    want_c = c.shape[0] > 0
    centred = mean.shape[0] > 0
    for j in prange(r.shape[1]):
        m0 = 0.0
        m1 = 0.0
        acc = 0.0
        for t in range(n):
            i = _index(perm, t)
            x = np.float64(r[i, j])
            if centred:
                x -= mean[i]
            p0 = rho[t] * (cos[t] * m0 - sin[t] * m1)
            p1 = rho[t] * (sin[t] * m0 + cos[t] * m1)
            wt = w[t]
            e = x - wt * p0
            ce = e * R[t]
            acc += e * ce
            if want_c:
                c[t, j] = ce
            m0 = p0 + wt * K0[t] * e
            m1 = p1 + wt * K1[t] * e
        quad[j] = acc


@kernel
def _solve_back(c, perm, w, rho, cos, sin, K0, K1, out):  # pragma: no cover - compiled
    """``out = L⁻ᵀ c``: the adjoint of the mean pass, right to left, into the caller's order."""
    n = rho.shape[0]
    for j in prange(c.shape[1]):
        l0 = 0.0
        l1 = 0.0
        for t in range(n - 1, -1, -1):
            ct = c[t, j]
            wt = w[t]
            gain = K0[t] * l0 + K1[t] * l1
            out[_index(perm, t), j] = ct + wt * gain
            v0 = l0 - wt * (wt * gain + ct)
            v1 = l1
            l0 = rho[t] * (cos[t] * v0 + sin[t] * v1)
            l1 = rho[t] * (-sin[t] * v0 + cos[t] * v1)


@kernel
def _color(zn, perm, w, rho, cos, sin, R, K0, K1, out):  # pragma: no cover - compiled
    """``out = L D^½ zn``: the mean pass run from the innovations ``e_t = sqrt(S_t) zn[t, j]``."""
    n = rho.shape[0]
    for j in prange(zn.shape[1]):
        m0 = 0.0
        m1 = 0.0
        for t in range(n):
            p0 = rho[t] * (cos[t] * m0 - sin[t] * m1)
            p1 = rho[t] * (sin[t] * m0 + cos[t] * m1)
            e = zn[t, j] / math.sqrt(R[t])
            wt = w[t]
            out[_index(perm, t), j] = e + wt * p0
            m0 = p0 + wt * K0[t] * e
            m1 = p1 + wt * K1[t] * e


class PhasedFactor:
    """The LDLᵀ factor of a phased Gram (complex rate) on one plan, as
    :class:`~laplexops.backends._numba_filter.Factor` for a real one: ``logdet``, ``zero_pivot``
    and the passes :func:`quadratic`, :func:`solve`, :func:`color_columns`."""

    def __init__(
        self, z: np.ndarray, perm: np.ndarray | None, rate: complex, w: Any, u: Any, pool: Pool
    ):
        n = z.shape[0]
        block = pool.take((9, n))
        weakref.finalize(self, pool.give, block)
        self.rho, self.cos, self.sin, self.R, self.K0, self.K1, negq = block[:7]
        z64 = np.asarray(z, dtype=np.float64)
        self.perm = _NO_PERM if perm is None else perm
        self.w = _sorted(w, perm, block[7])
        u_sorted = _sorted(u, perm, block[8])
        a, omega = float(rate.real), float(rate.imag)
        _decays(z64, a, omega, self.rho, self.cos, self.sin, work=n)
        _gaps(z64, a, negq, work=n)
        t, logdet = _variance(
            self.rho, negq, self.cos, self.sin, self.w, u_sorted, self.R, self.K0, self.K1
        )
        self.zero_pivot: tuple[int, int] | None = None
        self.logdet = math.nan
        if t >= 0:
            caller = self.perm if self.perm.shape[0] else np.arange(n)
            self.zero_pivot = (int(caller[t]), int(caller[t - 1]) if t > 0 else -1)
        else:
            self.logdet = float(logdet)

    @property
    def n(self) -> int:
        return self.rho.shape[0]


def quadratic(f: PhasedFactor, r: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """The quadratic forms of the columns of ``r`` (n, k) less ``mean``; float64 (k,)."""
    n, k = r.shape
    quad = np.empty(k)
    mean = _NO_MEAN if mean is None else mean
    args = (f.perm, f.w, f.rho, f.cos, f.sin, f.R, f.K0, f.K1)
    _innovations(r, mean, *args, np.empty((0, k)), quad, work=_work(n, k))
    return quad


def solve(f: PhasedFactor, b: np.ndarray) -> np.ndarray:
    """``Σ⁻¹ b`` for ``b`` (n, k), float64 in the caller's order."""
    n, k = b.shape
    c = np.empty((n, k))
    args = (f.perm, f.w, f.rho, f.cos, f.sin, f.R, f.K0, f.K1)
    _innovations(b, _NO_MEAN, *args, c, np.empty(k), work=_work(n, k))
    out = np.empty((n, k))
    _solve_back(c, f.perm, f.w, f.rho, f.cos, f.sin, f.K0, f.K1, out, work=_work(n, k))
    return out


def color_columns(f: PhasedFactor, zn: np.ndarray) -> np.ndarray:
    """``L D^½ zn`` for ``zn`` (n, k), float64 in the caller's order."""
    n, k = zn.shape
    out = np.empty((n, k))
    args = (f.perm, f.w, f.rho, f.cos, f.sin, f.R, f.K0, f.K1)
    _color(zn, *args, out, work=_work(n, k))
    return out
