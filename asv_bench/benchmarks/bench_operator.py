"""asv benchmarks of LaplexOperator and of the peers its speed is reported against.

Ratios, not absolute times, are what docs/benchmarks.md reports: compare ``OperatorSuite`` with
``PeerSuite`` rows of the same run (``asv run --python=same --quick``), and rows of
``OperatorSuite`` with each other, and ``FirstProductSuite`` (the first product after
``prepare()``, which on the CPU also lays out the product's merge counts, decays and scratch; the
plan alone is ``time_plan``) with ``time_matvec_cached``; float32 against float64 is the ``dtype``
parameter.
"""

import numba
import numpy as np

import laplexops as lx
from laplexops._load_bench import busy_small_product, interleaved_with_blas, training_step
from laplexops.backends import _numba_threads

SIZES = [10**4, 10**5, 10**6, 10**7]
DTYPES = ["float64", "float32"]


def _anchors(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random(n) * n).astype(dtype)
    y = (rng.random(n) * n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    return x, y, v


def _warm(dtype):
    """Load the compiled kernels for ``dtype``, their serial and their parallel builds, so that no
    timing includes the JIT or the loading of a cached build."""
    x, y, v = _anchors(5000, dtype, seed=1)  # above the radix sort's NumPy fallback size
    saved = _numba_threads.PARALLEL_MIN_WORK
    try:
        for threshold in (saved, 0):  # as small calls run, then as large ones do
            _numba_threads.PARALLEL_MIN_WORK = threshold
            op = lx.LaplexOperator(x, y).prepare()
            op @ v
            op.rmatvec(v)
            op.gradient(v, v)
    finally:
        _numba_threads.PARALLEL_MIN_WORK = saved


class OperatorSuite:
    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]
    timeout = 600

    def setup(self, n, dtype):
        _warm(dtype)
        self.x, self.y, self.v = _anchors(n, dtype)
        self.op = lx.LaplexOperator(self.x, self.y).prepare()
        self.op @ self.v
        self.op.rmatvec(self.v)
        self.phased = self.op.with_rate(1.0 + 1.0j)  # the same plan
        self.phased @ self.v
        s = np.sort(self.x)
        self.square = lx.LaplexOperator(s, s).prepare()
        self.square @ self.v

    def time_plan(self, n, dtype):
        lx.LaplexOperator(self.x, self.y).prepare()

    def time_matvec_fresh(self, n, dtype):
        lx.LaplexOperator(self.x, self.y) @ self.v

    def time_matvec_cached(self, n, dtype):
        self.op @ self.v

    def time_matvec_cached_phased(self, n, dtype):
        """Against ``time_matvec_cached``: a complex rate's product on the same plan."""
        self.phased @ self.v

    def time_matvec_cached_one_thread(self, n, dtype):
        """Against ``time_matvec_cached``: the speed-up of Numba's threads."""
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            self.op @ self.v
        finally:
            numba.set_num_threads(threads)

    def time_matvec_cached_sorted_square(self, n, dtype):
        self.square @ self.v

    def time_rmatvec_cached(self, n, dtype):
        self.op.rmatvec(self.v)

    def time_gradient_cached(self, n, dtype):
        self.op.gradient(self.v, self.v)

    def peakmem_matvec_fresh(self, n, dtype):
        lx.LaplexOperator(self.x, self.y) @ self.v


class FirstProductSuite:
    """The first product of a prepared operator, against ``OperatorSuite.time_matvec_cached``:
    with ``number = 1``, asv runs ``setup`` (a fresh operator, prepared) before every sample."""

    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 600

    def setup(self, n, dtype):
        _warm(dtype)
        self.x, self.y, self.v = _anchors(n, dtype)
        self.op = lx.LaplexOperator(self.x, self.y).prepare()

    def time_matvec_first_after_prepare(self, n, dtype):
        self.op @ self.v


class LoadSuite:
    """Products under load, as ratios (``laplexops._load_bench``): an n = 100 product on a busy
    machine against the same idle, and cached products right after BLAS calls against the
    products alone."""

    params = [10**5, 10**6]
    param_names = ["n"]
    timeout = 600
    unit = "ratio"

    def setup(self, n):
        _warm("float64")
        self.x, self.y, self.v = _anchors(n, "float64")
        self.op = lx.LaplexOperator(self.x, self.y).prepare()

    def track_busy_small_product_ratio(self, n):
        """(The same for every ``n``: the product is of n = 100.)"""
        idle, busy = busy_small_product()
        return busy / idle

    def track_blas_interleaved_ratio(self, n):
        alone, mixed = interleaved_with_blas(self.op, self.v)
        return mixed / alone


class TrainingStepSuite:
    """A training step (``with_anchors`` after 1% moves, matvec, gradient; float32) in a fresh
    process: its time, and its peak resident memory per anchor (the goal is 40 bytes at
    m = n = 1e8, which needs about 15 GB free: ``python -m laplexops bench --huge`` runs it)."""

    timeout = 900
    SIZES = [10**6, 10**7]
    params = SIZES
    param_names = ["n"]

    def setup_cache(self):
        return {n: training_step(n, "float32") for n in self.SIZES}

    def track_step_seconds(self, steps, n):
        return steps[n]["step"]

    track_step_seconds.unit = "seconds"

    def track_peak_bytes_per_anchor(self, steps, n):
        return steps[n]["bytes_per_anchor"]

    track_peak_bytes_per_anchor.unit = "bytes"


class PeerSuite:
    """The peers of docs/benchmarks.md, on the same sizes."""

    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]
    timeout = 600

    def setup(self, n, dtype):
        self.x, self.y, self.v = _anchors(n, dtype)
        self.merged = np.concatenate([self.x, self.y])

    def time_argsort_merged(self, n, dtype):
        np.argsort(self.merged)

    def time_rfft(self, n, dtype):
        np.fft.rfft(self.v)


class Celerite2Suite:
    """celerite2's ``RealTerm.dot`` on the sorted x anchors in float64 (skipped without
    celerite2): the peer of ``OperatorSuite.time_matvec_cached_sorted_square``."""

    params = [SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        try:
            import celerite2
        except ImportError:
            raise NotImplementedError("celerite2 is not installed") from None
        x, _, v = _anchors(n, np.float64)
        self.sorted = np.sort(x).astype(np.float64)
        self.v64 = v.astype(np.float64)
        self.zeros = np.zeros(n)
        self.term = celerite2.terms.RealTerm(a=1.0, c=1.0)

    def time_celerite2_dot_sorted(self, n):
        self.term.dot(self.sorted, self.zeros, self.v64)


class GpuSuite:
    """The CuPy backend against ``cupy.fft.fft`` (complex64, same length) in the same run; skipped
    (NotImplementedError in setup) without a CUDA device."""

    params = ([2**20, 2**24, 2**27],)
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        from laplexops.backends import available

        if "cupy" not in available():
            raise NotImplementedError("no CUDA device with CuPy")
        import cupy

        self.cupy = cupy
        rng = cupy.random.default_rng(0)
        self.x = rng.random(n, dtype=np.float32) * n
        self.y = rng.random(n, dtype=np.float32) * n
        self.v = rng.standard_normal(n, dtype=np.float32)
        self.signal = (self.v + 1j * self.v).astype(np.complex64)
        self.op = lx.LaplexOperator(self.x, self.y).prepare()
        self.op @ self.v
        lx.LaplexOperator(self.x[:5000], self.y[:5000]) @ self.v[:5000]  # compile the kernels
        cupy.cuda.Device().synchronize()

    def _sync(self):
        self.cupy.cuda.Device().synchronize()

    def time_fresh_matvec(self, n):
        lx.LaplexOperator(self.x, self.y) @ self.v
        self._sync()

    def time_cached_matvec(self, n):
        self.op @ self.v
        self._sync()

    def time_plan(self, n):
        lx.LaplexOperator(self.x, self.y).prepare()
        self._sync()

    def time_peer_cupy_argsort(self, n):
        self.cupy.argsort(self.x)
        self.cupy.argsort(self.y)
        self._sync()

    def time_gradient(self, n):
        self.op.gradient(self.v, self.v)
        self._sync()

    def time_peer_cupy_fft(self, n):
        self.cupy.fft.fft(self.signal)
        self._sync()
