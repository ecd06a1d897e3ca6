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
from typing import Any

import numpy as np
from numba import njit, prange

from ._numba_filter import (
    _NO_MEAN,
    _NO_ROWS,
    Ordered,
    Pool,
    _index,
    _work,
    nll_gradient,
)
from ._numba_threads import kernel

__all__ = ["PhasedFactor", "color_columns", "nll_gradient", "quadratic", "solve"]

_HUGE = 2.0**256
_TINY = 2.0**-256


@kernel
def _decays(z, a, omega, rho, negq, cos, sin):  # pragma: no cover - compiled
    """Per sorted position, from its gap ``Δ``: ``ρ = exp(-a Δ)``, ``negq = expm1(-2 a Δ)``
    (``q = -negq``) and the rotation ``θ = ω Δ``; the first position has ``ρ = 0``, ``q = 1``."""
    for t in prange(z.shape[0]):
        if t == 0:
            rho[t] = 0.0
            negq[t] = -1.0
            cos[t] = 1.0
            sin[t] = 0.0
        else:
            gap = z[t] - z[t - 1]
            rho[t] = math.exp(-a * gap)
            negq[t] = math.expm1(-2.0 * a * gap)
            cos[t] = math.cos(omega * gap)
            sin[t] = math.sin(omega * gap)


@njit(cache=True, nogil=True)
def _variance(rho, negq, cos, sin, w, u, R, K0, K1, P00, P01, P11):  # pragma: no cover
    """The two-state variance recursion (module docstring); fills the inverse pivots ``R``, the
    gains per unit weight ``K0``, ``K1`` (the gain is ``w_t (K0, K1)``) and the posterior
    covariances ``P00``, ``P01``, ``P11``; returns ``(t0, log det Σ)``, ``t0`` the first zero
    pivot or -1. Serial, O(n)."""
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
        P00[t] = p00
        P01[t] = d2
        P11[t] = p11
        prod *= s_t
        if not _TINY < prod < _HUGE:
            mantissa, exponent = math.frexp(prod)
            prod = mantissa
            shift += exponent
    return -1, math.log(prod) + shift * math.log(2.0)


@kernel
def _innovations(r, mean, perm, w, rho, cos, sin, R, K0, K1, c, M0, M1, quad):  # pragma: no cover
    """The mean pass of every column of ``r`` ((n, k), the caller's order): ``quad[j]`` the
    quadratic form of ``r_j - mean``; when ``c`` has n rows, ``c[t, j] = e_t / S_t``; when
    ``M0`` has k rows, ``(M0, M1)[j, t] = m_{t-1}`` (for the reverse pass). Columns in parallel."""
    n = rho.shape[0]
    want_c = c.shape[0] > 0
    want_m = M0.shape[0] > 0
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
            if want_m:
                M0[j, t] = m0
                M1[j, t] = m1
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


@njit(cache=True, nogil=True)
def _gradient_reverse(
    r,
    mean,
    perm,
    z,
    w,
    u,
    rho,
    negq,
    cos,
    sin,
    R,
    P00,
    P01,
    P11,
    M0,
    M1,
    a,
    omega,
    scale,
    gz,
    gw,
    gu,
    gr,
):  # pragma: no cover - compiled
    """The likelihood's reverse pass for the two-state filter, right to left, for the columns of
    ``r`` after :func:`_innovations` kept ``m_{t-1}`` in ``M0``, ``M1``.

    For ``L = scale * sum_j sum_t e_t² / (2 S_t) + (1/2) sum_t log S_t``, the reverse-mode
    derivative of the covariance form of the step, ``Pp = F P Fᵀ + q I`` (``F = ρ R(θ)``),
    ``S = w² Pp00 + u``, ``k = Pp[:, 0] / S``, ``P' = Pp - w² S k kᵀ``, ``e = r - w (F m)_0``,
    ``m' = F m + w k e``, evaluated at the forward pass's covariances (full 2 x 2 adjoints, the
    covariance ``P̄`` and each column's ``m̄`` carried from the right). Writes, in sorted order,
    the gradients of the anchors ``gz``, weights ``gw``, noise ``gu`` and residuals ``gr``
    (summed over columns); returns ``(dL/da, dL/dω)``. O(n k), serial.
    """
    n = rho.shape[0]
    k = r.shape[1]
    centred = mean.shape[0] > 0
    mb0 = np.zeros(k)
    mb1 = np.zeros(k)
    b00 = b01 = b10 = b11 = 0.0  # P̄, the adjoint of the posterior covariance
    abar = 0.0
    wbar_omega = 0.0
    for t in range(n):
        gz[t] = 0.0
    for t in range(n - 1, -1, -1):
        i = _index(perm, t)
        rt = rho[t]
        c = cos[t]
        s = sin[t]
        q = -negq[t]
        inv = R[t]
        wt = w[t]
        f00 = rt * c
        f01 = -rt * s
        f10 = rt * s
        f11 = rt * c
        if t > 0:
            p00 = P00[t - 1]
            p01 = P01[t - 1]
            p11 = P11[t - 1]
        else:
            p00 = p01 = p11 = 0.0
        # A = F P, Pp = A Fᵀ + q I, v = Pp[:, 0]
        a00 = f00 * p00 + f01 * p01
        a01 = f00 * p01 + f01 * p11
        a10 = f10 * p00 + f11 * p01
        a11 = f10 * p01 + f11 * p11
        v0 = a00 * f00 + a01 * f01 + q
        v1 = a10 * f00 + a11 * f01
        k0 = v0 * inv
        k1 = v1 * inv
        shift = mean[i] if centred else 0.0
        kb0 = kb1 = 0.0
        fb00 = fb01 = fb10 = fb11 = 0.0
        wbar = 0.0
        rbar = 0.0
        e2 = 0.0
        for j in range(k):
            m0 = M0[j, t]
            m1 = M1[j, t]
            mp0 = f00 * m0 + f01 * m1
            e = (np.float64(r[i, j]) - shift) - wt * mp0
            n0 = mb0[j]
            n1 = mb1[j]
            kdot = k0 * n0 + k1 * n1
            ebar = wt * kdot + scale * e * inv
            kb0 += wt * e * n0
            kb1 += wt * e * n1
            wbar += e * kdot - ebar * mp0
            rbar += ebar
            e2 += e * e
            q0 = n0 - wt * ebar
            q1 = n1
            fb00 += q0 * m0
            fb01 += q0 * m1
            fb10 += q1 * m0
            fb11 += q1 * m1
            mb0[j] = f00 * q0 + f10 * q1
            mb1[j] = f01 * q0 + f11 * q1
        sbar = 0.5 * inv - 0.5 * scale * e2 * inv * inv
        # P' = Pp - (w² / S) v vᵀ
        c1 = wt * wt * inv
        s01 = b01 + b10
        vb0 = -c1 * (2.0 * b00 * v0 + s01 * v1)
        vb1 = -c1 * (s01 * v0 + 2.0 * b11 * v1)
        vpv = v0 * (b00 * v0 + b01 * v1) + v1 * (b10 * v0 + b11 * v1)
        wbar -= 2.0 * wt * inv * vpv
        sbar += c1 * inv * vpv
        # k = v / S
        vb0 += kb0 * inv
        vb1 += kb1 * inv
        sbar -= (kb0 * v0 + kb1 * v1) * inv * inv
        # S = w² v0 + u
        wbar += 2.0 * wt * v0 * sbar
        vb0 += wt * wt * sbar
        ubar = sbar
        # Pp̄ = P̄ + v̄ e0ᵀ
        c00 = b00 + vb0
        c01 = b01
        c10 = b10 + vb1
        c11 = b11
        # Pp = F P Fᵀ + q I: F̄ += Pp̄ A + Pp̄ᵀ A, P̄ <- Fᵀ Pp̄ F, q̄ = tr Pp̄
        fb00 += (c00 + c00) * a00 + (c01 + c10) * a10
        fb01 += (c00 + c00) * a01 + (c01 + c10) * a11
        fb10 += (c10 + c01) * a00 + (c11 + c11) * a10
        fb11 += (c10 + c01) * a01 + (c11 + c11) * a11
        qbar = c00 + c11
        g00 = c00 * f00 + c01 * f10
        g01 = c00 * f01 + c01 * f11
        g10 = c10 * f00 + c11 * f10
        g11 = c10 * f01 + c11 * f11
        b00 = f00 * g00 + f10 * g10
        b01 = f00 * g01 + f10 * g11
        b10 = f01 * g00 + f11 * g10
        b11 = f01 * g01 + f11 * g11
        if t > 0:
            # F = ρ R(θ), ρ = exp(-a Δ), q = 1 - ρ² = -expm1(-2 a Δ), θ = ω Δ
            rhobar = fb00 * c - fb01 * s + fb10 * s + fb11 * c
            thetabar = rt * (-fb00 * s - fb01 * c + fb10 * c - fb11 * s)
            gap = z[t] - z[t - 1]
            common = -rhobar * rt + qbar * 2.0 * rt * rt
            dgap = common * a + thetabar * omega
            abar += common * gap
            wbar_omega += thetabar * gap
            gz[t] += dgap
            gz[t - 1] -= dgap
        gw[t] = wbar
        gu[t] = ubar
        gr[t] = rbar
    return abar, wbar_omega


class PhasedFactor(Ordered):
    """The LDLᵀ factor of a phased Gram (complex rate) on one plan, as
    :class:`~laplexops.backends._numba_filter.Factor` for a real one: ``logdet``, ``zero_pivot``
    and the passes :func:`quadratic`, :func:`solve`, :func:`color_columns`."""

    def __init__(
        self, z: np.ndarray, perm: np.ndarray | None, rate: complex, w: Any, u: Any, pool: Pool
    ):
        n = z.shape[0]
        arrays = self._setup(z, perm, complex(rate), w, u, pool, 10)
        self.rho, self.cos, self.sin, self.R, self.K0, self.K1, self.negq = arrays[:7]
        self.P00, self.P01, self.P11 = arrays[7:]
        a, omega = self.rate.real, self.rate.imag
        _decays(self.z, a, omega, self.rho, self.negq, self.cos, self.sin, work=n)
        t, logdet = _variance(
            self.rho, self.negq, self.cos, self.sin, self.w, self.u, self.R, self.K0, self.K1,
            self.P00, self.P01, self.P11,
        )  # fmt: skip
        self.zero_pivot: tuple[int, int] | None = None
        self.logdet = math.nan
        if t >= 0:
            caller = self.perm if self.perm.shape[0] else np.arange(n)
            self.zero_pivot = (int(caller[t]), int(caller[t - 1]) if t > 0 else -1)
        else:
            self.logdet = float(logdet)

    def gradient_sorted(
        self, r: np.ndarray, mean: np.ndarray, summed: tuple[bool, bool]
    ) -> tuple | None:
        """The likelihood's gradient in this factor's order of equal anchors (see
        ``_numba_filter.nll_gradient``); the rate's as ``dL/da + i dL/dω``. ``None`` when Σ is
        singular."""
        if self.zero_pivot is not None:
            return None
        n, k = r.shape
        m_all = self.pool.take((2, k, n))
        quad = np.empty(k)
        args = (self.perm, self.w, self.rho, self.cos, self.sin, self.R, self.K0, self.K1)
        _innovations(r, mean, *args, _NO_ROWS, m_all[0], m_all[1], quad, work=_work(n, k))
        with self.outputs(summed) as (gz, gw, gu, gr):
            abar, omegabar = _gradient_reverse(
                r, mean, self.perm, self.z, self.w, self.u, self.rho, self.negq, self.cos,
                self.sin, self.R, self.P00, self.P01, self.P11, m_all[0], m_all[1],
                self.rate.real, self.rate.imag, 1.0 / k, gz, gw, gu, gr,
            )  # fmt: skip
        self.pool.give(m_all)
        rate = complex(abar, omegabar)
        return (float(quad.sum()), rate, *self.caller_order((gz, gw, gu, gr), summed))


def quadratic(f: PhasedFactor, r: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """The quadratic forms of the columns of ``r`` (n, k) less ``mean``; float64 (k,)."""
    n, k = r.shape
    quad = np.empty(k)
    mean = _NO_MEAN if mean is None else mean
    args = (f.perm, f.w, f.rho, f.cos, f.sin, f.R, f.K0, f.K1)
    _innovations(r, mean, *args, _NO_ROWS, _NO_ROWS, _NO_ROWS, quad, work=_work(n, k))
    return quad


def solve(f: PhasedFactor, b: np.ndarray) -> np.ndarray:
    """``Σ⁻¹ b`` for ``b`` (n, k), float64 in the caller's order."""
    n, k = b.shape
    c = np.empty((n, k))
    args = (f.perm, f.w, f.rho, f.cos, f.sin, f.R, f.K0, f.K1)
    _innovations(b, _NO_MEAN, *args, c, _NO_ROWS, _NO_ROWS, np.empty(k), work=_work(n, k))
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
