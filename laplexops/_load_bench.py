"""Products under load, for ``python -m laplexops bench`` and asv (not used by the library).

Three situations that a quiet benchmark does not show:

- *a busy machine*: a small product called every few milliseconds while busy processes outnumber
  the cores two to one, against the same calls on an idle machine (medians of the calls);
- *products between BLAS calls*: cached products each preceded by a threaded BLAS matrix product
  in the same process (as in an optimizer that steps between products), against the products
  alone (medians); also in a fresh process with ``OPENBLAS_THREAD_TIMEOUT=4``, the remedy the user
  guide gives (OpenBLAS's workers otherwise spin for a tenth of a second after each call);
- *a training step at scale*: re-plan after anchors move by 1% of their spacing, a matvec and a
  gradient, in a fresh process, timed, with the process's peak resident memory per anchor.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np

__all__ = [
    "busy_small_product",
    "interleaved_with_blas",
    "interleaved_with_blas_in",
    "training_step",
]


def _median_call(fn: Callable[[], object], calls: int, pause: float) -> float:
    """The median time of ``calls`` calls of ``fn``, ``pause`` seconds apart."""
    times = []
    for _ in range(calls):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def busy_small_product(
    n: int = 100, calls: int = 400, pause: float = 0.002, per_core: int = 2, seed: int = 0
) -> tuple[float, float]:
    """``(idle, busy)``: the median time of an ``n``-anchor cached matvec called every ``pause``
    seconds, on the machine as it is, then while ``per_core`` busy processes per usable core
    spin."""
    from . import LaplexOperator

    rng = np.random.default_rng(seed)
    x, y, v = rng.random(n) * n, rng.random(n) * n, rng.standard_normal(n)
    op = LaplexOperator(x, y).prepare()
    op @ v
    product = lambda: op @ v  # noqa: E731
    idle = _median_call(product, calls, pause)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(per_core * (cores or 1))
    ]
    try:
        time.sleep(0.2)  # the spinners up and running
        busy = _median_call(product, calls, pause)
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()
    return idle, busy


def interleaved_with_blas(
    op, v, calls: int = 20, blas_size: int = 300, seed: int = 0
) -> tuple[float, float]:
    """``(alone, interleaved)``: the median time of ``op @ v``, called back to back, and called
    each right after a ``blas_size``-square matrix product (NumPy's BLAS, its own threads)."""
    a = np.random.default_rng(seed).standard_normal((blas_size, blas_size))
    op @ v
    alone = _median_call(lambda: op @ v, calls, 0.0)
    times = []
    for _ in range(calls):
        a @ a
        t0 = time.perf_counter()
        op @ v
        times.append(time.perf_counter() - t0)
    return alone, statistics.median(times)


_INTERLEAVED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import laplexops as lx
    from laplexops._load_bench import interleaved_with_blas

    n, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(seed)
    x, y, v = rng.random(n) * n, rng.random(n) * n, rng.standard_normal(n)
    print(json.dumps(interleaved_with_blas(lx.LaplexOperator(x, y).prepare(), v)))
    """
)


def interleaved_with_blas_in(env: dict[str, str], n: int, seed: int = 0) -> tuple[float, float]:
    """:func:`interleaved_with_blas` for an operator of ``n`` random anchors per side, in a fresh
    process whose environment adds ``env`` (settings that BLAS and OpenMP read when they load)."""
    done = subprocess.run(
        [sys.executable, "-c", _INTERLEAVED, str(n), str(seed)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the interleaved products failed:\n{done.stderr[-2000:]}")
    alone, mixed = json.loads(done.stdout.strip().splitlines()[-1])
    return alone, mixed


_STEP = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import laplexops as lx

    n, dtype, seed = int(sys.argv[1]), np.dtype(sys.argv[2]), int(sys.argv[3])
    small = lx.LaplexOperator(np.arange(5000.0, dtype=dtype), np.arange(5000.0, dtype=dtype))
    small.gradient(np.ones(5000, dtype), small @ np.ones(5000, dtype))  # the JIT, untimed
    rng = np.random.default_rng(seed)
    x = (rng.random(n) * n).astype(dtype)
    y = (rng.random(n) * n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    t0 = time.perf_counter()
    op = lx.LaplexOperator(x, y).prepare()
    plan = time.perf_counter() - t0
    out = op @ v
    del out
    x += (rng.uniform(-0.01, 0.01, n)).astype(dtype)  # 1% of the mean spacing (1)
    y += (rng.uniform(-0.01, 0.01, n)).astype(dtype)
    t0 = time.perf_counter()
    op = op.with_anchors(x, y)
    g = op @ v
    grads = op.gradient(v, g)
    step = time.perf_counter() - t0
    del grads, g
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"plan": plan, "step": step, "peak": peak}))
    """
)


def training_step(n: int, dtype: str = "float64", seed: int = 0) -> dict:
    """One training step of an operator with ``m = n`` anchors, in a fresh process: the first
    plan's time ``plan``, the step's time ``step`` (``with_anchors`` after 1% moves, a matvec and
    a gradient), and the process's peak resident memory ``peak`` in bytes, with
    ``bytes_per_anchor`` = ``peak / (2 n)``."""
    done = subprocess.run(
        [sys.executable, "-c", _STEP, str(n), dtype, str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the training step at n = {n} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["bytes_per_anchor"] = result["peak"] / (2 * n)
    return result
