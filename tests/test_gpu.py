"""On a CUDA device (skipped without one): namespaces, solvers, errors and memory of the CuPy
backend. The products and gradients themselves are checked against the reference and the Numba
backend in ``test_cuda.py`` (target ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest

import laplexops as lx
from laplex_testing import rel_err
from laplexops.backends import available

if "cupy" not in available():
    pytest.skip("no CUDA device with CuPy here", allow_module_level=True)

import cupy
import cupyx.scipy.sparse.linalg as cla


def _anchors(rng, m, n, dtype=np.float64):
    return (
        cupy.asarray(rng.uniform(0, m, m).astype(dtype)),
        cupy.asarray(rng.uniform(0, m, n).astype(dtype)),
    )


def test_backend_and_results_stay_on_the_gpu(rng):
    x, y = _anchors(rng, 500, 400)
    op = lx.LaplexOperator(x, y, 0.5)
    assert op.backend == "cupy" and op.dtype == np.float64
    v = cupy.asarray(rng.standard_normal(400))
    out = op @ v
    assert isinstance(out, cupy.ndarray) and out.device == v.device
    assert isinstance(op.x, cupy.ndarray)
    g = op.gradient(v, cupy.asarray(rng.standard_normal(500)))
    assert isinstance(g.x, cupy.ndarray) and isinstance(g.rate, float)


def test_cupyx_solvers_accept_the_operator(rng):
    n = 3000
    a = cupy.asarray(rng.uniform(0, n, n))
    op = lx.LaplexOperator(a, a, 1.0)
    b = cupy.asarray(rng.standard_normal(n))
    lin = op.aslinearoperator()
    assert isinstance(lin, cla.LinearOperator)
    shifted = cla.LinearOperator((n, n), matvec=lambda z: op @ z + 0.5 * z, dtype=np.float64)
    for solver in (cla.cg, cla.gmres):
        z, info = solver(shifted, b, maxiter=2000)  # default tolerance 1e-5
        assert info == 0
        assert float(cupy.linalg.norm(op @ z + 0.5 * z - b) / cupy.linalg.norm(b)) <= 1e-4
    z, info = cla.cg(op, b, maxiter=5)  # the operator itself, without a wrapper
    assert z.shape == (n,)


def test_torch_cuda_tensors_round_trip(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = torch.tensor(rng.uniform(0, 100, 300), device="cuda", requires_grad=True)
    y = torch.tensor(rng.uniform(0, 100, 200), device="cuda")
    v = torch.tensor(rng.standard_normal(200), device="cuda")
    op = lx.LaplexOperator(x, y, 0.3 + 0.2j)
    out = op @ v
    assert isinstance(out, torch.Tensor) and out.device == v.device
    assert out.dtype == torch.complex128
    want = (
        lx.LaplexOperator(x.detach().cpu().numpy(), y.cpu().numpy(), 0.3 + 0.2j) @ v.cpu().numpy()
    )
    assert rel_err(out.cpu().numpy(), want) <= 1e-12


def test_errors_on_the_gpu(rng):
    x, y = _anchors(rng, 50, 40)
    op = lx.LaplexOperator(x, y, 1.0)
    with pytest.raises(TypeError, match="namespace|device"):
        op @ rng.standard_normal(40)  # host operand for GPU anchors
    with pytest.raises(ValueError, match="leading dimension"):
        op @ cupy.ones(41)
    with pytest.raises(ValueError, match="finite"):
        lx.LaplexOperator(cupy.asarray([0.0, np.nan]), y, 1.0)
    with pytest.raises(ValueError, match="serves"):
        lx.LaplexOperator(x, y, 1.0, backend="numba")


def test_failed_allocation_is_a_memory_error(rng):
    x, y = _anchors(rng, 2_000_000, 2_000_000, np.float32)
    op = lx.LaplexOperator(x, y, 1.0).prepare()
    v = cupy.asarray(rng.standard_normal((2_000_000, 8)).astype(np.float32))
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    limit = pool.get_limit()
    pool.set_limit(size=pool.used_bytes() + 16 * 2**20)
    try:
        with pytest.raises(MemoryError, match=r"2000000 x 2000000 operator with 8 column"):
            op @ v
    finally:
        pool.set_limit(size=limit)


def test_float32_parity_at_a_million(rng):
    n = 1_000_000
    x, y = _anchors(rng, n, n, np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    got = cupy.asnumpy(lx.LaplexOperator(x, y, 1.0) @ cupy.asarray(v))
    want = lx.LaplexOperator(cupy.asnumpy(x), cupy.asnumpy(y), 1.0) @ v
    assert got.dtype == np.float32
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_sort_over_many_tiles(rng, dtype):
    """The plan's radix sort on the device, over ~1000 tiles: exactly NumPy's stable argsort
    (random values, runs of ties, -0.0 next to +0.0), int32 and int64 permutations."""
    from laplexops.backends import _cupy_sort
    from laplexops.backends._cupy import CupyBackend

    backend = CupyBackend()
    n = 3_000_000
    a = np.concatenate(
        [rng.standard_normal(n - 200_000) * 1e4, rng.integers(-50, 50, 199_998) * 0.5, [-0.0, 0.0]]
    )
    a = rng.permutation(a).astype(dtype)
    want = np.argsort(a, kind="stable")
    for index in (np.int32, np.int64):
        keys, perm = _cupy_sort.sort(backend, cupy.asarray(a), np.dtype(index))
        assert perm.dtype == index
        np.testing.assert_array_equal(cupy.asnumpy(perm), want)
        np.testing.assert_array_equal(cupy.asnumpy(keys), a[want])


def test_with_anchors_repairs_the_plan_at_scale(rng):
    """1e6 float32 anchors moved by up to 1% of their spacing and by one ulp: the plan repaired
    from the previous one gives the products of a fresh plan, to the bit."""
    n = 1_000_000
    x, y = _anchors(rng, n, n, np.float32)
    v = cupy.asarray(rng.standard_normal(n).astype(np.float32))
    op = lx.LaplexOperator(x, y, 1.0).prepare()
    for x2, y2 in (
        (
            x + cupy.asarray(rng.uniform(-0.01, 0.01, n).astype(np.float32)),
            y + cupy.asarray(rng.uniform(-0.01, 0.01, n).astype(np.float32)),
        ),
        (
            cupy.nextafter(x, x + cupy.asarray(rng.integers(-1, 2, n).astype(np.float32))),
            cupy.nextafter(y, y - 1),
        ),
    ):
        repaired = op.with_anchors(x2, y2) @ v
        fresh = lx.LaplexOperator(x2, y2, 1.0) @ v
        assert bool(cupy.all(repaired == fresh))


@pytest.mark.parametrize(
    "change",
    [
        {"LAPLEX_PAD": 1},
        {"LAPLEX_LEAN_PHASE1": 0},
        {"LAPLEX_ITEMS": 8, "LAPLEX_TILE_MIN_BLOCKS": 8},
    ],
    ids=["padded", "full-phase-1", "8-items-8-blocks"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_variants_match_the_default(rng, change, dtype):
    """The launch-geometry variants that ``docs/scripts/gpu_variants.py`` times give the default
    kernels' reductions (rows sorted and not, ties, a complex rate), over ~300 tiles."""
    from laplexops.backends import _cuda_kernels as kernels
    from laplexops.backends._cupy import CupyBackend, RawModuleKernels

    default = CupyBackend()
    variant = CupyBackend(kernels=RawModuleKernels(dict(kernels.GEOMETRY, **change)))
    m, n = 170_000, 130_000
    x = np.round(rng.uniform(0, 2000, m), 1).astype(dtype)  # runs of ties
    y = rng.uniform(0, 2000, n).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for xs, ys in ((x, y), (np.sort(x), np.sort(y))):
        a, b = cupy.asarray(xs), cupy.asarray(ys)
        plans = default.plan(a, b), variant.plan(a, b)
        for side, size in ((0, n), (1, m)):
            v = cupy.asarray(rng.standard_normal((size, 2)).astype(dtype))
            for rate in (0.3, 0.2 + 1.5j):
                wants = dict(want_sum=True, want_signed=True, want_moment=True)
                want = default.apply(plans[0], side, rate, v, **wants)
                got = variant.apply(plans[1], side, rate, v, **wants)
                for w, g in zip(want, got):
                    assert rel_err(cupy.asnumpy(g), cupy.asnumpy(w)) <= tol
