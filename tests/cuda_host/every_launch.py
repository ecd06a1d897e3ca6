"""Run every kind of kernel launch of the CUDA backend on the host build, for
``tests/test_cuda_sanitizers.py``, which runs this script under ThreadSanitizer and
AddressSanitizer: in the GPU's launch geometry (blocks of 128 threads: four warps), then in the
tests' small geometry (many tiles, carry spans and sort windows for short inputs: the paths of long
inputs, such as phase 2's three launches); products, plans and LaplexGram's filter. Results are
checked against the float64 dense reference or the Numba backend, so that a run that computed
nothing cannot pass. Prints ``ok`` at the end."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import laplexops as lx
from cuda_host.kernels import SMALL, HostKernels
from laplex_testing import apply_ref, rel_err
from laplexops.backends import _cupy, _cupy_sort

#: the random inputs' seed: set by the test that runs this script (replayable from its own seed),
#: a fresh one when run by hand; printed either way
SEED = "LAPLEXOPS_EVERY_LAUNCH_SEED"


def main() -> None:
    seed = int(os.environ.get(SEED, "").strip() or np.random.SeedSequence().entropy)
    print(f"{SEED}={seed}")
    rng = np.random.default_rng(seed)
    every_launch(_cupy.CupyBackend(xp=np, kernels=HostKernels()), rng, size=1500, small=False)
    # tiles of 32 items: 1213 merged items take phase 2's three launches (spans of 32 tiles)
    every_launch(_cupy.CupyBackend(xp=np, kernels=HostKernels(SMALL)), rng, size=700, small=True)
    print("ok")


def every_launch(backend, rng, size: int, small: bool) -> None:
    """Every kind of launch with about ``size`` anchors a side, inputs drawn from ``rng``;
    ``small``: the backend has the small geometry (the snapshot's launch does not depend on the
    geometry: its type pairs and grid-stride rounds run only once, with the GPU's; the operators'
    snapshots run in both)."""

    def operator(x, y, rate):
        return lx.LaplexOperator(x, y, rate, backend=backend)

    # two blocks at most a snapshot: grid-stride rounds
    strided = _cupy.CupyBackend(xp=np, kernels=backend.kernels, snapshot_blocks=2)
    for source, real in (
        () if small else (("float32", "float32"), ("float32", "float64"), ("float64", "float64"))
    ):
        a = rng.uniform(-1e3, 1e3, 9000).astype(source)
        a[rng.integers(0, a.shape[0], 3)] = np.nan
        copy, bad, ordered = strided.snapshot(a, np.dtype(real))
        assert bad == 3 and not ordered and np.array_equal(copy, a.astype(real), equal_nan=True)
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-10)):
        m, n = size, size * 11 // 15
        x = rng.uniform(0, 60, m).astype(dtype)
        y = rng.uniform(0, 60, n).astype(dtype)
        y[:50] = x[:50]  # ties between the sides
        s = np.sort(x)
        first = operator(x, y, 0.7)
        for rate in (0.7, 0.3 + 1j):  # one plan (one sort per side) for both rates
            op = first.with_rate(rate)
            v = rng.standard_normal((n, 2))
            for _ in range(2):  # the first product finds the threads' rows, the second reads them
                assert rel_err(op @ v, apply_ref(x, y, rate, v)) <= tol
            u = rng.standard_normal(m)
            crate = rate.conjugate() if isinstance(rate, complex) else rate
            assert rel_err(op.H @ u, apply_ref(y, x, crate, u)) <= tol
            op.gradient(v, rng.standard_normal((m, 2)))  # signed and moment sums
            assert rel_err(operator(s, s, rate) @ u, apply_ref(s, s, rate, u)) <= tol  # square
        # fresh plans (radix sort over two tiles) and repairs: merge-split windows with 1-ulp
        # moves across runs of ties, and the bitonic network for orders reversed within windows
        count = 400 if small else 5000  # several radix tiles / two in the GPU's geometry
        a = (
            np.float32(600)
            + rng.integers(0, 40, count).astype(np.float32) * np.spacing(np.float32(600))
        ).astype(dtype)
        b = rng.uniform(0, 1000, count * 4 // 5).astype(dtype)
        plan = backend.plan(a, b)
        a2 = np.nextafter(a, a + rng.integers(-1, 2, a.shape[0]).astype(dtype) * dtype(1e3))
        new = backend.plan(a2, b, hint=plan)
        for (_, perm), want in zip(new.sorted, (a2, b)):
            assert np.array_equal(perm, np.argsort(want, kind="stable"))
        window = backend.geometry["LAPLEX_SORT_BLOCK"] * backend.geometry["LAPLEX_SORT_ITEMS"]
        c = np.sort(b)
        hint = np.concatenate(
            [np.arange(i, min(i + window, c.shape[0]))[::-1] for i in range(0, c.shape[0], window)]
        ).astype(np.int32)
        _, perm = _cupy_sort.repair(backend, c, hint, np.dtype(np.int32))
        assert np.array_equal(perm, np.argsort(c, kind="stable"))
        gram(backend, rng, size, dtype)


def gram(backend, rng, n: int, dtype) -> None:
    """LaplexGram's kernels: the variance recursion and the affine scans (forward, backward, two
    columns), through the likelihood's gradient at ties (both orders of each run), a solve and
    a draw; against the Numba backend."""
    a = rng.uniform(0.0, 50.0, n).astype(dtype)
    a[: n // 10] = a[n // 10 : n // 5]  # ties
    w, u = rng.uniform(0.5, 1.5, n), rng.uniform(0.01, 0.1, n)
    X = rng.standard_normal((2, n))
    got = lx.LaplexGram(a, 0.6, w, u, backend=backend)
    want = lx.LaplexGram(a, 0.6, w, u)
    assert rel_err(got.nll_gradient(X).a, want.nll_gradient(X).a) <= 1e-10
    assert rel_err(got.solve(X.T), want.solve(X.T)) <= 1e-10
    assert rel_err(got.sample(1, seed=1), want.sample(1, seed=1)) <= 1e-10


if __name__ == "__main__":
    main()
