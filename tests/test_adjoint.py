"""The adjoint identity <W v, u> = <v, W^H u> (a pylops-style dot test) and the consistency of
``H``, ``T``, ``rmatvec`` and ``rmatmat`` (docs/reference.md, LaplexOperator and Accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx
from laplex_testing import FLOOR, dense_ref, f64, inner, operand, problems, rel_err


def dottest(op, v, u, tol, floor=1e-280):
    """|<W v, u> - <v, W^H u>| <= tol * ||W v|| ||u|| (Cauchy-Schwarz scale of both sides), plus
    ``floor * ||v|| ||u|| sqrt(m n)`` for results in a precision's subnormal range."""
    Wv = op @ v
    WHu = op.H @ u
    lhs = inner(Wv, u)
    rhs = inner(v, WHu)
    # the same through rmatvec / rmatmat
    rhs2 = inner(v, op.rmatvec(u) if u.ndim == 1 else op.rmatmat(u))
    scale = max(
        np.linalg.norm(f64(Wv)) * np.linalg.norm(f64(u)),
        np.linalg.norm(f64(v)) * np.linalg.norm(f64(WHu)),
    )
    m, n = op.shape
    bound = tol * scale + floor * np.linalg.norm(f64(v)) * np.linalg.norm(f64(u)) * np.sqrt(m * n)
    assert abs(lhs - rhs) <= bound, (lhs, rhs, abs(lhs - rhs), bound)
    assert abs(lhs - rhs2) <= bound, (lhs, rhs2, abs(lhs - rhs2), bound)


@given(data=st.data())
def test_dottest_float64(data):
    p = data.draw(problems(min_size=0))
    rng = p["rng"]
    kind = data.draw(st.sampled_from(["1d", "mat"]))
    vdt = data.draw(st.sampled_from([np.float64, np.complex128]))
    udt = data.draw(st.sampled_from([np.float64, np.complex128]))
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    v = operand(rng, p["n"], kind, vdt, k=2)
    u = operand(rng, p["m"], kind, udt, k=2)
    dottest(op, v, u, 1e-12)
    # the adjoint's adjoint: <W^H u, v> = <u, W v>
    dottest(op.H, u, v, 1e-12)


@given(data=st.data())
def test_dottest_float32(data):
    p = data.draw(problems(dtype=np.float32))
    rng = p["rng"]
    vdt = data.draw(st.sampled_from([np.float32, np.complex64]))
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    v = operand(rng, p["n"], "1d", vdt)
    u = operand(rng, p["m"], "1d", vdt)
    dottest(op, v, u, 1e-5, floor=FLOOR[np.dtype(np.float32)])


@given(data=st.data())
def test_transpose_is_conjugate_of_adjoint(data):
    """W^T u = conj(W^H conj(u)); W^T.T = W; (W^H)^T = conj(W)."""
    p = data.draw(problems())
    rng = p["rng"]
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    u = operand(rng, p["m"], data.draw(st.sampled_from(["1d", "mat"])), np.complex128, k=2)
    v = operand(rng, p["n"], "1d", np.complex128)
    t = op.T @ u
    assert rel_err(t, np.conj(op.H @ np.conj(u))) <= 1e-13
    assert (
        rel_err(t, np.conj(op.rmatvec(np.conj(u)) if u.ndim == 1 else op.rmatmat(np.conj(u))))
        <= 1e-13
    )
    assert rel_err(op.T.T @ v, op @ v) <= 1e-13
    assert rel_err(op.H.T @ v, np.conj(op @ np.conj(v))) <= 1e-13
    assert rel_err(op.T.H @ v, np.conj(op @ np.conj(v))) <= 1e-13
    # the transpose's rmatvec is W conj-applied: (W^T)^H w = conj(W) w
    assert rel_err(op.T.rmatvec(v), np.conj(op @ np.conj(v))) <= 1e-13


@given(data=st.data())
def test_real_rate_transpose_equals_adjoint(data):
    p = data.draw(problems(rate_kind="real"))
    rng = p["rng"]
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    u = operand(rng, p["m"], "1d", np.float64)
    a, b = op.T @ u, op.H @ u
    assert a.dtype == np.float64 and b.dtype == np.float64
    assert rel_err(a, b) <= 1e-14
    # for a real operand and real rate everything stays real
    assert (op @ operand(rng, p["n"], "1d", np.float64)).dtype == np.float64


@given(data=st.data())
def test_gram_is_hermitian_for_real_rate_and_symmetric_for_complex(data):
    p = data.draw(problems(layouts=("same",)))
    rng = p["rng"]
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    v = operand(rng, p["n"], "1d", np.complex128)
    # x == y: W is symmetric (W^T = W), Hermitian when the rate is real
    assert rel_err(op.T @ v, op @ v) <= 1e-13
    if not isinstance(p["rate"], complex):
        assert rel_err(op.H @ v, op @ v) <= 1e-13
        # and positive semidefinite: <v, W v> >= 0 up to rounding
        q = inner(v, op @ v)
        assert q.real >= -1e-12 * np.linalg.norm(v) ** 2 * p["n"]
        assert abs(q.imag) <= 1e-12 * np.linalg.norm(v) ** 2 * p["n"]


@pytest.mark.parametrize("rate", [1.0, 0.3 + 1.1j, 2.0 - 5.0j], ids=str)
def test_dense_adjoint_and_transpose(rng, rate):
    x, y = rng.uniform(-3, 3, 17), rng.uniform(-3, 3, 11)
    op = lx.LaplexOperator(x, y, rate)
    W = dense_ref(x, y, rate)
    assert rel_err(op.H.to_dense(), W.conj().T) <= 1e-13
    assert rel_err(op.adjoint().to_dense(), W.conj().T) <= 1e-13
    assert rel_err(op.T.to_dense(), W.T) <= 1e-13
    assert rel_err(op.transpose().to_dense(), W.T) <= 1e-13
    assert rel_err(op.H.H.to_dense(), W) <= 1e-13
    assert op.H.rate == np.conj(rate) and op.T.rate == rate
    assert op.H.H.rate == rate


@pytest.mark.parametrize("rate", [0.01, 1.0, 0.2 + 0.9j], ids=str)
def test_dottest_large(rng, rate):
    m, n = 60_000, 45_000
    x = rng.uniform(0, m / abs(rate), m)
    y = rng.uniform(0, m / abs(rate), n)
    op = lx.LaplexOperator(x, y, rate)
    v = operand(rng, n, "1d", np.complex128)
    u = operand(rng, m, "1d", np.complex128)
    dottest(op, v, u, 1e-12)
    V = operand(rng, n, "mat", np.float64, k=3)
    U = operand(rng, m, "mat", np.float64, k=3)
    dottest(op, V, U, 1e-12)
