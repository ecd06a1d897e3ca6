"""LaplexGram on the CUDA backend (``_cupy_gram``, ``laplex_gram.cu``) against the Numba backend.

Two targets, as in ``test_cuda.py``: ``host``, the CUDA backend's host code with NumPy arrays and
the kernels compiled for the CPU in a small launch geometry (tiles of 32 items, carry blocks of 4
threads: many tiles and carry runs for short inputs), and ``gpu``, CuPy on a CUDA device (skips
without one). Both filters compute in float64 whatever the data's precision, so they agree to
1e-10 relative (docs/reference.md, §11), float32 data included.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import laplexops as lx
from cuda_host.targets import require_gpu, require_host
from laplexops.backends import _cupy

AGREE = 1e-10


class Host:
    name = "host"

    def __init__(self):
        from cuda_host.kernels import SMALL, HostKernels

        self.backend = _cupy.CupyBackend(xp=np, kernels=HostKernels(SMALL))

    def gram(self, a, rate, weights, noise):
        return lx.LaplexGram(a, rate, weights, noise, backend=self.backend)

    def to(self, a):
        return a

    def back(self, a):
        return a if isinstance(a, float) else np.asarray(a)


class Gpu:
    name = "gpu"

    def __init__(self):
        import cupy

        self.cupy = cupy

    def to(self, a):
        return self.cupy.asarray(a) if isinstance(a, np.ndarray) else a

    def gram(self, a, rate, weights, noise):
        return lx.LaplexGram(self.to(a), rate, self.to(weights), self.to(noise))

    def back(self, a):
        return a if isinstance(a, float) else self.cupy.asnumpy(a)


_TARGETS: dict = {}


@pytest.fixture(params=["host", "gpu"], scope="module")
def target(request):
    name = request.param
    if name not in _TARGETS:
        (require_gpu if name == "gpu" else require_host)()
        _TARGETS[name] = Gpu() if name == "gpu" else Host()
    return _TARGETS[name]


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def _anchors(rng, n, kind):
    if kind == "uniform":
        a = rng.uniform(-5.0, 5.0, n)
    elif kind == "ties":
        a = rng.integers(0, max(2, n // 3), n).astype(np.float64) * 0.25
    elif kind == "sorted":
        a = np.sort(rng.uniform(0.0, 20.0, n))
    else:  # spread: gaps of 1e8 next to gaps of 1e-3
        a = rng.uniform(0.0, 1.0, n) * 1e-3 + rng.integers(0, 3, n) * 1e8
    return a


# each case launches some forty kernels, each block's threads emulated as host threads: a third of
# the profile's cases keeps this test near 30 s without a GPU
@settings(max_examples=max(1, settings.default.max_examples // 3))
@given(
    n=st.integers(1, 150),
    k=st.integers(1, 3),
    kind=st.sampled_from(["uniform", "ties", "sorted", "spread"]),
    scalars=st.booleans(),
    centred=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_cuda_filter_matches_numba(target, n, k, kind, scalars, centred, dtype, seed):
    """Every member of the Gram: log det, nll, solve, sample and every gradient field, to 1e-10
    of the Numba backend, for anchors with ties, sorted, unsorted and spread by 1e8."""
    rng = np.random.default_rng(seed)
    a = _anchors(rng, n, kind).astype(dtype)
    rate = float(rng.uniform(0.1, 3.0))
    if scalars:
        w, u = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.01, 0.5))
    else:
        w = rng.uniform(-2.0, 2.0, n).astype(dtype)
        u = rng.uniform(0.01, 0.5, n).astype(dtype)
    X = rng.standard_normal((k, n)).astype(dtype)
    mean = rng.standard_normal(n).astype(dtype) if centred else None
    want = lx.LaplexGram(a, rate, w, u)
    got = target.gram(a, rate, target.to(w), target.to(u))

    assert abs(got.logdet() - want.logdet()) <= AGREE * max(1.0, abs(want.logdet()))
    Xd, md = target.to(X), None if mean is None else target.to(mean)
    assert _rel(got.nll(Xd, md), want.nll(X, mean)) <= AGREE
    B = rng.standard_normal((n, 2)).astype(dtype)
    assert _rel(target.back(got.solve(target.to(B))), want.solve(B)) <= AGREE
    assert _rel(target.back(got.sample(2, seed=seed)), want.sample(2, seed=seed)) <= AGREE
    value, grads = got.nll_and_gradient(Xd, md)
    value_want, grads_want = want.nll_and_gradient(X, mean)
    assert _rel(value, value_want) <= AGREE
    for field in grads_want._fields:
        g, h = target.back(getattr(grads, field)), getattr(grads_want, field)
        # a field near 0 is a sum that cancels (anchors at ties): measured against the value
        scale = max(float(np.max(np.abs(h))), 1e-3 * (1.0 + abs(value_want)))
        assert float(np.max(np.abs(np.asarray(g) - h))) <= AGREE * scale, field


def test_long_inputs_take_many_tiles_and_carry_runs(target, rng):
    """A thousand anchors: dozens of tiles, each carry thread composing a run of them (the small
    geometry), a batch of three columns; the same numbers as the Numba backend."""
    n = 1000
    a = rng.uniform(0.0, 100.0, n)
    a[rng.integers(0, n, 60)] = a[rng.integers(0, n, 60)]  # ties
    w, u = rng.uniform(0.5, 1.5, n), rng.uniform(0.01, 0.1, n)
    X = rng.standard_normal((3, n))
    want = lx.LaplexGram(a, 0.4, w, u)
    got = target.gram(a, 0.4, target.to(w), target.to(u))
    value, grads = got.nll_and_gradient(target.to(X))
    value_want, grads_want = want.nll_and_gradient(X)
    assert _rel(value, value_want) <= AGREE
    for field in grads_want._fields:
        assert _rel(target.back(getattr(grads, field)), getattr(grads_want, field)) <= AGREE


def test_a_singular_gram_names_its_cause(target, rng):
    a = rng.uniform(0.0, 1.0, 40)
    a[7] = a[3]
    w = rng.uniform(0.5, 1.5, 40)
    G = target.gram(a, 1.0, target.to(w), 0.0)
    with pytest.raises(np.linalg.LinAlgError, match=r"anchors (3 and 7|7 and 3) are equal"):
        G.logdet()
    w[11] = 0.0
    u = np.full(40, 0.1)
    u[11] = 0.0
    G = target.gram(a, 1.0, target.to(w), target.to(u))
    with pytest.raises(np.linalg.LinAlgError, match=r"weights\[11\] and noise\[11\] are both 0"):
        G.solve(target.to(rng.standard_normal(40)))


def test_the_phased_gram_is_not_on_cuda_yet(target, rng):
    G = target.gram(rng.uniform(0.0, 1.0, 10), 1.0 + 2.0j, 1.0, 0.1)
    with pytest.raises(NotImplementedError, match="phased LaplexGram"):
        G.logdet()


def test_the_scans_against_a_loop(target, rng):
    """The affine scan itself, forward and backward, over more columns than one launch takes
    (``max_grid_y`` shrunk): the exclusive states of ``y_t = a_t y_{t-1} + b_t``."""
    if target.name != "host":
        pytest.skip("the host build's scan with a shrunk launch limit")
    from laplexops.backends import _cupy_gram

    backend = _cupy.CupyBackend(xp=np, kernels=target.backend.kernels, max_grid_y=2)
    n, k = 200, 5
    a = rng.uniform(-1.0, 1.0, n)
    b = rng.standard_normal((k, n))
    for reverse in (False, True):
        got = _cupy_gram.affine(backend, a, b, reverse=reverse)
        want = np.empty((k, n))
        y = np.zeros(k)
        for t in range(n - 1, -1, -1) if reverse else range(n):
            want[:, t] = y
            y = a[t] * y + b[:, t]
        assert _rel(got, want) <= 1e-13
