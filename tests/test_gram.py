"""``LaplexGram``: products, solve, log-determinant, likelihood and its gradients against dense
float64 NumPy; finite differences (one-sided at ties); samples' covariance; singular and bad input;
float32; SciPy's solvers; celerite2."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse.linalg as sla
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx

LAYOUTS = ("uniform", "ties", "clustered", "wide")


def make_gram_problem(rng, n, layout, rate=None, noise_zeros=False):
    """Anchors of a layout, positive rate, weights (any sign) and noise (> 0 unless
    ``noise_zeros``, where anchors without ties get noise 0 now and then)."""
    rate = float(rng.uniform(0.2, 3.0)) if rate is None else rate
    if layout == "uniform":
        a = rng.uniform(-3.0, 3.0, n)
    elif layout == "ties":
        a = rng.choice(rng.uniform(-2.0, 2.0, max(1, n // 3)), n)
    elif layout == "clustered":
        a = rng.uniform(-1e-6, 1e-6, n) + rng.choice([-1.0, 0.0, 2.0], n)
    else:  # spread 1e8 / rate
        a = rng.uniform(-0.5e8, 0.5e8, n) / rate
    w = rng.uniform(0.3, 1.7, n) * rng.choice([-1.0, 1.0], n)
    u = rng.uniform(0.01, 0.5, n)
    if noise_zeros:
        counts = {v: c for v, c in zip(*np.unique(a, return_counts=True))}
        lone = np.array([counts[v] == 1 for v in a])
        u[lone & (rng.uniform(size=n) < 0.3)] = 0.0
    return a, rate, w, u


def dense_sigma(a, rate, w, u):
    K = np.real(np.exp(-rate * np.abs(a[:, None] - a[None, :])))
    return w[:, None] * K * w[None, :] + np.diag(u)


def dense_nll(S, X, mean):
    R = X - mean
    sign, logdet = np.linalg.slogdet(S)
    assert sign > 0
    quad = np.einsum("bi,bi->b", R, np.linalg.solve(S, R.T).T)
    return 0.5 * (logdet + quad.mean() + S.shape[0] * np.log(2 * np.pi))


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 120),
    layout=st.sampled_from(LAYOUTS),
    k=st.integers(1, 3),
    noise_zeros=st.booleans(),
)
def test_against_dense(seed, n, layout, k, noise_zeros):
    rng = np.random.default_rng(seed)
    a, rate, w, u = make_gram_problem(rng, n, layout, noise_zeros=noise_zeros)
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    S = dense_sigma(a, rate, w, u)
    B = rng.standard_normal((n, k))
    scale = np.linalg.norm(S, 2) * np.linalg.norm(B)
    assert np.linalg.norm(G @ B - S @ B) <= 1e-12 * scale
    # relative accuracy 1e-9, loosened where Σ's condition number makes the dense reference
    # itself uncertain (clustered anchors without noise)
    tol = max(1e-9, 1e-15 * np.linalg.cond(S))
    want = np.linalg.solve(S, B)
    assert np.linalg.norm(G.solve(B) - want) <= tol * np.linalg.norm(want)
    sign, logdet = np.linalg.slogdet(S)
    assert abs(G.logdet() - logdet) <= tol * max(1.0, abs(logdet))
    X = rng.standard_normal((k, n))
    mean = rng.standard_normal(n)
    want = dense_nll(S, X, mean)
    assert abs(G.nll(X, mean) - want) <= tol * max(1.0, abs(want))


def test_large_against_dense(rng):
    n = 2000
    a, rate, w, u = make_gram_problem(rng, n, "ties")
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    S = dense_sigma(a, rate, w, u)
    b = rng.standard_normal(n)
    want = np.linalg.solve(S, b)
    assert np.linalg.norm(G.solve(b) - want) <= 1e-9 * np.linalg.norm(want)
    assert np.isclose(G.logdet(), np.linalg.slogdet(S)[1], rtol=1e-10, atol=0)
    # LDLᵀ pivots against NumPy's Cholesky of the sorted matrix
    order = np.argsort(a, kind="stable")
    L = np.linalg.cholesky(S[np.ix_(order, order)])
    assert np.isclose(2 * np.log(np.diag(L)).sum(), G.logdet(), rtol=1e-10)


def one_sided(f, h):
    """Second-order right and left difference quotients of ``f`` at 0 (central differences
    straddle the kink of ``|a_i - a_j|`` at a tie and are only first-order there)."""
    f0 = f(0.0)
    right = (-3 * f0 + 4 * f(h) - f(2 * h)) / (2 * h)
    left = (3 * f0 - 4 * f(-h) + f(-2 * h)) / (2 * h)
    return right, left


@pytest.mark.parametrize("phased", [False, True], ids=["real", "phased"])
@pytest.mark.parametrize("layout", ["uniform", "ties"])
@pytest.mark.parametrize("batch", [1, 6])
def test_gradient_finite_differences(rng, layout, batch, phased):
    """Every field of the gradient (the rate's real and imaginary parts for a phased Gram)."""
    n = 40
    a, rate, w, u = make_gram_problem(rng, n, layout)
    rate = complex(rate, rng.uniform(0.5, 4.0)) if phased else rate
    X = rng.standard_normal((batch, n))
    mean = rng.standard_normal(n)
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    value, g = G.nll_and_gradient(X, mean)
    assert isinstance(g, lx.GramGradients) and np.isclose(value, G.nll(X, mean), rtol=1e-13)
    assert isinstance(g.rate, complex if phased else float)
    h = 1e-5

    def check(got, f, what):
        right, left = one_sided(f, h)
        want = 0.5 * (right + left)
        assert abs(got - want) <= 1e-5 * (1.0 + abs(right) + abs(left)), (what, got, want)

    check(np.real(g.rate), lambda e: G.with_params(rate=rate + e).nll(X, mean), "rate")
    if phased:
        check(g.rate.imag, lambda e: G.with_params(rate=rate + 1j * e).nll(X, mean), "omega")
    # an anchor with another within (0, 2h] would put a kink of |a_i - a_j| inside a one-sided
    # quotient's steps (ties, at distance 0, are what the one-sided quotients are for)
    gaps = np.abs(a[:, None] - a[None, :])
    smooth = ~((gaps > 0) & (gaps <= 2 * h)).any(axis=1)
    for i in rng.choice(n, 8, replace=False):
        e_i = np.zeros(n)
        e_i[i] = 1.0
        if smooth[i]:
            check(g.a[i], lambda e, e_i=e_i: G.with_anchors(a + e * e_i).nll(X, mean), f"a[{i}]")
        check(g.weights[i], lambda e, e_i=e_i: G.with_params(weights=w + e * e_i).nll(X, mean), "w")
        check(g.noise[i], lambda e, e_i=e_i: G.with_params(noise=u + e * e_i).nll(X, mean), "u")
        check(g.mean[i], lambda e, e_i=e_i: G.nll(X, mean + e * e_i), "mean")


def test_gradient_against_dense_formula(rng):
    """``d nll / d Σ = (Σ⁻¹ - mean_b α_b α_bᵀ) / 2`` (α_b = Σ⁻¹ (x_b - mean)), chained densely."""
    n, batch = 60, 9
    a, rate, w, u = make_gram_problem(rng, n, "uniform")
    X = rng.standard_normal((batch, n))
    S = dense_sigma(a, rate, w, u)
    inv = np.linalg.inv(S)
    alpha = np.linalg.solve(S, X.T)
    dS = 0.5 * (inv - alpha @ alpha.T / batch)
    d = a[:, None] - a[None, :]
    K = np.exp(-rate * np.abs(d))
    WKW = w[:, None] * K * w[None, :]
    g = lx.LaplexGram(a, rate=rate, weights=w, noise=u).nll_gradient(X)
    assert np.allclose(g.rate, np.sum(dS * WKW * -np.abs(d)), rtol=1e-9)
    assert np.allclose(g.noise, np.diag(dS), rtol=1e-9, atol=1e-12)
    assert np.allclose(g.weights, 2 * (dS * K * w[None, :]).sum(axis=1), rtol=1e-9, atol=1e-12)
    assert np.allclose(g.a, 2 * (dS * WKW * -rate * np.sign(d)).sum(axis=1), rtol=1e-8, atol=1e-10)
    assert np.allclose(g.mean, -alpha.sum(axis=1) / batch, rtol=1e-9, atol=1e-12)


def test_scalar_parameters_get_scalar_gradients(rng):
    n = 30
    a = rng.uniform(0, 4, n)
    X = rng.standard_normal((2, n))
    g = lx.LaplexGram(a, rate=0.7, weights=1.3, noise=0.2).nll_gradient(X)
    per = lx.LaplexGram(a, rate=0.7, weights=np.full(n, 1.3), noise=np.full(n, 0.2)).nll_gradient(X)
    assert type(g.weights) is float and type(g.noise) is float
    assert np.isclose(g.weights, per.weights.sum()) and np.isclose(g.noise, per.noise.sum())
    assert np.array_equal(g.a, per.a)


def test_sample_covariance(rng):
    n = 40
    a, rate, w, u = make_gram_problem(rng, n, "ties")
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    seed = int(rng.integers(2**31))
    draws = G.sample(200_000, seed=seed)
    assert draws.shape == (200_000, n) and draws.dtype == np.float64
    S = dense_sigma(a, rate, w, u)
    d = np.sqrt(np.diag(S))
    empirical = (draws.T @ draws) / draws.shape[0]
    err = np.abs(empirical / np.outer(d, d) - S / np.outer(d, d)).max()
    assert err < 0.02
    assert np.array_equal(G.sample(3, seed=seed), G.sample(3, seed=seed))
    assert G.sample(0).shape == (0, n)


def test_ties_without_noise_are_exact(rng):
    """Repeated anchors with noise elsewhere: Σ is singular only where a tie has no noise."""
    a = np.array([0.0, 1.0, 1.0, 2.5, 1.0])
    u = np.array([0.0, 0.3, 0.0, 0.0, 0.2])
    G = lx.LaplexGram(a, rate=1.1, weights=[1.0, 2.0, 0.5, 1.0, 1.5], noise=u)
    S = G.to_dense()
    b = rng.standard_normal(5)
    assert np.allclose(G.solve(b), np.linalg.solve(S, b), rtol=1e-10)
    assert np.isclose(G.logdet(), np.linalg.slogdet(S)[1], rtol=1e-12)


@pytest.mark.parametrize(
    ("a", "w", "u", "cause"),
    [
        ([0.0, 1.0, 1.0], 1.0, 0.0, "anchors 1 and 2 are equal"),
        ([2.0, 1.0, 2.0], 1.0, [0.0, 0.1, 0.0], "anchors 0 and 2 are equal"),
        ([0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [0.1, 0.0, 0.1], "weights[1] and noise[1] are both 0"),
    ],
)
def test_singular_raises(a, w, u, cause):
    G = lx.LaplexGram(np.array(a), weights=w, noise=u)
    for call in (G.logdet, lambda: G.solve(np.ones(3)), lambda: G.nll(np.ones(3)), G.sample):
        with pytest.raises(np.linalg.LinAlgError, match=re.escape(cause)):
            call()
    assert np.allclose(G @ np.ones(3), G.to_dense() @ np.ones(3))  # products still work


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(noise=-0.1), ValueError, "noise must be >= 0"),
        (dict(noise=[0.1, np.nan, 0.1]), ValueError, "noise must be finite"),
        (dict(weights=np.inf), ValueError, "weights must be finite"),
        (dict(weights=[1.0, 2.0]), ValueError, "leading dimension 3"),
        (dict(weights=[1j, 1.0, 1.0]), TypeError, "weights must be real"),
        (dict(rate=0.0), ValueError, "rate must be > 0"),
        (dict(rate=np.nan), ValueError, "finite"),
        (dict(rate=-1.0 + 1.0j), ValueError, "rate must be > 0"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        lx.LaplexGram(np.array([0.0, 1.0, 2.0]), **kwargs)


def test_bad_data():
    G = lx.LaplexGram(np.array([0.0, 1.0, 2.0]), noise=0.1)
    for bad in (np.nan, np.inf, -np.inf):
        X = np.array([[0.0, 1.0, 2.0], [0.0, bad, 1.0]])
        for call in (G.nll, G.nll_gradient, G.nll_and_gradient):
            with pytest.raises(ValueError, match="X must be finite"):
                call(X)
    with pytest.raises(ValueError, match="shape"):
        G.nll(np.ones((2, 4)))
    with pytest.raises(ValueError, match="no rows"):
        G.nll_gradient(np.ones((0, 3)))
    with pytest.raises(ValueError, match="mean must be finite"):
        G.nll(np.ones(3), mean=np.array([0.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="b must be finite"):
        G.solve(np.array([1.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="k must be"):
        G.sample(-1)
    with pytest.raises(ValueError, match="anchors must be finite"):
        lx.LaplexGram(np.array([0.0, np.inf]))


def test_float32_in_float64(rng):
    """float32 data: the filter runs in float64, so the likelihood equals float64's on the same
    values to rounding (accumulated in float64), and the outputs are float32."""
    n = 100_000
    cases = {
        "ties": (np.round(rng.uniform(0, 1000, n)), 1.0, 0.1),
        "small noise": (rng.uniform(0, 1000, n), 1.0, 1e-5),
        "large rate": (rng.uniform(0, 1000, n), 1e4, 0.1),
        "small rate": (rng.uniform(0, 1000, n), 1e-4, 0.1),
    }
    for name, (a, rate, u) in cases.items():
        a32 = a.astype(np.float32)
        X = rng.standard_normal((2, n)).astype(np.float32)
        G32 = lx.LaplexGram(a32, rate=rate, noise=u)
        G64 = lx.LaplexGram(a32.astype(np.float64), rate=rate, noise=u)
        v32, v64 = G32.nll(X), G64.nll(X.astype(np.float64))
        assert abs(v32 - v64) <= 1e-6 * abs(v64), name
        g = G32.nll_gradient(X)
        assert g.a.dtype == np.float32 and np.all(np.isfinite(g.a)), name
        assert G32.solve(X[0]).dtype == np.float32


def test_scipy_solvers(rng):
    n = 300
    a, rate, w, u = make_gram_problem(rng, n, "uniform")
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u + 0.5)
    b = rng.standard_normal(n)
    x, info = sla.cg(G, b, rtol=1e-12, maxiter=2000)
    assert info == 0 and np.allclose(x, G.solve(b), rtol=1e-8, atol=1e-10)
    # MINRES stops on its residual relative to |G| |x| (scipy's test), which leaves up to ~4e-10
    # of |b| here, as it does on the dense matrix: compare residuals and errors in norm
    x, info = sla.minres(G.aslinearoperator(), b, rtol=1e-12, maxiter=2000)
    assert info == 0
    assert np.linalg.norm(G @ x - b) <= 1e-8 * np.linalg.norm(b)
    assert np.linalg.norm(x - G.solve(b)) <= 1e-6 * np.linalg.norm(x)


def test_celerite2_agrees(rng):
    celerite2 = pytest.importorskip("celerite2")
    n = 2000
    t = np.sort(rng.uniform(0, 200, n))
    y = rng.standard_normal(n)
    gp = celerite2.GaussianProcess(celerite2.terms.RealTerm(a=1.0, c=1.3))
    gp.compute(t, diag=0.1)
    G = lx.LaplexGram(t, rate=1.3, noise=0.1)
    assert np.isclose(G.nll(y), -gp.log_likelihood(y), rtol=1e-10, atol=0)


def test_plans_are_shared_and_repaired(rng):
    n = 500
    a, rate, w, u = make_gram_problem(rng, n, "uniform")
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    X = rng.standard_normal((3, n))
    G.nll(X)
    H = G.with_params(rate=2 * rate, noise=0.5)
    assert H._op._cell is G._op._cell and H._op._cell.plan is not None
    fresh = lx.LaplexGram(a, rate=2 * rate, weights=w, noise=0.5)
    assert H.nll(X) == fresh.nll(X)
    moved = a + rng.normal(0, 1e-3, n)
    step = G.with_anchors(moved)
    assert np.array_equal(
        step.nll_gradient(X).a, lx.LaplexGram(moved, rate, w, u).nll_gradient(X).a
    )


def test_repeatable_and_empty(rng):
    n = 3000
    a, rate, w, u = make_gram_problem(rng, n, "ties")
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    X = rng.standard_normal((9, n))
    g1, g2 = G.nll_gradient(X), G.nll_gradient(X)
    for x, y in zip(g1, g2):
        assert np.array_equal(x, y)
    E = lx.LaplexGram(np.empty(0))
    assert E.shape == (0, 0) and E.logdet() == 0.0
    assert E.solve(np.empty(0)).shape == (0,)
    assert E.nll(np.empty((2, 0))) == 0.0


# ---------------------------------------------------------------------- the phased Gram
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 80),
    layout=st.sampled_from(LAYOUTS),
    noise_zeros=st.booleans(),
)
def test_phased_against_dense(seed, n, layout, noise_zeros):
    """``K = Re exp(-s |d|) = exp(-a |d|) cos(ω d)``: products, solve, logdet, nll."""
    rng = np.random.default_rng(seed)
    a, rate, w, u = make_gram_problem(rng, n, layout, noise_zeros=noise_zeros)
    rate = complex(rate, rng.uniform(-5.0, 5.0) * rate)
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    S = dense_sigma(a, rate, w, u)
    assert G.dtype == np.float64 and G.rate == rate
    B = rng.standard_normal((n, 2))
    assert np.linalg.norm(G @ B - S @ B) <= 1e-12 * np.linalg.norm(S, 2) * np.linalg.norm(B)
    assert np.allclose(G.to_dense(), S, rtol=0, atol=1e-14)
    tol = max(1e-9, 1e-15 * np.linalg.cond(S))
    want = np.linalg.solve(S, B)
    assert np.linalg.norm(G.solve(B) - want) <= tol * np.linalg.norm(want)
    logdet = np.linalg.slogdet(S)[1]
    assert abs(G.logdet() - logdet) <= tol * max(1.0, abs(logdet))
    X = rng.standard_normal((2, n))
    mean = rng.standard_normal(n)
    want = dense_nll(S, X, mean)
    assert abs(G.nll(X, mean) - want) <= tol * max(1.0, abs(want))


def test_phased_against_celerite2(rng):
    """celerite2's ``ComplexTerm(a=1, b=0, c=a, d=ω)`` is the kernel ``exp(-a τ) cos(ω τ)``."""
    celerite2 = pytest.importorskip("celerite2")
    n = 2000
    t = np.sort(rng.uniform(0, 200, n))
    y = rng.standard_normal(n)
    for a, omega in ((1.3, 0.7), (0.2, 5.0), (2.0, 0.01)):
        gp = celerite2.GaussianProcess(celerite2.terms.ComplexTerm(a=1.0, b=0.0, c=a, d=omega))
        gp.compute(t, diag=0.1)
        G = lx.LaplexGram(t, rate=complex(a, omega), noise=0.1)
        assert np.isclose(G.nll(y), -gp.log_likelihood(y), rtol=1e-10, atol=0), (a, omega)


def test_phased_samples_products_and_errors(rng):
    n = 30
    a, rate, w, u = make_gram_problem(rng, n, "ties")
    rate = complex(rate, 2.0)
    G = lx.LaplexGram(a, rate=rate, weights=w, noise=u)
    S = dense_sigma(a, rate, w, u)
    draws = G.sample(200_000, seed=int(rng.integers(2**31)))
    d = np.sqrt(np.diag(S))
    assert np.abs((draws.T @ draws / draws.shape[0] - S) / np.outer(d, d)).max() < 0.02
    v = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    assert np.allclose(G @ v, S @ v) and np.allclose(G.solve(v), np.linalg.solve(S, v))
    with pytest.raises(np.linalg.LinAlgError, match="anchors 1 and 2 are equal"):
        lx.LaplexGram(np.array([0.0, 1.0, 1.0]), rate=1 + 3j).logdet()
    H = G.with_params(rate=rate.real)  # back to the scalar filter, the plan kept
    assert isinstance(H.rate, float) and np.isclose(H.logdet(), np.linalg.slogdet(
        dense_sigma(a, rate.real, w, u))[1])  # fmt: skip


def test_phased_gradient_against_dense_formula(rng):
    n, batch = 40, 6
    a, rate, w, u = make_gram_problem(rng, n, "uniform")
    rate = complex(rate, 1.7)
    X = rng.standard_normal((batch, n))
    S = dense_sigma(a, rate, w, u)
    alpha = np.linalg.solve(S, X.T)
    dS = 0.5 * (np.linalg.inv(S) - alpha @ alpha.T / batch)
    d = a[:, None] - a[None, :]
    decay = np.exp(-rate.real * np.abs(d))
    WW = w[:, None] * w[None, :]
    dK_da = -np.abs(d) * decay * np.cos(rate.imag * d)
    dK_dw = -np.abs(d) * decay * np.sin(rate.imag * np.abs(d))
    g = lx.LaplexGram(a, rate=rate, weights=w, noise=u).nll_gradient(X)
    assert np.isclose(g.rate.real, np.sum(dS * WW * dK_da), rtol=1e-8)
    assert np.isclose(g.rate.imag, np.sum(dS * WW * dK_dw), rtol=1e-8)
    K = decay * np.cos(rate.imag * d)
    assert np.allclose(g.weights, 2 * (dS * K * w[None, :]).sum(axis=1), rtol=1e-8, atol=1e-11)
    assert np.allclose(g.noise, np.diag(dS), rtol=1e-8, atol=1e-12)
    # d K / d a_i = -sign(d) (a cos(ω d) + ω sin(ω |d|)) e^{-a|d|}
    dK_dx = -np.sign(d) * decay * (rate.real * np.cos(rate.imag * d)
                                   + rate.imag * np.sin(rate.imag * np.abs(d)))  # fmt: skip
    assert np.allclose(g.a, 2 * (dS * WW * dK_dx).sum(axis=1), rtol=1e-7, atol=1e-9)


def test_parameters_in_the_anchors_namespace(rng):
    xp = pytest.importorskip("array_api_strict")
    a = xp.asarray(rng.uniform(0.0, 3.0, 5))
    G = lx.LaplexGram(a, rate=1.5, weights=xp.asarray(rng.uniform(0.5, 1.5, 5)), noise=0.2)
    for value in (G.weights, G.noise, G.a):
        assert isinstance(value, type(a)) and value.shape == (5,)
    b = xp.asarray(rng.standard_normal(5))
    x = G.solve(b)
    assert isinstance(x, type(a))
    assert np.allclose(np.asarray(G @ x), np.asarray(b))
    g = G.nll_gradient(xp.reshape(b, (1, 5)))
    assert isinstance(g.a, type(a)) and isinstance(g.weights, type(a)) and type(g.noise) is float


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_a_batch_is_its_rows(rng, layout, rate_kind):
    """A batch of nine rows (the scalar filter's mean pass runs two groups of four columns side by
    side and one alone) gives the mean of the rows' likelihoods and gradients, each row on its
    own (the recursion's fused one-column pass); a solve of nine columns, their solves one by
    one. Unsorted anchors, a mean."""
    n = 300
    a, rate, w, u = make_gram_problem(rng, n, layout)
    rate = rate if rate_kind == "real" else complex(rate, 2.0)
    X = rng.standard_normal((9, n))
    mean = rng.standard_normal(n)
    G = lx.LaplexGram(a, rate, w, u)
    value, grads = G.nll_and_gradient(X, mean)
    rows = [lx.LaplexGram(a, rate, w, u).nll_and_gradient(x, mean) for x in X]
    assert value == pytest.approx(np.mean([v for v, _ in rows]), rel=1e-12)
    for field in grads._fields:
        want = np.mean([np.asarray(getattr(g, field)) for _, g in rows], axis=0)
        got = np.asarray(getattr(grads, field))
        assert np.max(np.abs(got - want)) <= 1e-10 * max(np.max(np.abs(want)), 1.0), field
    assert G.nll(X, mean) == pytest.approx(value, rel=1e-12)
    B = X.T
    want = np.stack([G.solve(b) for b in X], axis=1)
    assert np.max(np.abs(G.solve(B) - want)) <= 1e-12 * np.max(np.abs(want))
