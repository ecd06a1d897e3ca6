"""SciPy interoperability (docs/reference.md, LaplexOperator): the operator satisfies the
LinearOperator protocol, so ``cg``, ``gmres``, ``lsqr`` and ``eigsh`` accept it directly, and
``aslinearoperator()`` wraps it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla

import laplexops as lx
from laplex_testing import dense_ref, operand, rel_err


def _spread_anchors(rng, n, rate, gap=(0.4, 1.6)):
    """Distinct anchors about one per 1/rate, shuffled: a well-conditioned Laplace Gram matrix."""
    return rng.permutation(np.cumsum(rng.uniform(*gap, n)) / rate)


@pytest.mark.parametrize("wrap", ["direct", "aslinearoperator", "scipy-aslinearoperator"])
def test_cg_on_gram(rng, wrap):
    n, rate = 400, rng.uniform(0.5, 2.0)
    x = _spread_anchors(rng, n, rate)
    op = lx.LaplexOperator(x, x, rate)
    A = {
        "direct": op,
        "aslinearoperator": op.aslinearoperator(),
        "scipy-aslinearoperator": sla.aslinearoperator(op),
    }[wrap]
    b = rng.standard_normal(n)
    z, info = sla.cg(A, b, rtol=1e-12, maxiter=2000)
    assert info == 0
    W = dense_ref(x, x, rate)
    assert rel_err(z, np.linalg.solve(W, b)) <= 1e-8
    assert np.linalg.norm(W @ z - b) <= 1e-10 * np.linalg.norm(b)


def test_cg_with_noise_term(rng):
    """Gram + noise via SciPy operator arithmetic, anchors with ties (PSD Gram + shift is SPD)."""
    n, rate, noise = 300, 0.7, 0.1
    x = rng.choice(_spread_anchors(rng, n // 2, rate), n)
    op = lx.LaplexOperator(x, x, rate)
    A = op.aslinearoperator() + noise * sla.aslinearoperator(np.eye(n))
    b = rng.standard_normal(n)
    z, info = sla.cg(A, b, rtol=1e-12, maxiter=3000)
    assert info == 0
    dense = dense_ref(x, x, rate) + noise * np.eye(n)
    assert rel_err(z, np.linalg.solve(dense, b)) <= 1e-8


def test_gmres_direct_on_gram(rng):
    n, rate = 300, 1.3
    x = _spread_anchors(rng, n, rate)
    op = lx.LaplexOperator(x, x, rate)
    b = rng.standard_normal(n)
    z, info = sla.gmres(op, b, rtol=1e-12, restart=n, maxiter=5)
    assert info == 0
    assert rel_err(z, np.linalg.solve(dense_ref(x, x, rate), b)) <= 1e-8


@pytest.mark.parametrize("w", [1.0, -3.0])
def test_gmres_phased_gram_plus_shift(rng, w):
    """x == y with a complex rate: W is complex symmetric but not Hermitian; Re(W) is PSD (a
    celerite kernel), so W + 0.5 I is invertible."""
    n, a = 250, 0.9
    rate = complex(a, w * a)
    x = _spread_anchors(rng, n, a)
    op = lx.LaplexOperator(x, x, rate)
    A = op.aslinearoperator() + 0.5 * sla.aslinearoperator(np.eye(n, dtype=np.complex128))
    b = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    z, info = sla.gmres(A, b, rtol=1e-12, restart=n, maxiter=5)
    assert info == 0
    dense = dense_ref(x, x, rate) + 0.5 * np.eye(n)
    assert rel_err(z, np.linalg.solve(dense, b)) <= 1e-8


def test_gmres_nonsymmetric_real(rng):
    """x != y, m == n: a nonsymmetric real operator, shifted."""
    n, rate = 200, 1.0
    x = _spread_anchors(rng, n, rate)
    y = x + rng.uniform(-0.2, 0.2, n)
    op = lx.LaplexOperator(x, y, rate)
    A = op.aslinearoperator() + 2.0 * sla.aslinearoperator(np.eye(n))
    b = rng.standard_normal(n)
    z, info = sla.gmres(A, b, rtol=1e-12, restart=n, maxiter=5)
    assert info == 0
    dense = dense_ref(x, y, rate) + 2.0 * np.eye(n)
    assert np.linalg.cond(dense) < 1e8
    assert rel_err(z, np.linalg.solve(dense, b)) <= 1e-7


@pytest.mark.parametrize("rate", [1.0, 1.0 + 0.5j], ids=["real", "complex"])
@pytest.mark.parametrize("wrap", ["direct", "aslinearoperator"])
def test_lsqr_rectangular(rng, rate, wrap):
    """m = 3n rows, two of them near each of the n well-separated columns: full column rank."""
    n = 80
    a = float(np.real(rate))
    y = np.cumsum(rng.uniform(1.5, 2.5, n)) / a
    x = rng.permutation(
        np.concatenate(
            [
                y + rng.uniform(-0.3, 0.3, n) / a,
                y + rng.uniform(-0.3, 0.3, n) / a,
                rng.uniform(y[0] - 1 / a, y[-1] + 1 / a, n),
            ]
        )
    )
    op = lx.LaplexOperator(x, y, rate)
    A = op if wrap == "direct" else op.aslinearoperator()
    b = operand(rng, 3 * n, "1d", np.complex128 if isinstance(rate, complex) else np.float64)
    result = sla.lsqr(A, b, atol=1e-15, btol=1e-15, iter_lim=5000)
    z, istop = result[0], result[1]
    assert istop in (1, 2, 4, 5), istop
    W = dense_ref(x, y, rate)
    want = np.linalg.lstsq(W, b, rcond=None)[0]
    assert np.linalg.cond(W) < 1e6
    assert rel_err(z, want) <= 1e-7


@pytest.mark.parametrize("wrap", ["direct", "aslinearoperator"])
def test_eigsh_largest_eigenvalues(rng, wrap):
    n, rate = 300, 0.3
    x = rng.uniform(0, n / rate / 3, n)
    op = lx.LaplexOperator(x, x, rate)
    A = op if wrap == "direct" else op.aslinearoperator()
    vals = np.sort(sla.eigsh(A, k=6, which="LA", tol=1e-13, return_eigenvectors=False))
    want = np.linalg.eigvalsh(dense_ref(x, x, rate))[-6:]
    np.testing.assert_allclose(vals, want, rtol=1e-9)


def test_svds_largest_singular_values(rng):
    m, n, rate = 150, 90, 0.5 + 0.25j
    x, y = rng.uniform(0, 40, m), rng.uniform(0, 40, n)
    op = lx.LaplexOperator(x, y, rate)
    s = np.sort(sla.svds(op.aslinearoperator(), k=4, tol=1e-13, return_singular_vectors=False))
    want = np.linalg.svd(dense_ref(x, y, rate), compute_uv=False)[:4][::-1]
    np.testing.assert_allclose(s, want, rtol=1e-9)


@pytest.mark.parametrize("rate", [0.9, 0.9 - 2.0j], ids=["real", "complex"])
def test_aslinearoperator_agrees(rng, rate):
    m, n = 41, 29
    x, y = rng.uniform(-5, 5, m), rng.uniform(-5, 5, n)
    op = lx.LaplexOperator(x, y, rate)
    L = op.aslinearoperator()
    assert isinstance(L, sla.LinearOperator)
    assert L.shape == (m, n)
    assert np.dtype(L.dtype) == op.dtype
    v = operand(rng, n, "1d", np.float64)
    u = operand(rng, m, "1d", np.complex128)
    V = operand(rng, n, "mat", np.float64, k=3)
    U = operand(rng, m, "mat", np.complex128, k=3)
    W = dense_ref(x, y, rate)
    assert rel_err(L.matvec(v), W @ v) <= 1e-12
    assert rel_err(L @ v, W @ v) <= 1e-12
    assert rel_err(L.rmatvec(u), W.conj().T @ u) <= 1e-12
    assert rel_err(L.matmat(V), W @ V) <= 1e-12
    assert rel_err(L.rmatmat(U), W.conj().T @ U) <= 1e-12
    assert rel_err(L.H @ u, W.conj().T @ u) <= 1e-12
    assert rel_err(L.T @ u, W.T @ u) <= 1e-12
    # and the protocol members of the operator itself
    assert op.shape == (m, n) and np.dtype(op.dtype) == np.dtype(L.dtype)
    S = sla.aslinearoperator(op)
    assert rel_err(S.matvec(v), W @ v) <= 1e-12
    assert rel_err(S.rmatvec(u), W.conj().T @ u) <= 1e-12
