"""LaplexGram on the CUDA backend: the scalar Kalman filter of ``_numba_filter`` as parallel scans.

The filter's recursions (``_numba_filter``'s docstring; ``docs/math.md`` §7) are of two kinds,
both associative, and each runs as a three-phase scan of ``laplex_gram.cu``:

* the variance recursion ``P_t = (u φ² P + u q) / (w² φ² P + w² q + u)``, a Möbius map of a
  non-negative 2×2 matrix (:func:`variance`, which also writes the pivots' inverses ``R``, the
  gains ``G``, the mean decays ``A`` and the tiles' sums of ``log S``);
* affine recursions ``y_t = a_t y_{t-1} + b_t``, forward or backward (:func:`affine`): the mean
  pass ``m_t = A_t m_{t-1} + G_t r_t``, the solve's back substitution, the sampler
  (``m_t = φ_t m_{t-1} + G_t sqrt(S_t) z_t``) and both adjoint passes of the gradient.

Everything between the scans is elementwise arithmetic and column sums in the array module, in
float64: the host code is written against ``backend.xp`` and ``backend.launch`` like the
products' (``_cupy``), so the tests run it on the CPU with the kernels built for the host. Work
O(n k) per pass; the scans read and write float64 arrays of shape (k, n) (a column per row).
The phased Gram (complex rate, a two-state filter) has no kernels here yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda_kernels as cuda
from ._base import DeferredFactor

__all__ = ["GramFactor", "Mirrored", "affine", "variance"]

_NONE = np.iinfo(np.uint64).max  # no zero pivot (the kernels' atomicMin starts here)


def affine(backend: Any, a: Any, b: Any, reverse: bool = False) -> Any:
    """The exclusive scan of ``y_t = a[t] y_{t-1} + b[j, t]`` from ``y = 0`` for every row ``j``
    of ``b`` (k, n): ``out[j, t]`` is the state entering item ``t`` (from the left, or from the
    right when ``reverse``). ``a`` (n,), float64. Three launches per chunk of columns."""
    xp = backend.xp
    k, n = b.shape
    out = xp.empty((k, n))
    if n == 0 or k == 0:
        return out
    tiles = -(-n // backend.tile)
    maps = xp.empty((k, tiles, 2))
    carries = xp.empty((k, tiles))
    block = (backend.geometry["LAPLEX_BLOCK"],)
    for j0 in range(0, k, backend.max_grid_y):
        j1 = min(k, j0 + backend.max_grid_y)
        for phase in (cuda.GRAM_REDUCE, None, cuda.GRAM_WRITE):
            if phase is None:
                backend.launch(
                    cuda.GRAM_AFFINE_CARRIES,
                    (j1 - j0,),
                    (backend.geometry["LAPLEX_CARRY_BLOCK"],),
                    (maps[j0:j1], carries[j0:j1], np.int64(tiles)),
                )
                continue
            backend.launch(
                cuda.GRAM_AFFINE,
                (tiles, j1 - j0),
                block,
                (
                    a,
                    b[j0:j1],
                    out[j0:j1],
                    maps[j0:j1],
                    carries[j0:j1],
                    np.int64(n),
                    np.int64(tiles),
                    np.int32(reverse),
                    np.int32(phase),
                ),
            )
    return out


def variance(backend: Any, em: Any, w: Any, u: Any) -> tuple[Any, float, int]:
    """The variance recursion over the sorted ``em = expm1(-s Δ)``, weights and noise (float64,
    (n,)): ``(RPGA, logdet, t0)`` with ``RPGA`` (4, n) the inverse pivots, posterior variances,
    gains and mean decays, ``logdet = sum log S`` and ``t0`` the first sorted position whose pivot
    is not positive (-1: none)."""
    xp = backend.xp
    n = em.shape[0]
    out = xp.empty((4, n))
    if n == 0:
        return out, 0.0, -1
    tiles = -(-n // backend.tile)
    maps = xp.empty((tiles, 4))
    carries = xp.empty((tiles, 2))
    logs = xp.empty(tiles)
    zero = xp.full(1, _NONE, dtype=np.uint64)
    block = (backend.geometry["LAPLEX_BLOCK"],)
    args = (em, w, u, maps, carries, out[0], out[1], out[2], out[3], logs, zero, np.int64(n))
    backend.launch(cuda.GRAM_VARIANCE, (tiles,), block, (*args, np.int32(cuda.GRAM_REDUCE)))
    backend.launch(
        cuda.GRAM_VARIANCE_CARRIES,
        (1,),
        (backend.geometry["LAPLEX_CARRY_BLOCK"],),
        (maps, carries, np.int64(tiles)),
    )
    backend.launch(cuda.GRAM_VARIANCE, (tiles,), block, (*args, np.int32(cuda.GRAM_WRITE)))
    t0 = int(zero[0])
    return out, float(logs.sum()), (-1 if t0 == _NONE else t0)


class Mirrored:
    """What a plan keeps for its Grams: the order of its sorted anchors with every run of ties
    reversed, found on first use (one per plan, whatever the parameters)."""

    def __init__(self) -> None:
        self._order: Any = False  # not known yet

    def __call__(self, xp: Any, z: Any, perm: Any) -> Any:
        """``perm`` (``None``: the identity) with every run of equal sorted anchors ``z``
        (the plan's) reversed, or ``None`` when the anchors are distinct."""
        if self._order is False:
            n = z.shape[0]
            first = xp.ones(n, dtype=bool)
            first[1:] = z[1:] != z[:-1]
            self._order = None
            if n and not bool(xp.all(first)):
                starts = xp.flatnonzero(first)
                run = xp.cumsum(first) - 1
                ends = xp.empty_like(starts)
                ends[:-1] = starts[1:]
                ends[-1] = n
                mirrored = starts[run] + ends[run] - 1 - xp.arange(n)
                self._order = mirrored if perm is None else perm[mirrored]
        return self._order


class GramFactor(DeferredFactor):
    """The LDLᵀ factor of one Gram on a CUDA plan (``GramBackend``'s factor): anchors and
    parameters in sorted order (float64), and the variance recursion's arrays, computed on first
    use (:meth:`arrays`). ``zero_pivot`` and ``logdet`` as the protocol says; ``mirror()`` is the
    factor with every run of equal anchors reversed (the gradient at ties is the mean of both),
    its order from ``mirrored``, the plan's :class:`Mirrored`."""

    def __init__(
        self, backend: Any, z: Any, perm: Any, rate: float, weights: Any, noise: Any,
        mirrored: Mirrored,
    ):  # fmt: skip
        xp = backend.xp
        self.backend = backend
        self.mirrored = mirrored
        self.z = z.astype(np.float64, copy=False)
        self.perm = perm
        self.rate = float(rate)
        self.weights, self.noise = weights, noise  # the caller's order, for the mirror
        self.w = self._sorted(weights)
        self.u = self._sorted(noise)
        n = self.n
        self.em = xp.empty(n)
        if n:
            self.em[0] = -1.0
            self.em[1:] = xp.expm1(-self.rate * xp.diff(self.z))
        self.phi = 1.0 + self.em
        self._arrays: Any = None
        self._mirror: Any = False

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    def _sorted(self, values: Any) -> Any:
        xp = self.backend.xp
        values = values if self.perm is None else values[self.perm]
        return xp.ascontiguousarray(values, dtype=np.float64)

    def compute(self) -> None:
        """Run the variance recursion (once)."""
        if self._arrays is not None:
            return
        self._arrays, logdet, t = variance(self.backend, self.em, self.w, self.u)
        if t >= 0:
            caller = self._caller_index
            self._zero_pivot = (caller(t), caller(t - 1) if t > 0 else -1)
        else:
            self._logdet = logdet

    def _caller_index(self, t: int) -> int:
        return t if self.perm is None else int(self.perm[t])

    def arrays(self) -> tuple[Any, Any, Any, Any]:
        """``(R, P, G, A)``: the inverse pivots, posterior variances, gains and mean decays (the
        recursion run on first use)."""
        self.compute()
        return tuple(self._arrays)

    # ------------------------------------------------------------------ orders
    def rows(self, r: Any, mean: Any = None) -> Any:
        """Columns ``r`` (n, k) (the caller's order), minus ``mean``, as float64 rows (k, n) in
        sorted order."""
        xp = self.backend.xp
        if self.perm is not None:
            r = r[self.perm]
            mean = None if mean is None else mean[self.perm]
        out = xp.array(r.T, dtype=np.float64, order="C")
        if mean is not None:
            out -= mean
        return out

    def to_caller(self, rows: Any) -> Any:
        """Rows (k, n) in sorted order as columns (n, k) in the caller's order."""
        xp = self.backend.xp
        if self.perm is None:
            return xp.ascontiguousarray(rows.T)
        out = xp.empty((rows.shape[1], rows.shape[0]))
        out[self.perm] = rows.T
        return out

    def mirror(self) -> Any:
        """The factor of the same Gram with every run of equal anchors reversed, or ``None``
        when the anchors are distinct (built once; the order comes from the plan's
        :class:`Mirrored`)."""
        if self._mirror is False:
            order = self.mirrored(self.backend.xp, self.z, self.perm)
            self._mirror = None
            if order is not None:
                self._mirror = GramFactor(
                    self.backend, self.z, order, self.rate, self.weights, self.noise, self.mirrored
                )
        return self._mirror

    # ------------------------------------------------------------------ passes
    def innovations(self, rows: Any) -> tuple[Any, Any, Any]:
        """The mean pass over ``rows`` (k, n): ``(m_prev, e, quad)``, the states entering each
        item, the innovations ``e_t = r_t - w_t φ_t m_{t-1}`` and each row's ``sum e² / S``."""
        R, _, G, A = self.arrays()
        m_prev = affine(self.backend, A, G * rows)
        e = rows - (self.w * self.phi) * m_prev
        quad = (e * e * R).sum(axis=1)
        return m_prev, e, quad

    def solve(self, b: Any) -> Any:
        """``Σ⁻¹ b`` for ``b`` (n, k), float64 in the caller's order."""
        _, e, _ = self.innovations(self.rows(b))
        R, _, G, A = self.arrays()
        c = e * R
        lam = affine(self.backend, A, -(self.w * self.phi) * c, reverse=True)
        return self.to_caller(c + G * lam)

    def color(self, z: Any) -> Any:
        """``L D^½ z`` for ``z`` (n, k) (rows in sorted order), in the caller's order."""
        xp = self.backend.xp
        R, _, G, _ = self.arrays()
        root = G / xp.sqrt(R)
        shock = xp.array(z.T, dtype=np.float64, order="C")
        m_prev = affine(self.backend, self.phi, root * shock)
        return self.to_caller(shock / xp.sqrt(R) + (self.w * self.phi) * m_prev)

    def gradient_sorted(self, r: Any, mean: Any) -> tuple[float, float, Any, Any, Any, Any]:
        """``(quad, rate, anchors, weights, noise, residuals)``: the reverse pass of
        ``_numba_filter.gradient_reverse`` in this factor's sorted order, the two adjoint
        recursions as backward affine scans (``docs/math.md`` §7.4)."""
        xp = self.backend.xp
        rows = self.rows(r, mean)
        k = rows.shape[0]
        scale = 1.0 / k
        R, P, G, A = self.arrays()
        w, u, phi = self.w, self.u, self.phi
        m_prev, e, quad = self.innovations(rows)
        se = (scale * R) * e
        wphi = w * phi
        mbar = affine(self.backend, A, -wphi * se, reverse=True)
        ebar = se + G * mbar
        g0 = (mbar * e).sum(axis=0)
        g1 = phi * (ebar * m_prev).sum(axis=0)
        g2 = ((mbar - w * ebar) * m_prev).sum(axis=0)
        g3 = ebar.sum(axis=0)
        g4 = (e * e).sum(axis=0)
        sbar0 = 0.5 * R - (0.5 * scale) * g4 * R * R - g0 * G * R
        base = g0 * w * R + sbar0 * w * w
        pbar = affine(self.backend, A * A, (phi * phi * base)[None, :], reverse=True)[0]
        sbar = sbar0 - pbar * P * R
        ratio = u * R
        ppbar = base + pbar * ratio * ratio
        p_prev = xp.zeros_like(P)
        p_prev[1:] = P[:-1]
        q = -self.em * (1.0 + phi)
        pp = phi * phi * p_prev + q
        wbar = g0 * pp * R - g1 + sbar * 2.0 * w * pp
        ubar = pbar * pp * R + sbar
        phibar = g2 + ppbar * 2.0 * phi * p_prev
        # φ = exp(-s Δ), q = 1 - φ²: dφ = -φ (s dΔ + Δ ds), dq = 2 φ² (s dΔ + Δ ds)
        common = (ppbar * 2.0 * phi - phibar) * phi
        gz = xp.zeros(self.n)
        grate = 0.0
        if self.n > 1:
            dgap = common[1:] * self.rate
            gz[1:] += dgap
            gz[:-1] -= dgap
            grate = float((common[1:] * xp.diff(self.z)).sum())
        return float(quad.sum()), grate, gz, wbar, ubar, g3

    def caller(self, g: Any) -> Any:
        """A sorted gradient (n,) in the caller's order."""
        return self.to_caller(g[None, :])[:, 0]


def nll_gradient(
    f: GramFactor, r: Any, mean: Any, summed: tuple[bool, bool] = (False, False)
) -> tuple | None:
    """``GramBackend.gram_nll_gradient`` for a :class:`GramFactor`: the gradient at ties is the
    mean of the two orders of each run of equal anchors (as ``_numba_filter.nll_gradient``);
    ``None`` when Σ is singular."""
    if f.zero_pivot is not None:
        return None
    quad, grate, *parts = f.gradient_sorted(r, mean)
    parts = [f.caller(g) for g in parts]
    mirror = f.mirror()
    if mirror is not None:
        _, other_rate, *other = mirror.gradient_sorted(r, mean)
        grate = 0.5 * (grate + other_rate)
        parts = [0.5 * (g + mirror.caller(h)) for g, h in zip(parts, other)]
    gz, gw, gu, gr = parts
    out_w = float(gw.sum()) if summed[0] else gw
    out_u = float(gu.sum()) if summed[1] else gu
    return quad, gz, grate, out_w, out_u, -gr
