"""When the CPU backend uses threads (``laplexops/backends/_numba_threads.py``): small calls run
the serial builds of the kernels and never enter a parallel region (on a loaded machine one region
can cost milliseconds; docs/benchmarks.md, Small problems and threads), large ones the parallel
builds, and both builds give the same bits (docs/reference.md, Accuracy: repeated calls are bitwise
identical)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import numba
import numpy as np
import pytest

import laplexops as lx
import laplexops.backends._numba  # builds every kernel (the backend's modules load lazily)
from laplex_testing import run_in_threads
from laplexops.backends import (
    Side,
    _numba,
    _numba_route,
    _numba_scan,
    _numba_sort,
    _numba_threads,
)
from laplexops.backends._numba_route import Route
from laplexops.backends._numba_sort import argsort_two
from laplexops.backends._numba_threads import KERNELS

multithreaded = pytest.mark.skipif(
    numba.get_num_threads() < 2, reason="Numba runs one thread here (NUMBA_NUM_THREADS=1)"
)


def refuse_parallel(monkeypatch):
    """Make every parallel build raise: a call that enters one fails the test."""

    def make(name):
        def refuse(*args):
            raise AssertionError(f"the parallel build of {name} was entered")

        return refuse

    for name, kernel in KERNELS.items():
        monkeypatch.setattr(kernel, "parallel", make(name))


def count_parallel(monkeypatch) -> dict[str, int]:
    """Count the calls of every parallel build (which still runs)."""
    calls = dict.fromkeys(KERNELS, 0)

    def make(name, build):
        def counted(*args):
            calls[name] += 1
            return build(*args)

        return counted

    for name, kernel in KERNELS.items():
        monkeypatch.setattr(kernel, "parallel", make(name, kernel.parallel))
    return calls


def workload(rng, m, n, k, rate, dtype=np.float64):
    """Everything an optimizer step does: a fresh plan (sort, merge counts, decays), products,
    adjoint products, a gradient, a new rate, a repaired plan; and the Gram's likelihood, its
    gradient, a solve and draws."""
    x, y = rng.uniform(-1.0, 1.0, m).astype(dtype), rng.uniform(-1.0, 1.0, n).astype(dtype)
    x[: m // 4] = y[: m // 4]  # ties
    op = lx.LaplexOperator(x, y, rate)
    V, U = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((m, k)).astype(dtype)
    distinct = np.unique(y)
    grads = op.gradient(V, U)
    stepped = op.with_anchors(x + 1e-4 * rng.standard_normal(m), y)
    gram = lx.LaplexOperator(distinct, distinct, rate)  # distinct anchors: the square scan
    # the covariance Gram's filter passes (its rate real), anchors with ties
    covs = [
        lx.LaplexGram(x, s, weights=1.5, noise=0.2)
        for s in (abs(complex(rate).real), complex(abs(complex(rate).real), 2.0))  # and phased
    ]
    cov_results = []
    for cov in covs:
        value, cov_grads = cov.nll_and_gradient(U.T)
        cov_results += [np.asarray(value), cov_grads.a, np.asarray(cov_grads.rate)]
        cov_results += [cov.solve(U), cov.sample(k, seed=1)]
        # nine rows: two groups of four columns side by side, and one alone
        cov_results.append(np.asarray(cov.nll(np.concatenate([U.T, U.T, U.T]))))
    # a Dask partition's pieces: the scans' end states, and a route's put (the inverse move)
    numba_backend = _numba.NumbaBackend()
    ends = [numba_backend.scan_ends(op._plan, Side.ROWS_X, rate, V, 0, w) for w in (False, True)]
    route, beyond, moved = Route(rng.permutation(n)), Route(rng.permutation(n)), []
    for a in (V[:, 0].copy(), V):
        for r in (route, beyond):
            with pytest.MonkeyPatch.context() as patch:
                if r is beyond:  # no inverse: the scatter writes at the offsets
                    patch.setattr(_numba_route, "INVERSE_MAX", 0)
                out = np.empty_like(a)
                r.put(a, out, np.empty_like(a))
                moved.append(out)
    return [
        *ends,
        *moved,
        *cov_results,
        op @ V,
        op.rmatmat(U),
        op @ V[:, 0],
        op.with_rate(2 * rate) @ V,
        op.with_rate(complex(rate) + 0.5j) @ V,  # complex decays also for a real rate
        *grads[:2],
        np.asarray(grads.rate),
        grads.v,
        stepped @ V,
        gram @ V[: distinct.shape[0]],
        gram @ V[: distinct.shape[0], 0],
    ]


@pytest.mark.parametrize("k", [4, 9])
@pytest.mark.parametrize("decay", [np.float64, np.complex128])
def test_grouped_column_scans_give_the_same_bits_in_both_builds(rng, k, decay):
    """Four columns and more are scanned in groups of four (and one column at a time for the
    rest): both builds of ``column_scans`` agree to the bit."""
    n = 3000
    cs = np.sort(rng.uniform(0.0, 100.0, n))
    rate = 0.7 if decay is np.float64 else 0.7 - 1.5j
    d = np.exp(-rate * np.diff(cs, prepend=-np.inf)).astype(decay)
    b = rng.standard_normal((n, k))
    results = []
    for build in (_numba_scan.column_scans.serial, _numba_scan.column_scans.parallel):
        fwd, bwd, none = np.empty((k, n), decay), np.empty((k, n), decay), np.empty((k, 0), decay)
        build(cs, d, b, fwd, bwd, none, none, False)
        results.append((fwd, bwd))
    (f0, b0), (f1, b1) = results
    assert f0.tobytes() == f1.tobytes() and b0.tobytes() == b1.tobytes()
    want = np.zeros(k, decay)
    for c in range(n):  # the forward scan, one row at a time
        want = d[c] * want + b[c] if c else b[c].astype(decay)
    assert np.allclose(f0[:, -1], want, rtol=1e-12, atol=0)


def test_every_parallel_kernel_has_a_serial_build():
    assert {name.rsplit(".", 1)[1] for name in KERNELS} >= {
        "scan",
        "scan_square",
        "exponents",
        "exponentials",
        "gather",
        "_merge_counts",
        "_radix_argsort_two",
    }
    for kernel in KERNELS.values():
        assert kernel.serial is not kernel.parallel
        assert kernel.serial.targetoptions.get("parallel") is not True
        assert kernel.parallel.targetoptions.get("parallel") is True


@pytest.mark.parametrize("rate", [0.7, 0.5 + 3j])
def test_small_problems_enter_no_parallel_region(rng, monkeypatch, rate):
    """An optimizer step of a small model (here 10 x 64 anchors, 400 columns) runs serially."""
    refuse_parallel(monkeypatch)
    for result in workload(rng, 10, 64, 400, rate):
        assert np.all(np.isfinite(result))


def test_small_sorts_of_both_sides_run_serially(rng, monkeypatch):
    """Two sides just above the radix sort's NumPy cut-off sort one after the other."""
    refuse_parallel(monkeypatch)
    a, b = rng.standard_normal(5000), rng.standard_normal(6000)
    pa, pb = argsort_two(a, b)
    assert np.array_equal(pa, np.argsort(a, kind="stable"))
    assert np.array_equal(pb, np.argsort(b, kind="stable"))


@multithreaded
def test_large_problems_use_the_threads(rng, monkeypatch):
    calls = count_parallel(monkeypatch)
    monkeypatch.setitem(_numba_sort.NUMPY_FASTER, np.dtype(np.float64), False)  # the radix sort
    n = _numba_threads.PARALLEL_MIN_WORK
    op = lx.LaplexOperator(rng.uniform(0.0, n, n), rng.uniform(0.0, n, n), 1.0)
    op @ rng.standard_normal(n)
    for name in (
        "column_scans",
        "rows_sum_one_column",
        "exponents",
        "exponentials",
        "gather",
        "gather_blocks",
        "scatter_inverse",
        "_build",
        "_invert",
        "_merge_counts",
        "_radix_argsort_two",
    ):
        assert calls[f"laplexops.backends._numba_{_module(name)}.{name}"] >= 1, calls


def _module(name: str) -> str:
    modules = {"_merge_counts": "plan", "_radix_argsort_two": "sort", "exponentials": "exp"}
    route = ["gather", "gather_blocks", "scatter_inverse", "_build", "_invert"]
    modules.update(dict.fromkeys(route, "route"))
    return modules.get(name, "scan")


@multithreaded
def test_one_thread_set_by_the_caller_means_serial(rng, monkeypatch):
    """``numba.set_num_threads(1)`` (in the calling thread) keeps even large calls serial."""
    refuse_parallel(monkeypatch)
    n = _numba_threads.PARALLEL_MIN_WORK
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        out = lx.LaplexOperator(rng.uniform(0.0, n, n), rng.uniform(0.0, n, n)) @ np.ones(n)
    finally:
        numba.set_num_threads(before)
    assert np.all(np.isfinite(out))


@multithreaded
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [1.3, 0.4 - 2j])
def test_serial_and_parallel_builds_give_the_same_bits(rng, monkeypatch, dtype, rate):
    seed = int(rng.integers(2**32))
    shape = (5000, 7000, 3)  # both sides long enough for the radix sort
    monkeypatch.setattr(_numba, "ROUTE_MIN", 0)  # and their permutations routed, in blocks
    monkeypatch.setattr(_numba, "_PERM_KEEP_BYTES", 0)  # the routes standing for them
    serial = workload(np.random.default_rng(seed), *shape, rate, dtype)
    monkeypatch.setattr(_numba_threads, "PARALLEL_MIN_WORK", 0)  # every call in parallel
    calls = count_parallel(monkeypatch)
    parallel = workload(np.random.default_rng(seed), *shape, rate, dtype)
    assert all(count > 0 for count in calls.values()), [n for n, c in calls.items() if not c]
    for a, b in zip(serial, parallel):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b, equal_nan=True)
        assert a.tobytes() == b.tobytes()


_LAYER_RUN = """
import hashlib, sys
import numba, numpy as np
import laplexops as lx
from laplexops.backends import _numba_threads
rng = np.random.default_rng(int(sys.argv[1]))
n = 150_000
x, y = rng.uniform(0, n, n), rng.uniform(0, n, n)
y[:500] = x[:500]  # ties
v = rng.standard_normal(n)
op = lx.LaplexOperator(x, y, 0.3 + 0.2j)
g = op @ v
grads = op.gradient(v, np.conj(g))
digest = hashlib.sha256()
for a in (g, op.H @ g, grads.x, grads.y, grads.v, np.asarray(grads.rate)):
    digest.update(np.ascontiguousarray(a).tobytes())
print(numba.threading_layer(), _numba_threads.TBB is not None, digest.hexdigest())
"""


def _in_fresh_process(layer: str | None, seed: int) -> list[str]:
    """``_LAYER_RUN`` in a fresh interpreter with ``NUMBA_THREADING_LAYER=layer`` (unset for
    ``None``): the layer Numba started, whether the TBB runtime was loaded, and a digest of the
    results; empty where Numba cannot load that layer."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["NUMBA_NUM_THREADS"] = "2"
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    done = subprocess.run(
        [sys.executable, "-c", _LAYER_RUN, str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and "No threading layer could be loaded" in done.stderr:
        return []  # not on this machine (the OpenMP runtime is the system's)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_tbb_wheel_gives_numbas_tbb_layer_and_every_layer_the_same_bits(rng):
    """Where the ``tbb`` wheel is installed (a dependency on Linux x86-64), its runtime is loaded
    and Numba picks the TBB layer by default; the products and gradients are the same bits under
    every threading layer there is (no kernel reduces across parallel iterations)."""
    try:
        metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        pytest.skip("the tbb wheel is not installed here")
    if not sys.platform.startswith("linux"):
        pytest.skip("the TBB runtime is loaded on Linux only")
    seed = int(rng.integers(2**31))
    layer, loaded, digest = _in_fresh_process(None, seed)
    assert (layer, loaded) == ("tbb", "True")
    compared = 0
    for other in ("omp", "workqueue"):
        got = _in_fresh_process(other, seed)
        if got:
            assert got[0] == other
            assert got[2] == digest, other
            compared += 1
    assert compared  # Numba's own workqueue layer is always there


def test_kernels_release_the_gil(rng):
    """Every compiled function of the backend runs without the GIL, so a product in one thread
    (a Dask worker's task) leaves the others (its event loop) free, and calls from several
    threads at once on one operator give the same bits as one at a time."""
    from laplexops.backends import _numba_filter, _numba_filter2, _numba_ranges, _numba_route

    modules = (_numba_scan, _numba_sort, _numba_route, _numba_ranges, _numba_filter, _numba_filter2)
    compiled = [
        (f"{module.__name__}.{name}", value)
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, numba.core.registry.CPUDispatcher)
    ]
    compiled += [(name, k.parallel) for name, k in KERNELS.items()]
    compiled += [(f"{name} (serial)", k.serial) for name, k in KERNELS.items()]
    assert len(compiled) > 20
    holding = [name for name, f in compiled if not f.targetoptions.get("nogil")]
    assert not holding, holding

    n = 300_000
    x, y = rng.uniform(0, n, n), rng.uniform(0, n, n)
    v, g = rng.standard_normal(n), rng.standard_normal(n)
    op = lx.LaplexOperator(x, y, 0.7 - 0.2j)
    alone = [op @ v, op.rmatvec(g), op.gradient(v, g).x]
    results: list = [None] * 4
    errors: list = []

    def run(i):
        try:
            results[i] = [op @ v, op.rmatvec(g), op.gradient(v, g).x]
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    run_in_threads(run, 4)
    assert not errors, errors
    for got in results:
        for a, b in zip(got, alone):
            np.testing.assert_array_equal(a, b)
