"""The Dask backend over other local backends than Numba: the CUDA backend's host build (NumPy
chunks, the kernels compiled for the CPU, the synchronous scheduler: what checks this path
without a GPU) and Dask arrays of CuPy chunks on a GPU (a two-worker ``LocalCluster``; skips
without a device). Both against the float64 dense reference and the Numba backend's gradients."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import laplexops as lx  # noqa: E402
from cuda_host.targets import require_gpu, require_host  # noqa: E402
from laplex_testing import apply_ref as dense_apply  # noqa: E402
from laplexops.backends import Side, _dask  # noqa: E402
from laplexops.backends._dask import DaskBackend  # noqa: E402


def _rel(got, ref):
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    ref = np.asarray(ref)
    return np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300)


def _problem(rng, m, n):
    """Anchors on a grid of 0.1 (ties within and between the sides) and operands."""
    x = np.round(rng.uniform(0, 40, m), 1)
    y = np.round(rng.uniform(0, 40, n), 1)
    return x, y, rng.standard_normal((n, 2)), rng.standard_normal((m, 2))


def _check(op, x, y, v, g, chunked, rate, tol=1e-10):
    """Products and gradients of ``op`` (Dask anchors ``x``, ``y``) against the dense reference
    and the Numba backend; ``chunked`` makes a Dask array of the local kind from a NumPy one."""
    W = np.exp(-rate * np.abs(x[:, None] - y[None, :]))
    cy, cx = op._plan.chunks[Side.ROWS_Y], op._plan.chunks[Side.ROWS_X]
    out = op @ chunked(v[:, 0], cy)
    assert isinstance(out, da.Array)
    assert _rel(out.compute(), dense_apply(x, y, rate, v[:, 0])) <= tol
    assert _rel((op @ chunked(v, cy)).compute(), W @ v) <= tol
    assert _rel(op.rmatvec(chunked(g[:, 1], cx)).compute(), W.conj().T @ g[:, 1]) <= tol
    ref = lx.LaplexOperator(x, y, rate).gradient(v, g)
    got = op.gradient(chunked(v, cy), chunked(g, cx))
    for name in ("x", "y", "v"):
        assert _rel(getattr(got, name).compute(), getattr(ref, name)) <= tol, name
    assert abs(complex(got.rate) - complex(ref.rate)) <= tol * abs(complex(ref.rate))


@pytest.fixture(scope="module")
def host_backend():
    """The CUDA backend's host code and kernels on the CPU (``tests/cuda_host``), small
    geometry."""
    require_host()
    from cuda_host.kernels import SMALL, HostKernels
    from laplexops.backends._cupy import CupyBackend

    return CupyBackend(xp=np, kernels=HostKernels(SMALL))


@pytest.mark.parametrize(("path", "rate"), [("one task", 0.8), ("shuffle", 0.5 - 1.5j)])
def test_host_build_as_the_local_backend(host_backend, rng, monkeypatch, path, rate):
    """(The host build emulates every GPU thread: small sizes.)"""
    if path == "shuffle":
        monkeypatch.setattr(_dask, "GATHER_BYTES", 0)
    x, y, v, g = _problem(rng, 160, 120)
    backend = DaskBackend(partitions=5, local=host_backend)
    with dask.config.set(scheduler="synchronous"):  # the host build runs one launch at a time
        op = lx.LaplexOperator(da.from_array(x, 40), da.from_array(y, 30), rate, backend=backend)
        assert op._plan.local == (host_backend, "cpu")
        part = op._plan.parts.blocks[3].compute()[0]
        assert part.backend() is host_backend
        _check(op, x, y, v, g, lambda a, c: da.from_array(a, chunks=(c,) + a.shape[1:]), rate)
        if path == "one task":
            router = op._plan.routers[Side.ROWS_Y].compute()[0]
            assert isinstance(router, _dask._IndexRoute)


def test_scan_ends_agree_with_the_numba_kernel(rng):
    """The array-module end states (``scan_ends_with``, the CuPy backend's ``scan_ends``)
    against ``NumbaBackend.scan_ends`` on a plan whose columns are extended by one virtual
    anchor at each end."""
    from laplexops.backends import get_backend
    from laplexops.backends._base import scan_ends_with

    numba = get_backend("numba", "cpu")
    cols = np.sort(rng.uniform(0, 30, 400))
    cols[50:60] = cols[50]  # ties
    b = rng.standard_normal((400, 3))
    ext = np.concatenate([[cols[0] - 2.0], cols, [cols[-1] + 1.5]])
    rows = np.sort(rng.uniform(0, 30, 10))
    plan = numba.plan(rows, ext, None, (True, True))
    for rate in (0.7, 2.0 - 0.5j):
        want = numba.scan_ends(plan, Side.ROWS_X, rate, b, 1, True)
        got = scan_ends_with(np, cols, rate, b, True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
        plain = scan_ends_with(np, cols, rate, b, False)
        np.testing.assert_array_equal(plain[[1, 3]], 0)


def test_cuda_backend_scan_ends_agree_with_numba(host_backend, rng):
    """``CupyBackend.scan_ends`` (host build) against the Numba kernel, both orientations."""
    from laplexops.backends import get_backend

    numba = get_backend("numba", "cpu")
    x, y = np.sort(rng.uniform(0, 20, 50)), np.sort(rng.uniform(0, 20, 70))
    plans = [backend.plan(x, y, None, (True, True)) for backend in (numba, host_backend)]
    for side, n in ((Side.ROWS_X, 70), (Side.ROWS_Y, 50)):
        b = rng.standard_normal((n - 3, 2))
        want = numba.scan_ends(plans[0], side, 0.9 - 0.3j, b, 2, True)
        got = host_backend.scan_ends(plans[1], side, 0.9 - 0.3j, b, 2, True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_chunks_of_other_arrays_are_refused(rng):
    x = da.from_array(rng.standard_normal(20), chunks=5)
    masked = x.map_blocks(np.ma.masked_array)
    with pytest.raises(TypeError, match="NumPy or CuPy chunks"):
        DaskBackend().asarray(masked)
    # a local backend without the carries' end states is refused at the plan
    from laplexops.backends import get_backend

    class NoEnds:
        name, device, xp = "no-ends", "cpu", np

        def __getattr__(self, attr):
            if attr == "scan_ends":
                raise AttributeError(attr)
            return getattr(get_backend("numba", "cpu"), attr)

    with pytest.raises(TypeError, match="scan_ends"):
        lx.LaplexOperator(x, x, 1.0, backend=DaskBackend(local=NoEnds())).prepare()


@pytest.fixture(scope="module")
def gpu_client(request):
    require_gpu()
    return request.getfixturevalue("dask_client")


@pytest.mark.parametrize("path", ["one task", "shuffle"])
def test_cupy_chunks_on_a_gpu(gpu_client, rng, monkeypatch, path):
    import cupy

    if path == "shuffle":
        monkeypatch.setattr(_dask, "GATHER_BYTES", 0)

    def chunked(a, c):
        return da.from_array(cupy.asarray(a), chunks=(c,) + a.shape[1:], asarray=False)

    x, y, v, g = _problem(rng, 2000, 1500)
    for rate in (1.0, 3 + 2j, 0.05):
        op = lx.LaplexOperator(chunked(x, 300), chunked(y, 170), rate)
        assert op.backend == "dask" and op._plan.local == ("cupy", "cuda")
        out = (op @ chunked(v[:, 0], 170)).compute()
        assert isinstance(out, cupy.ndarray)
        _check(op, x, y, v, g, chunked, rate)
    # float32 anchors and operands: the CuPy backend's float32 accuracy
    x32, v32 = x.astype(np.float32), v.astype(np.float32)
    op = lx.LaplexOperator(chunked(x32, 300), chunked(y.astype(np.float32), 170), 0.7)
    out = (op @ chunked(v32, 170)).compute()
    assert out.dtype == np.float32
    assert _rel(out, dense_apply(x32, y.astype(np.float32), 0.7, v32)) <= 1e-4
