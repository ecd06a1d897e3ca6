"""Dask arrays of CuPy chunks on one GPU (a two-worker ``LocalCluster``) against the CuPy
backend's own cached product, m = n = ``sys.argv[1]`` float64 anchors in 4 chunks per side: the
plan, a product with routing and one in plan order, and their agreement (information for
docs/distributed.md; the acceptance checks are ``tests/test_dask_local.py``)."""

import sys
import time

import cupy
import dask.array as da
import distributed

import laplexops as lx
from laplexops.dask import from_plan_order, planned_matmat, to_plan_order


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        cupy.cuda.Device().synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    n = int(float(sys.argv[1]) if len(sys.argv) > 1 else 1e7)
    rng = cupy.random.default_rng(5)
    x, y = rng.random(n) * n, rng.random(n) * n
    v = rng.standard_normal(n)
    single = lx.LaplexOperator(x, y, 1.0)
    ref = single @ v
    t_single = best(lambda: single @ v)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c,
        distributed.Client(c),
    ):

        def chunked(a):
            return da.from_array(a, chunks=-(-n // 4), asarray=False).persist()

        xd, yd, vd = chunked(x), chunked(y), chunked(v)
        t = time.perf_counter()
        op = lx.LaplexOperator(xd, yd, 1.0)
        t_plan = time.perf_counter() - t
        t_routed = best(lambda: (op @ vd).persist().compute())
        got = (op @ vd).compute()
        planned = to_plan_order(op, vd[:, None]).persist()
        t_planned = best(lambda: planned_matmat(op, planned).persist().compute())
        back = from_plan_order(op, planned_matmat(op, planned))[:, 0].compute()
    err = float(cupy.linalg.norm(got - ref) / cupy.linalg.norm(ref))
    err2 = float(cupy.linalg.norm(back - ref) / cupy.linalg.norm(ref))
    print(f"n = {n:,} float64, CuPy chunks, 4 per side, LocalCluster(2 workers, 1 GPU)")
    print(f"CuPy backend cached matvec      {t_single * 1e3:9.2f} ms")
    print(f"Dask plan                       {t_plan * 1e3:9.2f} ms")
    for label, t in (("with routing", t_routed), ("in plan order", t_planned)):
        print(f"Dask product {label:<18} {t * 1e3:9.2f} ms  ({t / t_single:.1f}x)")
    print(f"relative difference to the CuPy backend: {err:.1e} (routed), {err2:.1e} (plan order)")
    assert isinstance(got, cupy.ndarray) and err < 1e-10 and err2 < 1e-10, (err, err2)


if __name__ == "__main__":
    main()
