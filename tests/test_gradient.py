"""``gradient(v, g)`` (docs/reference.md, Gradients): the four gradients of
``L = Re(sum conj(g) * (W v))`` against the reference's formulas evaluated densely, against central
finite differences, at ties (sign(0) = 0), for 2-D operands, and in float32."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import laplexops as lx
from laplex_testing import dense_ref, f64, gradient_ref, operand, problems

NAMES = ("x", "y", "rate", "v")


def check_against_ref(grads, ref, scales, tol, tiny=1e-280):
    """Every gradient within ``tol`` times the 2-norm of the terms it sums."""
    for name, got, want, scale in zip(NAMES, grads, ref, scales):
        got = f64(got)
        want = f64(want)
        assert got.shape == np.shape(want), (name, got.shape, np.shape(want))
        err = float(np.linalg.norm(np.ravel(got - want)))
        bound = tol * float(np.linalg.norm(np.ravel(scale))) + tiny
        assert err <= bound, f"gradient {name}: error {err:.3e} > {bound:.3e}"


def check_types(grads, p, v, op_real_dtype):
    assert isinstance(grads, lx.Gradients)
    gx, gy, grate, gv = grads
    assert gx is grads.x and gy is grads.y and grate is grads.rate and gv is grads.v
    assert isinstance(gx, np.ndarray) and isinstance(gy, np.ndarray) and isinstance(gv, np.ndarray)
    assert gx.shape == (p["m"],) and gy.shape == (p["n"],)
    assert gx.dtype == op_real_dtype and gy.dtype == op_real_dtype
    if isinstance(p["rate"], complex):
        assert type(grate) is complex
    else:
        assert type(grate) is float
    assert gv.shape == v.shape
    assert gv.dtype.kind == ("c" if np.iscomplexobj(v) else "f")
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy)) and np.all(np.isfinite(gv))


# ------------------------------------------------------------------ the formulas, densely
@given(data=st.data())
def test_gradients_match_dense_formulas_float64(data):
    p = data.draw(problems())
    rng = p["rng"]
    kind = data.draw(st.sampled_from(["1d", "col", "mat"]))
    vdt = data.draw(st.sampled_from([np.float64, np.complex128]))
    gdt = data.draw(st.sampled_from([np.float64, np.complex128]))
    k = data.draw(st.integers(1, 3))
    v = operand(rng, p["n"], kind, vdt, k=k)
    g = operand(rng, p["m"], kind, gdt, k=k)
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    grads = op.gradient(v, g)
    check_types(grads, p, v, np.float64)
    if not np.iscomplexobj(v):
        assert grads.v.dtype == np.float64
    ref, scales = gradient_ref(p["x"], p["y"], p["rate"], v, g)
    check_against_ref(grads, ref, scales, 1e-10)


@given(data=st.data())
def test_gradients_float32_close_to_float64(data):
    p = data.draw(problems(dtype=np.float32))
    rng = p["rng"]
    kind = data.draw(st.sampled_from(["1d", "mat"]))
    vdt = data.draw(st.sampled_from([np.float32, np.complex64]))
    v = operand(rng, p["n"], kind, vdt, k=2)
    g = operand(rng, p["m"], kind, vdt, k=2)
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    grads = op.gradient(v, g)
    check_types(grads, p, v, np.float32)
    if not np.iscomplexobj(v):
        assert grads.v.dtype == np.float32
    ref, scales = gradient_ref(p["x"], p["y"], p["rate"], v, g)
    check_against_ref(grads, ref, scales, 1e-4, tiny=1e-20)
    # and the float64 operator on the same (float32-valued) anchors
    op64 = lx.LaplexOperator(p["x"].astype(np.float64), p["y"].astype(np.float64), p["rate"])
    g64 = op64.gradient(f64(v), f64(g))
    check_against_ref(grads, g64, scales, 1e-4, tiny=1e-20)
    check_against_ref(g64, ref, scales, 1e-10)


# ------------------------------------------------------------------ central finite differences
def _loss(op, v, g) -> float:
    return float(np.real(np.vdot(np.ravel(g), np.ravel(op @ v))))


@st.composite
def fd_problems(draw):
    """Small problems whose distinct anchor values are >= 1e-3 scale apart (ties allowed), so that
    central differences with h = 1e-6 scale never step across a kink other than a tie (where the
    central difference of |d| is 0 = sign(0))."""
    p = draw(
        problems(
            max_m=7, max_n=7, max_c=1.0, layouts=("random", "ties", "same", "shared", "grid", "dup")
        )
    )
    allv = np.unique(np.concatenate([p["x"], p["y"]]))
    if allv.size > 1:
        assume(np.min(np.diff(allv)) >= 1e-3 * p["scale"])
    return p


@given(p=fd_problems(), data=st.data())
def test_gradients_match_central_differences(p, data):
    rng = p["rng"]
    x, y, rate, scale = p["x"], p["y"], p["rate"], p["scale"]
    kind = data.draw(st.sampled_from(["1d", "mat"]))
    vdt = data.draw(st.sampled_from([np.float64, np.complex128]))
    v = operand(rng, p["n"], kind, vdt, k=2)
    g = operand(rng, p["m"], kind, data.draw(st.sampled_from([np.float64, np.complex128])), k=2)
    op = lx.LaplexOperator(x, y, rate)
    grads = op.gradient(v, g)
    _, scales = gradient_ref(x, y, rate, v, g)
    # rounding of L, divided by the step: the noise floor of a central difference
    W = np.abs(dense_ref(x, y, rate))
    size_L = float(
        np.sum(np.abs(f64(g)).reshape(p["m"], -1) * (W @ np.abs(f64(v)).reshape(p["n"], -1)))
    )

    h = 1e-6 * scale
    floor = 1e-7 * size_L / scale
    for i in range(p["m"]):
        xp_, xm_ = x.copy(), x.copy()
        xp_[i] += h
        xm_[i] -= h
        fd = (_loss(op.with_anchors(xp_, y), v, g) - _loss(op.with_anchors(xm_, y), v, g)) / (2 * h)
        assert abs(grads.x[i] - fd) <= 1e-5 * scales[0][i] + floor, ("x", i, grads.x[i], fd)
    for j in range(p["n"]):
        yp_, ym_ = y.copy(), y.copy()
        yp_[j] += h
        ym_[j] -= h
        fd = (_loss(op.with_anchors(x, yp_), v, g) - _loss(op.with_anchors(x, ym_), v, g)) / (2 * h)
        assert abs(grads.y[j] - fd) <= 1e-5 * scales[1][j] + floor, ("y", j, grads.y[j], fd)

    hs = 1e-6 * abs(rate)
    rate_floor = 1e-7 * size_L / abs(rate)
    d_re = (_loss(op.with_rate(rate + hs), v, g) - _loss(op.with_rate(rate - hs), v, g)) / (2 * hs)
    if isinstance(rate, complex):
        d_im = (
            _loss(op.with_rate(rate + 1j * hs), v, g) - _loss(op.with_rate(rate - 1j * hs), v, g)
        ) / (2 * hs)
        assert abs(grads.rate.real - d_re) <= 1e-5 * scales[2] + rate_floor, (grads.rate, d_re)
        assert abs(grads.rate.imag - d_im) <= 1e-5 * scales[2] + rate_floor, (grads.rate, d_im)
    else:
        assert abs(grads.rate - d_re) <= 1e-5 * scales[2] + rate_floor, (grads.rate, d_re)

    # L is linear in v: a unit step is exact up to rounding
    gv = f64(grads.v)
    v_floor = 1e-10 * size_L
    for j in np.ndindex(*v.shape):
        e = np.zeros(v.shape, v.dtype)
        e[j] = 1.0
        d_re = (_loss(op, v + e, g) - _loss(op, v - e, g)) / 2
        want = d_re
        if np.iscomplexobj(v):
            d_im = (_loss(op, v + 1j * e, g) - _loss(op, v - 1j * e, g)) / 2
            want = complex(d_re, d_im)
        assert abs(gv[j] - want) <= 1e-10 * scales[3][j] + v_floor, ("v", j, gv[j], want)


# ------------------------------------------------------------------ ties, 2-D operands
@pytest.mark.parametrize("rate", [1.0, 0.5 + 2.0j], ids=["real", "complex"])
def test_single_tie_gives_zero_anchor_gradients(rate):
    for dt in (np.float64, np.float32):
        a = np.array([0.75], dt)
        op = lx.LaplexOperator(a, a, rate)
        grads = op.gradient(np.array([1.5], dt), np.array([-2.0], dt))
        assert grads.x[0] == 0 and grads.y[0] == 0  # sign(0) = 0
        assert grads.rate == 0  # |d| = 0
        assert grads.v[0] == -2.0  # W = [[1]]


@pytest.mark.parametrize("rate", [0.8, 1.2 - 0.7j], ids=["real", "complex"])
def test_ties_use_sign_zero(rng, rate):
    """Repeated anchors and x_i == y_j: only the non-tied pairs contribute to d/dx, d/dy."""
    x = np.array([0.0, 1.0, 1.0, 2.5, -1.0, 2.5])
    y = np.array([1.0, 2.5, 0.0, 0.0, 4.0])
    v = operand(rng, y.size, "1d", np.complex128)
    g = operand(rng, x.size, "1d", np.float64)
    grads = lx.LaplexOperator(x, y, rate).gradient(v, g)
    ref, scales = gradient_ref(x, y, rate, v, g)
    check_against_ref(grads, ref, scales, 1e-12)
    # by hand for the first row: x_0 = 0 ties with y_2 and y_3, the others are at 1, 2.5, 4 (all
    # to its right, sign = -1): dL/dx_0 = Re(conj(g_0) (-s) sum_j -W_0j v_j)
    s = complex(rate)
    by_hand = np.real(
        np.conj(g[0])
        * (-s)
        * -(np.exp(-s * 1.0) * v[0] + np.exp(-s * 2.5) * v[1] + np.exp(-s * 4.0) * v[4])
    )
    assert abs(grads.x[0] - by_hand) <= 1e-12 * (1 + abs(by_hand))


@pytest.mark.parametrize("rate", [0.6, 0.6 + 1.9j], ids=["real", "complex"])
@pytest.mark.parametrize("vdt", [np.float64, np.complex128], ids=["real-v", "complex-v"])
def test_two_dimensional_operand_sums_columns(rng, rate, vdt):
    m, n, k = 23, 19, 4
    x, y = rng.uniform(-3, 3, m), rng.uniform(-3, 3, n)
    op = lx.LaplexOperator(x, y, rate)
    V = operand(rng, n, "mat", vdt, k=k)
    G = operand(rng, m, "mat", np.complex128, k=k)
    grads = op.gradient(V, G)
    cols = [op.gradient(V[:, c].copy(), G[:, c].copy()) for c in range(k)]
    scale = np.abs(grads.x).max() + np.abs(grads.y).max() + 1
    np.testing.assert_allclose(grads.x, sum(c.x for c in cols), rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(grads.y, sum(c.y for c in cols), rtol=1e-12, atol=1e-12 * scale)
    assert abs(grads.rate - sum(c.rate for c in cols)) <= 1e-12 * (abs(grads.rate) + scale)
    assert grads.v.shape == (n, k)
    for c in range(k):
        np.testing.assert_allclose(grads.v[:, c], cols[c].v, rtol=1e-12, atol=1e-12 * scale)
    # (n, 1) operands give (n, 1) v-gradients
    g1 = op.gradient(V[:, :1], G[:, :1])
    assert g1.v.shape == (n, 1)
    np.testing.assert_allclose(g1.x, cols[0].x, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("rate", [1.0, 1.0 + 1.0j], ids=["real", "complex"])
def test_gradient_large_n_against_dense_rows(rng, rate):
    """n = 5e4: the x-gradient on 100 random rows and the rate gradient's row sums by direct
    summation."""
    m, n = 40_000, 50_000
    x = rng.uniform(0, n, m)
    y = rng.uniform(0, n, n)
    v = operand(rng, n, "1d", np.complex128)
    g = operand(rng, m, "1d", np.complex128)
    grads = lx.LaplexOperator(x, y, rate).gradient(v, g)
    rows = rng.choice(m, 100, replace=False)
    s = complex(rate)
    d = x[rows, None] - y[None, :]
    W = np.exp(-s * np.abs(d))
    want = np.real(np.conj(g[rows]) * ((-s) * (np.sign(d) * W) @ v))
    scale = np.abs(g[rows]) * (abs(s) * np.abs(W) @ np.abs(v))
    assert np.linalg.norm(grads.x[rows] - want) <= 1e-10 * np.linalg.norm(scale)
    cols = rng.choice(n, 100, replace=False)
    d = x[:, None] - y[None, cols]
    W = np.exp(-s * np.abs(d))
    want = np.real(v[cols] * (s * ((np.sign(d) * W).T @ np.conj(g))))
    scale = np.abs(v[cols]) * (abs(s) * np.abs(W).T @ np.abs(g))
    assert np.linalg.norm(grads.y[cols] - want) <= 1e-10 * np.linalg.norm(scale)
    want_v = W.conj().T @ g
    assert np.linalg.norm(grads.v[cols] - want_v) <= 1e-10 * np.linalg.norm(np.abs(W).T @ np.abs(g))


@given(data=st.data())
def test_fused_reductions_equal_their_composition_from_apply(data):
    """The CPU backend's ``gradient_reductions`` (two scans contracting as they go) against the
    same four reductions composed from ``apply`` and ``einsum``: every layout (ties, runs of equal
    anchors, the shared and square plans that take the composition), complex operands and rates,
    several columns, both precisions."""
    from laplexops.backends._base import gradient_reductions

    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    p = data.draw(problems(dtype=dtype, max_m=60, max_n=60))
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    k = data.draw(st.integers(1, 4))
    work = np.result_type(dtype, np.complex64) if data.draw(st.booleans()) else np.dtype(dtype)
    v = operand(p["rng"], p["n"], "mat", work, k=k)
    gc = operand(p["rng"], p["m"], "mat", work, k=k)
    backend, plan, side = op._backend, op._plan, op._side
    fused = backend.gradient_reductions(plan, side, p["rate"], v, gc)
    composed = gradient_reductions(backend, plan, side, p["rate"], v, gc)
    # each reduction's terms in absolute value, densely in float64: the scale of its rounding
    d = f64(p["x"])[:, None] - f64(p["y"])[None, :]
    absw = np.exp(-complex(p["rate"]).real * np.abs(d))
    av, ag = np.abs(f64(v)), np.abs(f64(gc))
    scales = (
        (ag * (absw @ av)).sum(axis=1),
        (ag * ((np.abs(d) * absw) @ av)).sum(),
        (av * (absw.T @ ag)).sum(axis=1),
        absw.T @ ag,
    )
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for got, want, scale in zip(fused, composed, scales):
        got, want = f64(got), f64(want)
        assert got.shape == want.shape
        assert np.all(np.abs(got - want) <= tol * (scale + np.abs(want).max()) + 1e-300)
