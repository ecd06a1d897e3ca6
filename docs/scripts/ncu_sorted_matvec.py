"""Three cached sorted matvecs at m = n = 2^26 float32; the profiler range covers the third."""

import cupy
import numpy as np

from laplexops import LaplexOperator

n = 2**26
rng = cupy.random.default_rng(7)
x = cupy.sort(rng.random(n, dtype=np.float32) * n)
y = cupy.sort(rng.random(n, dtype=np.float32) * n)
v = rng.standard_normal(n, dtype=np.float32)
op = LaplexOperator(x, y, 1.0)
op.matvec(v)
op.matvec(v)
cupy.cuda.Device().synchronize()
cupy.cuda.profiler.start()
op.matvec(v)
cupy.cuda.Device().synchronize()
cupy.cuda.profiler.stop()
