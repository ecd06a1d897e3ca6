"""Products against the float64 dense reference (docs/reference.md: Definition, LaplexOperator,
Accuracy).

Relative 2-norm error: float64 <= 1e-10, float32 <= 1e-4; real and phased (complex) rates; ties,
duplicates, x == y, shared values; m != n, m = 1, n = 1, empty; 1-D, (n, 1) and (n, k) operands;
matvec, matmat, rmatvec, rmatmat, ``@``, ``H``, ``T`` and ``to_dense``; huge anchor spreads.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx
from laplex_testing import (
    FLOOR,
    TOL,
    apply_ref,
    assert_close_to_ref,
    dense_ref,
    operand,
    operand_dtypes,
    problems,
    rel_err,
    result_dtype,
    rows_ref,
    shape_kinds,
)

DTYPES = [np.float64, np.float32]


def _expected_shape(lead, v):
    return (lead,) + tuple(v.shape[1:])


# ------------------------------------------------------------------ many columns
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rate", [1.3, 0.4 - 2j])
@pytest.mark.parametrize("k", [4, 9])
def test_many_columns_match_dense_reference(rng, dtype, rate, k):
    """Operands of four columns and more: their scans run in groups of four columns (with one
    left over at k = 9), forward, adjoint and gradient, ties included."""
    m, n = 300, 257
    x, y = rng.uniform(-3.0, 3.0, m).astype(dtype), rng.uniform(-3.0, 3.0, n).astype(dtype)
    x[:40] = y[:40]  # ties
    op = lx.LaplexOperator(x, y, rate)
    V = rng.standard_normal((n, k)).astype(dtype)
    U = rng.standard_normal((m, k)).astype(dtype)
    assert_close_to_ref(op @ V, apply_ref(x, y, rate, V), dtype, V, m, n, "matmat")
    assert_close_to_ref(op.H @ U, apply_ref(y, x, np.conj(rate), U), dtype, U, n, m, "H")
    for j in (0, k - 1):  # each column as the product of that column alone
        assert_close_to_ref((op @ V)[:, j], op @ V[:, j], dtype, V[:, j], m, n, f"column {j}")


# ------------------------------------------------------------------ forward products
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_forward_product_matches_dense_reference(dtype, data):
    p = data.draw(problems(dtype=dtype, min_size=0))
    shape_kind = data.draw(shape_kinds)
    vdtype = data.draw(operand_dtypes(dtype))
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    v = operand(p["rng"], n, shape_kind, vdtype, k=data.draw(st.integers(1, 4)))
    op = lx.LaplexOperator(x, y, rate)
    ref = apply_ref(x, y, rate, v)
    want_dtype = result_dtype(op.dtype, v.dtype)

    results = {"@": op @ v}
    if shape_kind in ("1d", "col"):
        results["matvec"] = op.matvec(v)
    if shape_kind in ("col", "mat"):
        results["matmat"] = op.matmat(v)
    for name, got in results.items():
        assert isinstance(got, np.ndarray), name
        assert got.shape == _expected_shape(m, v), (name, got.shape)
        assert got.dtype == want_dtype, (name, got.dtype, want_dtype)
        assert np.all(np.isfinite(got)), name
        assert_close_to_ref(got, ref, want_dtype, v, m, n, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_adjoint_product_matches_dense_reference(dtype, data):
    p = data.draw(problems(dtype=dtype, min_size=0))
    shape_kind = data.draw(shape_kinds)
    udtype = data.draw(operand_dtypes(dtype))
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    u = operand(p["rng"], m, shape_kind, udtype, k=data.draw(st.integers(1, 4)))
    op = lx.LaplexOperator(x, y, rate)
    ref = dense_ref(x, y, rate).conj().T @ u.astype(np.complex128)
    want_dtype = result_dtype(op.dtype, u.dtype)

    results = {"H @": op.H @ u}
    if shape_kind in ("1d", "col"):
        results["rmatvec"] = op.rmatvec(u)
        results["H.matvec"] = op.H.matvec(u)
    if shape_kind in ("col", "mat"):
        results["rmatmat"] = op.rmatmat(u)
        results["adjoint().matmat"] = op.adjoint().matmat(u)
    for name, got in results.items():
        assert isinstance(got, np.ndarray), name
        assert got.shape == _expected_shape(n, u), (name, got.shape)
        assert got.dtype == want_dtype, (name, got.dtype, want_dtype)
        assert_close_to_ref(got, ref, want_dtype, u, n, m, name)


@given(data=st.data())
def test_transpose_product_matches_dense_reference(data):
    p = data.draw(problems())
    shape_kind = data.draw(shape_kinds)
    udtype = data.draw(operand_dtypes(np.float64))
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    u = operand(p["rng"], m, shape_kind, udtype)
    op = lx.LaplexOperator(x, y, rate)
    ref = dense_ref(x, y, rate).T @ u.astype(np.complex128)
    for name, t in (("T", op.T), ("transpose()", op.transpose())):
        assert isinstance(t, lx.LaplexOperator)
        assert t.shape == (n, m)
        assert t.rate == rate
        got = t @ u
        assert got.shape == _expected_shape(n, u)
        assert_close_to_ref(got, ref, got.dtype, u, n, m, name)
        # (W^T)^H = conj(W), of shape (m, n): its rmatvec takes length-n vectors
        w = operand(p["rng"], n, "1d", udtype)
        got_h = t.rmatvec(w)
        assert got_h.shape == (m,)
        ref_h = dense_ref(x, y, rate).conj() @ w.astype(np.complex128)
        assert_close_to_ref(got_h, ref_h, got_h.dtype, w, m, n, name + ".rmatvec")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_to_dense_matches_dense_reference(dtype, data):
    p = data.draw(problems(dtype=dtype, min_size=0))
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    op = lx.LaplexOperator(x, y, rate)
    ref = dense_ref(x, y, rate)
    for name, got, want in (
        ("W", op.to_dense(), ref),
        ("W^H", op.H.to_dense(), ref.conj().T),
        ("W^T", op.T.to_dense(), ref.T),
    ):
        assert isinstance(got, np.ndarray)
        assert got.shape == want.shape, name
        assert got.dtype == op.dtype, (name, got.dtype, op.dtype)
        tol = TOL[np.dtype(op.dtype)]
        floor = FLOOR[np.dtype(op.dtype)] * np.sqrt(m * n)  # float32 cannot hold 1e-48
        assert rel_err(got, want, floor) <= tol, name
        # entrywise too: every weight has modulus <= 1, ties give exactly 1 (distance 0)
        assert np.max(np.abs(got.astype(np.complex128) - want), initial=0.0) <= 10 * tol, name
    ties = np.asarray(x, np.float64)[:, None] == np.asarray(y, np.float64)[None, :]
    assert np.all(op.to_dense()[ties] == 1)


# ------------------------------------------------------------------ dtypes and operand variants
@given(data=st.data())
def test_complex_operand_with_real_rate(data):
    p = data.draw(problems(rate_kind="real"))
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    v = operand(p["rng"], n, data.draw(shape_kinds), np.complex128)
    op = lx.LaplexOperator(x, y, rate)
    assert op.dtype == np.float64
    got = op @ v
    assert got.dtype == np.complex128
    assert_close_to_ref(got, apply_ref(x, y, rate, v), np.complex128, v, m, n)
    # linearity in the real and imaginary parts
    re, im = op @ v.real.copy(), op @ v.imag.copy()
    assert np.allclose(got, re + 1j * im, rtol=1e-12, atol=1e-12 * np.abs(got).max(initial=1))


ANCHOR_DTYPES = [np.int32, np.int64, np.float32, np.float64]
OPERAND_DTYPES = [np.int32, np.int64, np.float32, np.float64, np.complex64, np.complex128]


@pytest.mark.parametrize("rate", [0.7, 0.7 + 1.3j], ids=["real", "complex"])
@pytest.mark.parametrize("adtype", ANCHOR_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("vdtype", OPERAND_DTYPES, ids=lambda d: np.dtype(d).name)
def test_result_dtypes(rng, rate, adtype, vdtype):
    m, n = 7, 5
    x = (
        rng.integers(-20, 20, m).astype(adtype)
        if np.dtype(adtype).kind == "i"
        else (rng.uniform(-3, 3, m)).astype(adtype)
    )
    y = (
        rng.integers(-20, 20, n).astype(adtype)
        if np.dtype(adtype).kind == "i"
        else (rng.uniform(-3, 3, n)).astype(adtype)
    )
    op = lx.LaplexOperator(x, y, rate)
    real = np.dtype(np.float32) if np.dtype(adtype) == np.float32 else np.dtype(np.float64)
    want_op = np.result_type(real, np.complex64) if isinstance(rate, complex) else real
    assert op.dtype == want_op
    assert op.H.dtype == want_op and op.T.dtype == want_op
    if np.dtype(vdtype).kind == "i":
        v = rng.integers(1, 9, n).astype(vdtype)
    else:
        v = operand(rng, n, "1d", vdtype)
    got = op @ v
    want = result_dtype(op.dtype, v.dtype)
    assert got.dtype == want
    assert op.matmat(v[:, None]).dtype == want
    u = (
        rng.integers(1, 9, m).astype(vdtype)
        if np.dtype(vdtype).kind == "i"
        else operand(rng, m, "1d", vdtype)
    )
    assert op.rmatvec(u).dtype == result_dtype(op.dtype, u.dtype)
    assert op.to_dense().dtype == want_op
    assert_close_to_ref(got, apply_ref(x, y, rate, v), want, v, m, n)


def test_rate_types():
    x = np.array([0.0, 1.5, 3.0])
    for given_rate in (2, 2.0, np.float64(2.0), np.float32(2.0), np.int64(2)):
        op = lx.LaplexOperator(x, x, given_rate)
        assert type(op.rate) is float and op.rate == 2.0
        assert op.dtype == np.float64
    for given_rate in (2 + 1j, np.complex128(2 + 1j), np.complex64(2 + 1j)):
        op = lx.LaplexOperator(x, x, given_rate)
        assert type(op.rate) is complex and op.rate == 2 + 1j
        assert op.dtype == np.complex128
        assert op.H.rate == 2 - 1j and op.T.rate == 2 + 1j
    op = lx.LaplexOperator(x, x, 2 + 0j)  # a complex rate stays complex
    assert type(op.rate) is complex and op.dtype == np.complex128
    assert type(lx.LaplexOperator(x, x).rate) is float and lx.LaplexOperator(x, x).rate == 1.0


def test_members():
    x = np.array([0.3, -1.0, 2.0, 2.0])
    y = np.array([1.0, 0.3])
    op = lx.LaplexOperator(x, y, 0.5)
    assert op.shape == (4, 2)
    assert op.H.shape == (2, 4) and op.T.shape == (2, 4)
    assert isinstance(op.H, lx.LaplexOperator) and isinstance(op.adjoint(), lx.LaplexOperator)
    assert isinstance(op.T, lx.LaplexOperator) and isinstance(op.transpose(), lx.LaplexOperator)
    assert isinstance(op.x, np.ndarray) and isinstance(op.y, np.ndarray)
    np.testing.assert_array_equal(op.x, x)
    np.testing.assert_array_equal(op.y, y)
    np.testing.assert_array_equal(op.H.x, y)
    np.testing.assert_array_equal(op.H.y, x)
    np.testing.assert_array_equal(op.T.x, y)
    assert lx.Gradients._fields == ("x", "y", "rate", "v")
    assert lx.LaplexOperator(x, y, 0.5, backend="numba").shape == (4, 2)


def test_weights_are_exact_at_ties_and_known_values():
    x = np.array([0.0, 1.0, 1.0, -2.0])
    y = np.array([1.0, 0.0, 3.5])
    for rate in (1.0, 0.25, 2.0 + 3.0j):
        W = lx.LaplexOperator(x, y, rate).to_dense()
        ref = dense_ref(x, y, rate)
        np.testing.assert_allclose(W, ref, rtol=1e-14, atol=0)
        v = np.array([1.0, -2.0, 0.5])
        np.testing.assert_allclose(lx.LaplexOperator(x, y, rate) @ v, ref @ v, rtol=1e-13)
    # a single pair at distance 0: weight exactly 1 (float32 and float64)
    for dt in (np.float32, np.float64):
        a = np.array([1.25], dt)
        assert (lx.LaplexOperator(a, a, 3.0) @ np.array([2.5], dt))[0] == 2.5


@pytest.mark.parametrize("m,n", [(1, 1), (1, 9), (9, 1), (1, 200), (200, 1), (3, 250)])
@pytest.mark.parametrize("rate", [1.3, 0.4 - 2.0j], ids=["real", "complex"])
def test_small_sides(rng, m, n, rate):
    x, y = rng.uniform(-4, 4, m), rng.uniform(-4, 4, n)
    op = lx.LaplexOperator(x, y, rate)
    for shape_kind in ("1d", "col", "mat"):
        v = operand(rng, n, shape_kind, np.float64)
        assert_close_to_ref(op @ v, apply_ref(x, y, rate, v), op.dtype, v, m, n)
        u = operand(rng, m, shape_kind, np.complex128)
        ref = dense_ref(x, y, rate).conj().T @ u
        assert_close_to_ref(op.H @ u, ref, np.complex128, u, n, m)


@pytest.mark.parametrize("m,n", [(0, 0), (0, 5), (6, 0)])
@pytest.mark.parametrize("rate", [1.0, 1.0 + 2.0j], ids=["real", "complex"])
def test_empty_anchors(rng, m, n, rate):
    x, y = rng.uniform(-1, 1, m), rng.uniform(-1, 1, n)
    op = lx.LaplexOperator(x, y, rate)
    assert op.shape == (m, n)
    v = operand(rng, n, "1d", np.float64)
    got = op @ v
    assert got.shape == (m,)
    assert np.all(got == 0)
    assert op.matvec(v).shape == (m,)
    V = operand(rng, n, "mat", np.float64, k=3)
    assert op.matmat(V).shape == (m, 3) and np.all(op.matmat(V) == 0)
    assert (op @ V).shape == (m, 3)
    u = operand(rng, m, "1d", np.complex128)
    assert op.rmatvec(u).shape == (n,) and np.all(op.rmatvec(u) == 0)
    assert op.rmatmat(operand(rng, m, "mat", np.float64, k=2)).shape == (n, 2)
    assert op.H.shape == (n, m) and (op.H @ u).shape == (n,)
    dense = op.to_dense()
    assert dense.shape == (m, n)
    grads = op.gradient(v, operand(rng, m, "1d", np.float64))
    assert grads.x.shape == (m,) and np.all(grads.x == 0)
    assert grads.y.shape == (n,) and np.all(grads.y == 0)
    assert grads.v.shape == (n,) and np.all(grads.v == 0)
    assert grads.rate == 0


@pytest.mark.parametrize("rate", [0.8, 0.8 - 1.7j], ids=["real", "complex"])
def test_strided_and_readonly_operands(rng, rate):
    m, n = 31, 23
    x, y = rng.uniform(-5, 5, m), rng.uniform(-5, 5, n)
    op = lx.LaplexOperator(x, y, rate)
    W = dense_ref(x, y, rate)
    big = rng.standard_normal((2 * n, 6))
    variants = {
        "step-2 rows": big[::2, 1],
        "negative stride": big[::-2, 0],
        "fortran matrix": np.asfortranarray(big[:n, :4]),
        "column slice": big[:n, ::2],
    }
    ro = rng.standard_normal(n)
    ro.flags.writeable = False
    variants["read-only"] = ro
    for name, v in variants.items():
        keep = v.copy()
        got = op @ v
        assert_close_to_ref(got, W @ v, op.dtype, v, m, n, name)
        np.testing.assert_array_equal(v, keep, err_msg=f"{name}: the operand was modified")
        np.testing.assert_array_equal(got, op @ np.ascontiguousarray(v), err_msg=name)


# ------------------------------------------------------------------ huge spreads (no overflow)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rate", [1.0, 1.0 + 4.0j, 1e-3, 3.0 - 0.5j], ids=str)
def test_far_apart_anchors_give_identity(rng, dtype, rate):
    """Anchors >= 1e3/Re(s) apart over a spread of 1e8/Re(s): every off-tie weight underflows to
    exactly 0, so W @ v picks exactly the tied entries. exp(+s*y) would overflow here."""
    a = float(np.real(rate))
    n = 3000
    # spacing between 1100/a and 1e8/(a*n), positions up to 1e8/a
    pos = np.cumsum(rng.uniform(1100.0, 2 * 1e8 / n, n)) / a
    pos = pos[pos < 1e8 / a * 1.0001]
    assert pos.size > 100
    x = rng.permutation(pos).astype(dtype)
    v = operand(rng, x.size, "1d", dtype)
    op = lx.LaplexOperator(x, x, rate)
    got = op @ v
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, v.astype(got.dtype))
    got_h = op.rmatvec(v)
    np.testing.assert_array_equal(got_h, v.astype(got_h.dtype))
    # columns offset from the rows by 500/a or more: tiny weights, still no overflow
    far = lx.LaplexOperator(x, np.sort(x)[:10] + np.asarray(600.0 / a, dtype), rate)
    out = far @ operand(rng, 10, "1d", dtype)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_clustered_huge_spread_matches_reference(dtype, data):
    """Tight clusters, centres spread over up to 1e8/|s|: no overflow, reference agreement."""
    p = data.draw(problems(dtype=dtype, layouts=("random",), max_m=30, max_n=30))
    rng, rate = p["rng"], p["rate"]
    a = float(np.real(rate))
    k = data.draw(st.integers(1, 5))
    centres = rng.uniform(-1.0, 1.0, k) * 10.0 ** data.draw(st.floats(3.0, 8.0)) / a
    width = data.draw(st.floats(0.1, 30.0)) / a
    x = (rng.choice(centres, p["m"]) + rng.uniform(-width, width, p["m"])).astype(dtype)
    y = (rng.choice(centres, p["n"]) + rng.uniform(-width, width, p["n"])).astype(dtype)
    v = operand(rng, p["n"], data.draw(shape_kinds), dtype)
    op = lx.LaplexOperator(x, y, rate)
    got = op @ v
    assert np.all(np.isfinite(got))
    assert_close_to_ref(got, apply_ref(x, y, rate, v), got.dtype, v, p["m"], p["n"])
    u = operand(rng, p["m"], "1d", dtype)
    got_h = op.rmatvec(u)
    assert np.all(np.isfinite(got_h))
    assert_close_to_ref(
        got_h, dense_ref(x, y, rate).conj().T @ u.astype(np.float64), got_h.dtype, u, p["n"], p["m"]
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rate", [1.0, 1.0 + 3.0j], ids=["real", "complex"])
def test_uniform_1e8_spread_large_n(rng, dtype, rate):
    """1e5 anchors uniform in [0, 1e8/|s|]: finite, and 200 random rows agree with direct sums."""
    n = 100_000
    scale = 1e8 / abs(rate)
    x = (rng.uniform(0, scale, n)).astype(dtype)
    y = (rng.uniform(0, scale, n)).astype(dtype)
    # plant near neighbours so that the checked rows have non-trivial interactions
    rows = rng.choice(n, 200, replace=False)
    cols = rng.choice(n, 200, replace=False)
    y[cols] = (x[rows].astype(np.float64) + rng.uniform(-3, 3, 200) / abs(rate)).astype(dtype)
    v = operand(rng, n, "1d", dtype)
    op = lx.LaplexOperator(x, y, rate)
    got = op @ v
    assert np.all(np.isfinite(got))
    ref = rows_ref(x, y, rate, v, rows)
    err = rel_err(got[rows], ref)
    assert err <= TOL[np.dtype(dtype)], err
    # the Gram layout x == y: the diagonal is exactly 1
    gram = lx.LaplexOperator(x, x, rate)
    got = gram @ v
    assert np.all(np.isfinite(got))
    assert rel_err(got[rows], rows_ref(x, x, rate, v, rows)) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rate", [1.0, 0.05, 0.7 + 2.5j, 1e-3 - 3e-3j], ids=str)
def test_large_random_rows_against_direct_summation(rng, dtype, rate):
    """m = 1.2e5, n = 1e5 random anchors about one per 1/|s|: 200 random rows, and the adjoint."""
    m, n = 120_000, 100_000
    L = n / abs(rate)
    x = rng.uniform(-L / 2, L / 2, m).astype(dtype)
    y = rng.uniform(-L / 2, L / 2, n).astype(dtype)
    V = operand(rng, n, "mat", dtype, k=2)
    op = lx.LaplexOperator(x, y, rate)
    got = op @ V
    assert got.shape == (m, 2) and got.dtype == result_dtype(op.dtype, dtype)
    rows = rng.choice(m, 200, replace=False)
    err = rel_err(got[rows], rows_ref(x, y, rate, V, rows))
    assert err <= TOL[np.dtype(dtype)], err
    u = operand(rng, m, "1d", dtype)
    got_h = op.rmatvec(u)
    cols = rng.choice(n, 200, replace=False)
    ref_h = rows_ref(y, x, np.conj(rate), u, cols)
    err = rel_err(got_h[cols], ref_h)
    assert err <= TOL[np.dtype(dtype)], err


@pytest.mark.parametrize("rate", [0.5, 2.0])
def test_sorted_gram_against_celerite2(rng, rate):
    """An independent O(n) implementation: celerite2's RealTerm / ComplexTerm ``dot`` (sorted t)."""
    terms = pytest.importorskip("celerite2.terms")
    n = 50_000
    t = np.sort(rng.uniform(0, n / rate, n))
    v = rng.standard_normal(n)
    zeros = np.zeros(n)
    ours = lx.LaplexOperator(t, t, rate) @ v
    theirs = terms.RealTerm(a=1.0, c=rate).dot(t, zeros, v)
    assert rel_err(ours, theirs) <= 1e-10
    w = 3.0 * rate
    ours = lx.LaplexOperator(t, t, complex(rate, w)) @ v
    # Re W = exp(-a|d|) cos(w|d|): celerite2's ComplexTerm(a=1, b=0, c=a, d=w)
    theirs = terms.ComplexTerm(a=1.0, b=0.0, c=rate, d=w).dot(t, zeros, v)
    assert rel_err(ours.real, theirs) <= 1e-10


@pytest.mark.parametrize("rate,rows", [(1.0, 200), (0.4 + 1.1j, 40)], ids=["real", "complex"])
def test_float32_at_one_million(rng, rate, rows):
    """docs/reference.md, Accuracy: float32 stays within 1e-4 of the float64 direct sum at
    m = n = 1e6."""
    n = 1_000_000
    L = n / abs(rate)
    x = rng.uniform(0, L, n).astype(np.float32)
    y = rng.uniform(0, L, n).astype(np.float32)
    v = operand(rng, n, "1d", np.float32)
    got = lx.LaplexOperator(x, y, rate) @ v
    assert got.dtype == (np.complex64 if isinstance(rate, complex) else np.float32)
    pick = rng.choice(n, rows, replace=False)
    err = rel_err(got[pick], rows_ref(x, y, rate, v[:, None], pick)[:, 0])
    assert err <= 1e-4, err
