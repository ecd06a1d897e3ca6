"""The Dask backend on a two-worker ``distributed.LocalCluster``: Dask arrays in, Dask arrays out,
the same numbers as a dense float64 reference and as the Numba backend."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import dask.array as da  # noqa: E402

import laplexops as lx  # noqa: E402
from laplex_testing import apply_ref as dense_apply  # noqa: E402
from laplexops.backends import Side  # noqa: E402
from laplexops.backends._dask import DaskBackend  # noqa: E402


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


def _rel(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    return np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300)


def _chunked(a, chunks):
    return da.from_array(a, chunks=chunks)


@pytest.mark.parametrize(
    ("rate", "partitions"), [(1.0, None), (3 + 2j, 19), (50.0, 19), (0.05, None)]
)
def test_dense_reference_with_ties(client, rng, rate, partitions):
    """(``partitions``: None, the default, one per worker thread; 19, many carries between
    partitions.)"""
    m = n = 2000
    # anchors on a grid of 0.1: many ties within and between the two sides
    x = np.round(rng.uniform(0, 60, m), 1)
    y = np.round(rng.uniform(0, 60, n), 1)
    backend = "auto" if partitions is None else DaskBackend(partitions)
    op = lx.LaplexOperator(_chunked(x, 300), _chunked(y, 170), rate, backend=backend)
    assert op.backend == "dask"
    assert op._plan.npartitions == (partitions or 2)
    v = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    V = rng.standard_normal((n, 3))
    u = rng.standard_normal(m)
    out = op @ _chunked(v, 170)
    assert isinstance(out, da.Array)
    assert _rel(out.compute(), dense_apply(x, y, rate, v)) <= 1e-10
    assert _rel((op @ _chunked(V, (170, 3))).compute(), dense_apply(x, y, rate, V)) <= 1e-10
    W = np.exp(-rate * np.abs(x[:, None] - y[None, :]))
    assert _rel(op.rmatvec(_chunked(u, 300)).compute(), W.conj().T @ u) <= 1e-10
    assert _rel((op.T @ _chunked(u, 300)).compute(), W.T @ u) <= 1e-10
    assert _rel(op.H.matvec(_chunked(u, 300)).compute(), W.conj().T @ u) <= 1e-10


def test_gradients_match_the_numba_backend(client, rng):
    m, n = 1500, 1100
    x = np.round(rng.uniform(-20, 20, m), 2)
    y = np.round(rng.uniform(-20, 20, n), 2)
    for rate in (0.7, 0.5 - 1.5j):
        v = rng.standard_normal((n, 2))
        g = rng.standard_normal((m, 2))
        ref = lx.LaplexOperator(x, y, rate).gradient(v, g)
        op = lx.LaplexOperator(_chunked(x, 200), _chunked(y, 300), rate, backend=DaskBackend(9))
        got = op.gradient(_chunked(v, (300, 2)), _chunked(g, (200, 2)))
        for name in ("x", "y", "v"):
            assert isinstance(getattr(got, name), da.Array)
            assert _rel(getattr(got, name).compute(), getattr(ref, name)) <= 1e-10, name
        assert abs(got.rate - ref.rate) <= 1e-10 * abs(ref.rate)
        assert type(got.rate) is type(ref.rate)


@pytest.mark.parametrize("path", ["one task", "shuffle"])
@pytest.mark.parametrize(
    "layout",
    ["all tied", "two values", "one-element chunks", "clustered", "empty side", "square"],
)
def test_partition_edge_cases(client, rng, monkeypatch, layout, path):
    """(``path``: the plan and routings in one task each, or through Dask's shuffle.)"""
    if path == "shuffle":
        from laplexops.backends import _dask

        monkeypatch.setattr(_dask, "GATHER_BYTES", 0)
    m, n, cx, cy = 300, 250, 40, 35
    x = rng.uniform(0, 10, m)
    y = rng.uniform(0, 10, n)
    backend = "dask"
    if layout == "all tied":
        x[:] = 3.0
        y[:] = 3.0
    elif layout == "two values":  # duplicate splitters: the sample is mostly one value
        x = np.where(rng.random(m) < 0.95, 1.0, 2.0)
        y = np.where(rng.random(n) < 0.95, 1.0, 2.0)
    elif layout == "one-element chunks":
        m, n, cx, cy = 40, 30, 1, 1
        x, y = x[:m], y[:n]
    elif layout == "clustered":  # more partitions than ranges with anchors
        x = np.concatenate([rng.uniform(0, 1e-3, m - 3), [5e7, 5e7, -1e8]])
        y = np.concatenate([rng.uniform(0, 1e-3, n - 2), [5e7, 1e8]])
        backend = DaskBackend(partitions=40)
    elif layout == "empty side":
        n = 0
        y = y[:0]
    elif layout == "square":
        y = x
        n, cy = m, cx
    op = lx.LaplexOperator(_chunked(x, cx), _chunked(y, max(cy, 1)), 0.8, backend=backend)
    v = rng.standard_normal(n)
    u = rng.standard_normal(m)
    W = np.exp(-0.8 * np.abs(x[:, None] - y[None, :]))
    assert _rel((op @ _chunked(v, max(cy, 1))).compute(), W @ v) <= 1e-10
    assert _rel(op.rmatvec(_chunked(u, cx)).compute(), W.T @ u) <= 1e-10


def test_many_partitions(client, rng):
    n = 200_000
    x = rng.standard_normal(n) * 1e3
    y = rng.standard_normal(n) * 1e3
    op = lx.LaplexOperator(
        _chunked(x, 1000), _chunked(y, 1000), 0.3, backend=DaskBackend(partitions=500)
    )
    plan = op._plan
    assert 400 < plan.npartitions <= 500
    lengths = plan.lengths[Side.ROWS_X] + plan.lengths[Side.ROWS_Y]
    assert lengths.max() <= 3 * (2 * n) / plan.npartitions  # balanced splitters
    v = rng.standard_normal(n)
    ref = lx.LaplexOperator(x, y, 0.3) @ v
    assert _rel((op @ _chunked(v, 1000)).compute(), ref) <= 1e-12


@pytest.mark.parametrize("partitions", [4, 2])
def test_partitions_spread_over_the_workers(client, rng, partitions):
    """The single-task shuffle runs on one worker; the plan still puts its partitions on every
    worker, in contiguous runs (of 2, or of one: a worker's gather is then its block)."""
    from distributed import futures_of, wait

    from laplexops.dask import to_plan_order

    n = 4000
    x, y = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    backend = DaskBackend(partitions)
    op = lx.LaplexOperator(_chunked(x, 1000), _chunked(y, 1000), 1.0, backend=backend)
    parts = op._plan.parts
    held = client.who_has(futures_of(parts))
    where = [held[key] for key in parts.__dask_keys__()]
    assert all(len(w) == 1 for w in where)
    half = partitions // 2
    assert where[:half] == [where[0]] * half and where[half:] == [where[-1]] * half
    assert where[0] != where[-1]
    assert op._plan.groups == [list(range(half)), list(range(half, partitions))]
    v = rng.standard_normal(n)
    assert _rel((op @ _chunked(v, 1000)).compute(), lx.LaplexOperator(x, y, 1.0) @ v) <= 1e-12
    # an operand in plan order: gathered by each worker for its own partitions, left there
    b = to_plan_order(op, _chunked(v, 1000)).persist()
    wait(b)
    assert Side.ROWS_Y in op._plan.gathers
    held = client.who_has(futures_of(b))
    assert [held[key] for (key,) in b.__dask_keys__()] == where


def test_a_worker_lost_after_the_plan_costs_no_result(rng):
    """The plan places its partitions and gathers on workers as preferences: when a worker
    goes (restarted, its data lost), Dask rebuilds what it held on the others and the products
    come out the same, bit for bit."""
    distributed = pytest.importorskip("distributed")
    n = 4000
    x, y, v = rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.standard_normal(n)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        op = lx.LaplexOperator(_chunked(x, 1000), _chunked(y, 1000), 1.0, backend=DaskBackend(4))
        before = (op @ _chunked(v, 1000)).compute()
        assert len(op._plan.groups) == 2
        lost = op._plan.where[1]
        c.restart_workers([lost])
        after = (op @ _chunked(v, 1000)).compute()
        np.testing.assert_array_equal(after, before)
        held = c.who_has(distributed.futures_of(op._plan.parts))
        assert all(held[key] and lost not in held[key] for key in op._plan.parts.__dask_keys__())
        assert _rel(after, lx.LaplexOperator(x, y, 1.0) @ v) <= 1e-12


def test_agrees_with_numba_at_a_million(client, rng):
    n = 10**6
    x = rng.uniform(0, n, n)
    y = rng.uniform(0, n, n)
    v = rng.standard_normal(n)
    op = lx.LaplexOperator(_chunked(x, n // 16), _chunked(y, n // 16), 1.0)
    ref = lx.LaplexOperator(x, y, 1.0) @ v
    assert _rel((op @ _chunked(v, n // 16)).compute(), ref) <= 1e-12


def test_plan_order_layout_round_trip(client, rng):
    from laplexops.dask import from_plan_order, planned_matmat, to_plan_order

    m, n = 700, 900
    x, y = rng.uniform(0, 30, m), rng.uniform(0, 30, n)
    op = lx.LaplexOperator(_chunked(x, 100), _chunked(y, 120), 1.3 - 0.2j)
    plan = op._plan
    v = rng.standard_normal((n, 2))
    planned = to_plan_order(op, _chunked(v, (120, 2)))
    assert planned.chunks[0] == tuple(int(c) for c in plan.lengths[Side.ROWS_Y])
    np.testing.assert_array_equal(from_plan_order(op, planned, rows=False).compute(), v)
    u = from_plan_order(op, planned_matmat(op, planned)).compute()
    assert _rel(u, dense_apply(x, y, 1.3 - 0.2j, v)) <= 1e-10
    # the adjoint's columns are the operator's rows
    g = rng.standard_normal(m)
    back = from_plan_order(op.H, planned_matmat(op.H, to_plan_order(op.H, _chunked(g, 100))))
    W = np.exp(-(1.3 - 0.2j) * np.abs(x[:, None] - y[None, :]))
    assert _rel(back[:, 0].compute(), W.conj().T @ g) <= 1e-10
    with pytest.raises(ValueError, match="plan order"):
        planned_matmat(op, _chunked(v, (120, 2)))
    with pytest.raises(TypeError, match="Dask backend"):
        to_plan_order(lx.LaplexOperator(x, y), _chunked(v, (120, 2)))


def test_errors(client, rng):
    x = rng.standard_normal(50)
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="finite"):
        lx.LaplexOperator(_chunked(bad, 10), _chunked(x, 10))
    op = lx.LaplexOperator(_chunked(x, 10), _chunked(x[:40], 10))
    with pytest.raises(TypeError, match="namespace"):
        op @ np.ones(40)
    with pytest.raises(ValueError, match="leading dimension"):
        op @ da.ones(41, chunks=10)
    with pytest.raises(ValueError, match="dask"):
        lx.LaplexOperator(_chunked(x, 10), _chunked(x, 10), backend="numba")
    with pytest.raises(ValueError, match="partitions"):
        DaskBackend(partitions=0)


def test_results_repeat_bitwise(client, rng):
    x, y = rng.uniform(0, 9, 600), rng.uniform(0, 9, 500)
    v = _chunked(rng.standard_normal(500), 100)
    op = lx.LaplexOperator(_chunked(x, 100), _chunked(y, 100), 2.0)
    first = (op @ v).compute()
    again = lx.LaplexOperator(_chunked(x, 100), _chunked(y, 100), 2.0) @ v
    np.testing.assert_array_equal(first, again.compute())
    # the same operator again: its routes' kept scratch reused
    np.testing.assert_array_equal(first, (op @ (v * 1.0)).compute())


def test_the_shuffle_path_of_large_data(client, rng, monkeypatch):
    """Above ``GATHER_BYTES`` the plan and the routings go through ``dask.dataframe``'s
    shuffle: the same numbers, and results that outlive their operator."""
    from laplexops.backends import _dask

    monkeypatch.setattr(_dask, "GATHER_BYTES", 0)
    m, n = 1200, 900
    x = np.round(rng.uniform(0, 40, m), 1)
    y = np.round(rng.uniform(0, 40, n), 1)
    v = rng.standard_normal(n)
    g = rng.standard_normal(m)
    op = lx.LaplexOperator(_chunked(x, 200), _chunked(y, 150), 0.9 + 0.4j)
    out = op @ _chunked(v, 150)
    grads = op.gradient(_chunked(v, 150), _chunked(g, 200))
    del op
    assert _rel(out.compute(), dense_apply(x, y, 0.9 + 0.4j, v)) <= 1e-10
    ref = lx.LaplexOperator(x, y, 0.9 + 0.4j).gradient(v, g)
    assert _rel(grads.x.compute(), ref.x) <= 1e-10
    assert _rel(grads.v.compute(), ref.v) <= 1e-10
    # float32: the frames keep their columns' dtype
    x32, y32, v32 = x.astype(np.float32), y.astype(np.float32), v.astype(np.float32)
    out = lx.LaplexOperator(_chunked(x32, 200), _chunked(y32, 150), 0.9) @ _chunked(v32, 150)
    assert out.dtype == np.float32
    assert _rel(out.compute(), dense_apply(x32, y32, 0.9, v32)) <= 1e-4


def test_scipy_solvers_through_aslinearoperator(client, rng):
    from scipy.sparse.linalg import cg

    n = 60  # anchors about 1 apart: cg converges in a few dozen products
    a = np.sort(rng.uniform(0, n, n))
    op = lx.LaplexOperator(_chunked(a, 40), _chunked(a, 40), 1.5)
    lin = op.aslinearoperator()
    b = rng.standard_normal(n)
    solution, info = cg(lin, b, rtol=1e-10, maxiter=200)
    assert info == 0
    W = np.exp(-1.5 * np.abs(a[:, None] - a[None, :]))
    assert _rel(W @ solution, b) <= 1e-8
    assert _rel(lin.rmatvec(b), W.T @ b) <= 1e-12
    assert _rel(lin.matmat(np.stack([b, b], axis=1)), W @ np.stack([b, b], axis=1)) <= 1e-12


def _held(a):
    """``a`` as if persisted: its blocks' keys, held elsewhere (as futures are), and no tasks."""
    from dask.highlevelgraph import HighLevelGraph

    graph = HighLevelGraph.from_collections(a.name, {}, dependencies=())
    return da.Array(graph, a.name, a.chunks, dtype=a.dtype, meta=a._meta)


def _tasks(a) -> int:
    """The tasks of ``a``'s graph as a scheduler gets it (optimized)."""
    import dask

    (optimized,) = dask.optimize(a)
    return len(optimized.__dask_graph__())


def test_product_graphs_at_1e10_scale(monkeypatch):
    """The graphs of a plan of 1e10 + 1e10 anchors (synthetic splitters and bounds: built, not
    computed) and of products on it, beyond their persisted inputs: in plan order 2 P + 1
    tasks; with both routings through the peer-to-peer shuffle, 9 P + 3 (in, two per chunk
    and two per partition; out, the last product task makes the shuffle's input, then one per
    chunk and two per partition; two barriers and the fold)."""
    import dask

    from laplexops.backends import _dask

    monkeypatch.setattr(_dask, "GATHER_BYTES", 0)
    n, P = 10**10, 100
    x = da.random.default_rng(1).random(n, chunks=n // P)
    y = da.random.default_rng(2).random(n, chunks=n // P)
    splitters = np.arange(1, P) / P
    bounds = np.empty((P, 6))
    bounds[:, :2] = n // P
    bounds[:, [2, 4]] = np.r_[0.0, splitters][:, None]
    bounds[:, [3, 5]] = np.nextafter(np.r_[splitters, 1.0], 0)[:, None]
    backend = DaskBackend(partitions=P)
    plan = backend._planned(x, y, splitters, bounds, persist=False)
    assert plan.npartitions == P
    plan.parts = _held(plan.parts)
    for side in (Side.ROWS_X, Side.ROWS_Y):
        plan.origin[side] = _held(plan.origin[side])
        plan.destination[side] = _held(backend._destination(plan, side, persist=False))
    lengths = tuple(int(c) for c in plan.lengths[Side.ROWS_Y])
    v = _held(da.ones((n, 2), chunks=(lengths, (2,))))
    (u,) = backend.apply_planned(plan, Side.ROWS_X, 0.5, v, wants=(True, False, False))[:1]
    assert _tasks(u) == 2 * P + 1
    assert u.shape == (n, 2) and u.numblocks[0] == P
    v = _held(da.ones((n, 1), chunks=(n // P, 1)))
    with dask.config.set({"dataframe.shuffle.method": "p2p"}):
        (u,) = backend.apply(plan, Side.ROWS_X, 0.5, v)[:1]
        assert _tasks(u) <= 10 * P
    assert u.shape == (n, 1) and u.chunks[0] == x.chunks[0]
