"""``python -m laplexops bench --dask``: the Dask backend on a two-worker ``LocalCluster``,
timed against the Numba backend on the same cores in the same run.

Three rows, each a ratio: the plan against the Numba plan (``prepare()``), a product in plan
order (``laplexops.dask.planned_matmat``) against the Numba backend's cached matvec, and a
product with routing (``op @ v``) against the same. Every timed Dask call gets operands made
anew (Dask would otherwise reuse a result with the same key).
"""

from __future__ import annotations

import json

import numpy as np

from ._timing import best_of, fmt_seconds

#: the goals: ratio to the Numba backend on the same cores
GOALS = {"plan": 3.0, "product in plan order": 1.3, "product with routing": 3.0}


def dask_bench(n: int, chunks: int, seed: int | None, json_path: str | None = None) -> int:
    """Time the rows above at ``n`` anchors per side in ``chunks`` chunks per side; print them
    with their goals (and write them to ``json_path``). Returns 0 when every ratio meets its
    goal and the products agree with the Numba backend to 1e-10, else 1."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    from ._cli import _machine
    from ._operator import LaplexOperator
    from .dask import planned_matmat, to_plan_order

    seed = int(np.random.default_rng().integers(2**32)) if seed is None else seed
    rng = np.random.default_rng(seed)
    xs, ys, vs = (rng.uniform(0.0, n, n) for _ in range(3))
    print(f"laplexops bench --dask: m = n = {n:.0e}, {chunks} chunks per side, seed {seed}")
    print(f"  {_machine()}")
    print("  LocalCluster(n_workers=2, threads_per_worker=1); peer: the Numba backend, same cores")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        x, y, v = (da.from_array(a, chunks=-(-n // chunks)).persist() for a in (xs, ys, vs))
        wait([x, y, v])
        scale = iter(range(1, 10**6))

        def dask_plan():  # the same values under new keys: nothing reused from the last plan
            fresh = x.map_blocks(np.copy, name=f"laplex-bench-x-{next(scale)}", dtype=x.dtype)
            op = LaplexOperator(fresh, y)
            assert op._plan is not None  # built, its partitions waited for
            return op

        t_plan = best_of(dask_plan, 2)
        op = dask_plan()
        u = (op @ v).compute()
        # every product the best of five, as the peer's
        operands = [(v * (1 + 1e-9 * i)).persist() for i in range(1, 6)]
        wait(operands)
        routed = iter(operands)
        t_routed = best_of(lambda: wait((op @ next(routed)).persist()), 5)
        planned = [to_plan_order(op, (v * (1 - 1e-9 * i))).persist() for i in range(1, 7)]
        wait(planned)
        in_plan = iter(planned)
        wait(planned_matmat(op, next(in_plan)).persist())
        t_planned = best_of(lambda: wait(planned_matmat(op, next(in_plan)).persist()), 5)
        P = op._plan.npartitions
    ref = LaplexOperator(xs, ys)
    t_numba_plan = best_of(lambda: LaplexOperator(xs, ys).prepare(), 2)
    ref.prepare()
    expected = ref @ vs
    t_numba = best_of(lambda: ref @ vs, 5)
    error = float(np.abs(u - expected).max() / np.abs(expected).max())
    rows = {
        "plan": (t_plan, t_numba_plan),
        "product in plan order": (t_planned, t_numba),
        "product with routing": (t_routed, t_numba),
    }
    print(f"  P = {P} partitions; largest difference from the Numba product {error:.1e}")
    ok = error <= 1e-10
    for name, (t, peer) in rows.items():
        ratio = t / peer
        ok &= ratio <= GOALS[name]
        mark = "ok" if ratio <= GOALS[name] else "above goal"
        print(
            f"  {name:<24} {fmt_seconds(t)}  Numba {fmt_seconds(peer)}  ratio {ratio:5.2f}  "
            f"(goal <= {GOALS[name]}: {mark})"
        )
    if json_path:
        with open(json_path, "w") as f:
            json.dump(
                {
                    "n": n,
                    "chunks": chunks,
                    "partitions": P,
                    "seed": seed,
                    "error": error,
                    "rows": {k: {"dask": t, "numba": p} for k, (t, p) in rows.items()},
                },
                f,
                indent=1,
            )
    return 0 if ok else 1
