"""Where the Gram's nll_and_gradient spends its time at n = 3e6, batch 8, float32 and n = 1e8."""

import sys
import time

import cupy
import numpy as np

from laplexops import LaplexGram

rng = cupy.random.default_rng(3)
for size, batch in ((3_000_000, 8), (100_000_000, 1)):
    a = rng.random(size, dtype=np.float32) * size
    X = rng.standard_normal((batch, size), dtype=np.float32)
    G = LaplexGram(a, 1.0, noise=0.1)
    for _ in range(3):
        G.with_params().nll_and_gradient(X)
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        G.with_params().nll_and_gradient(X)
    t1 = time.perf_counter()
    cupy.cuda.Device().synchronize()
    t2 = time.perf_counter()
    issue, wall = (t1 - t0) / 5 * 1e3, (t2 - t0) / 5 * 1e3
    print(f"n={size} batch={batch}: host issue {issue:.2f} ms, wall {wall:.2f} ms per call")
    if "--profile" in sys.argv:
        cupy.cuda.profiler.start()
        G.with_params().nll_and_gradient(X)
        cupy.cuda.Device().synchronize()
        cupy.cuda.profiler.stop()
    del a, X, G
    cupy.get_default_memory_pool().free_all_blocks()
