"""Exact, stable argsort of finite 1-D float arrays by LSD radix sort (Numba).

Each float is mapped to an unsigned integer with the same order (``uint32``
for float32, ``uint64`` for float64): negatives have all bits flipped,
non-negatives get the sign bit set, and ``-0.0`` is first canonicalised to
``+0.0`` so that the two zeros compare equal and keep their input order.
The integer keys are then sorted least-significant digit first, carrying an
``int32`` index payload, with one up-front pass that counts every digit's
histogram.  A digit that is equal for all keys (its histogram has a single
non-empty bucket) is skipped, which is common when values lie in a narrow
range.  Every pass is a stable counting scatter, so the result is identical
to ``np.argsort(keys, kind="stable")``.

Inputs must be finite; NaN is not handled.  Below ``NUMPY_BELOW`` elements (by
dtype) the module defers to NumPy's stable sort, which is faster there, and
likewise from ``2**31`` elements on, where the int32 payload would overflow.

Where NumPy's default sort (SIMD sorting networks on AVX-512 and AVX2 machines)
beats the radix sort, large inputs go to it instead: whether it does is
measured once per process and dtype (:func:`numpy_sorts_faster`), not read
from the CPU's name.  Its permutation is then made stable (each run of equal
values' indices in ascending order, ``-0.0`` as ``+0.0``), so that both ways
give the same permutation and the same sorted values, bit for bit.
"""

import threading
import time

import numba
import numpy as np
from numba import njit, prange

from ._numba_memory import POOL
from ._numba_threads import kernel

__all__ = ["argsort", "argsort_two", "is_sorted", "numpy_sorts_faster", "repair"]

#: sizes below which NumPy's stable sort beats the radix sort, by dtype (measured crossovers)
NUMPY_BELOW = {np.dtype(np.float32): 2048, np.dtype(np.float64): 4096}
#: the size from which NumPy's default sort may take over (see numpy_sorts_faster)
MEASURED_FROM = 1 << 17
#: per dtype: whether NumPy's default sort is the faster one here (filled on first use)
NUMPY_FASTER: dict = {}
_CALIBRATION = threading.Lock()
_DIGIT_BITS = 8
_RADIX = 1 << _DIGIT_BITS
_MASK = np.uint64(_RADIX - 1)
_UINT_OF = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


@njit(cache=True, nogil=True)
def _digit(key, p):
    """Return digit ``p`` (``_DIGIT_BITS`` wide, least significant first) of ``key``."""
    return np.intp((key >> np.uint64(p * _DIGIT_BITS)) & _MASK)


@njit(cache=True, nogil=True)
def _keys_and_counts(bits, sign, keys, counts):
    """Map float bit patterns to order-preserving ``keys`` and count all digits.

    Fills ``counts[p, d]`` (zeroed by the caller) with the number of keys
    whose digit ``p`` equals ``d``.  Returns whether the keys are already
    non-decreasing.  O(n * npasses) time, one read of ``bits``.
    """
    ascending = True
    prev = sign ^ sign  # zero of the key dtype
    for i in range(bits.size):
        u = bits[i]
        k = ~u if u > sign else u | sign  # u == sign is -0.0: maps to +0.0
        ascending &= k >= prev
        prev = k
        keys[i] = k
        for p in range(counts.shape[0]):
            counts[p, _digit(k, p)] += 1
    return ascending


@njit(cache=True, nogil=True)
def _unkey(k, sign):
    """The float bit pattern of key ``k`` (the inverse of the map above; ``-0.0`` comes back as
    ``+0.0``)."""
    return k ^ sign if k & sign else ~k


@njit(cache=True, nogil=True)
def _scatter(src_k, src_i, dst_k, dst_i, offsets, p, dst_v=None, sign=0):
    """Stable counting scatter of ``src_k``/``src_i`` by digit ``p``.

    ``offsets`` holds each bucket's start in the destination and is consumed.
    ``src_i=None`` means the identity payload; ``dst_k=None`` skips writing
    keys (last pass); ``dst_v``, when given, receives the keys as float bit
    patterns (the sorted values; ``sign`` is the sign bit).  The ``None``
    branches are pruned at compile time.  O(n) time.
    """
    for j in range(src_k.size):
        k = src_k[j]
        d = _digit(k, p)
        pos = offsets[d]
        offsets[d] = pos + 1
        if dst_k is not None:
            dst_k[pos] = k
        if dst_v is not None:
            dst_v[pos] = _unkey(k, sign)
        if src_i is None:
            dst_i[pos] = j
        else:
            dst_i[pos] = src_i[j]


@njit(cache=True, nogil=True)
def _exclusive_cumsum(counts):
    """Return the exclusive prefix sum of ``counts``.  O(len(counts))."""
    offsets = np.empty_like(counts)
    total = 0
    for d in range(counts.size):
        offsets[d] = total
        total += counts[d]
    return offsets


@njit(cache=True, nogil=True)
def _radix_argsort_into(bits, sign, out, work, values):
    """Write into int32 ``out`` the stable argsort of the floats whose bit
    patterns are ``bits``, using the buffers ``work`` from :func:`_workspace`,
    and into ``values`` (same dtype as ``bits``; empty: not wanted) the bit
    patterns in sorted order, written by the last pass (no gather after it).

    Runs one counting pass plus one scatter pass per digit that is not
    constant over all keys (none if the keys are already sorted):
    O(n * npasses) time.
    """
    src_k, dst_k, src_i, dst_i, counts = work
    n = bits.size
    if _keys_and_counts(bits, sign, src_k, counts):
        out[:] = np.arange(n)
        if values.size:
            values[:] = bits
        return
    # Unsorted keys are not all equal, so at least one digit varies.
    active = [p for p in range(counts.shape[0]) if counts[p, _digit(src_k[0], p)] != n]
    if len(active) == 1:
        src_i = None
    else:
        p = active[0]
        _scatter(src_k, None, dst_k, dst_i, _exclusive_cumsum(counts[p]), p)
        for p in active[1:-1]:
            src_k, dst_k = dst_k, src_k
            src_i, dst_i = dst_i, src_i
            _scatter(src_k, src_i, dst_k, dst_i, _exclusive_cumsum(counts[p]), p)
        src_k, src_i = dst_k, dst_i
    p = active[-1]
    offsets = _exclusive_cumsum(counts[p])
    if values.size:
        _scatter(src_k, src_i, None, out, offsets, p, values, sign)
    else:
        _scatter(src_k, src_i, None, out, offsets, p)


@kernel
def _radix_argsort_two(
    bits_a, sign_a, out_a, work_a, values_a, bits_b, sign_b, out_b, work_b, values_b
):  # pragma: no cover - compiled
    """Run ``_radix_argsort_into`` on two arrays, concurrently (one thread each) in the parallel
    build, one after the other in the serial one."""
    for t in prange(2):
        if t == 0:
            _radix_argsort_into(bits_a, sign_a, out_a, work_a, values_a)
        else:
            _radix_argsort_into(bits_b, sign_b, out_b, work_b, values_b)


def _as_float_vector(keys):
    """Return ``keys`` as a contiguous 1-D float32/float64 array, or raise TypeError."""
    keys = np.ascontiguousarray(keys)
    if keys.dtype not in _UINT_OF or keys.ndim != 1:
        raise TypeError(f"expected a 1-D float32/float64 array, got {keys.dtype}, ndim={keys.ndim}")
    return keys


def _radix_args(keys):
    """Return ``(bits, sign)``: float vector ``keys`` viewed as unsigned ints, and the sign bit."""
    uint = _UINT_OF[keys.dtype]
    return keys.view(uint), uint(1 << (8 * keys.itemsize - 1))


def _use_numpy(keys, numpy_below):
    """Return whether ``keys`` should go to NumPy's stable sort: too small to
    gain from the radix sort (``numpy_below``, default ``NUMPY_BELOW``), or too
    long for its int32 payload."""
    small = NUMPY_BELOW[keys.dtype] if numpy_below is None else numpy_below
    return not small <= keys.size < 2**31


def _workspace(bits):
    """Allocate the output and scratch buffers for sorting ``bits``.

    Allocated outside Numba, from the backend's buffers kept for reuse
    (``_numba_memory``): an earlier sort's memory, whose pages need no first
    touch.
    """
    n = bits.size
    npasses = -(-8 * bits.itemsize // _DIGIT_BITS)
    work = (
        POOL.empty_like(bits),
        POOL.empty_like(bits),
        POOL.empty(n, np.int32),
        POOL.empty(n, np.int32),
        np.zeros((npasses, _RADIX), np.int64),
    )
    return POOL.empty(n, np.int32), work  # the radix sort takes n < 2^31


def _values_out(keys, with_values):
    """The sorted values' array for ``keys`` (empty when not wanted), and its bits view."""
    values = POOL.empty(keys.size if with_values else 0, keys.dtype)
    return values, values.view(_UINT_OF[keys.dtype])


def _sorted_values(perm, values, with_values):
    """``(perm, values)`` when ``with_values``, else ``perm``."""
    return (perm, values) if with_values else perm


def argsort(keys, numpy_below=None, with_values=False):
    """Return the stable ascending argsort of a 1-D float32/float64 array.

    Equal to ``np.argsort(keys, kind="stable")`` for finite input, with
    ``-0.0 == +0.0``.  Returns a permutation (int32 from the radix sort, int64
    from NumPy's), or with ``with_values``
    the pair ``(perm, keys[perm])`` (the values written by the sort's last
    pass, ``-0.0`` as ``+0.0``).  O(n) time (a fixed number of radix passes),
    O(n) extra memory; NumPy's sort for inputs shorter than ``numpy_below``
    (default: ``NUMPY_BELOW`` of the dtype).
    """
    keys = _as_float_vector(keys)
    if _use_numpy(keys, numpy_below):
        perm = np.argsort(keys, kind="stable").astype(np.int64, copy=False)
        return _sorted_values(perm, keys[perm] if with_values else None, with_values)
    if _default_sort_wins(keys):
        return _sorted_values(*_numpy_stable_argsort(keys), with_values)
    bits, sign = _radix_args(keys)
    out, work = _workspace(bits)
    values, value_bits = _values_out(keys, with_values)
    _radix_argsort_into(bits, sign, out, work, value_bits)
    return _sorted_values(out, values, with_values)


def argsort_two(a, b, numpy_below=None, with_values=False):
    """Return ``(argsort(a), argsort(b))``, sorting the two arrays in parallel
    (each a pair ``(perm, sorted values)`` with ``with_values``, as :func:`argsort`).

    ``a`` and ``b`` may differ in length and in dtype (float32/float64 each).
    When both are large they are sorted concurrently on two threads (when
    together they reach ``PARALLEL_MIN_WORK``, see ``_numba_threads``);
    otherwise sequentially.  Same complexity as two calls to :func:`argsort`;
    ``numpy_below`` as there.
    """
    a, b = _as_float_vector(a), _as_float_vector(b)
    if _use_numpy(a, numpy_below) or _use_numpy(b, numpy_below):
        return argsort(a, numpy_below, with_values), argsort(b, numpy_below, with_values)
    if _default_sort_wins(a) and _default_sort_wins(b):
        if numba.get_num_threads() == 1:
            return argsort(a, numpy_below, with_values), argsort(b, numpy_below, with_values)
        # one sort on a thread of its own, one here: NumPy's sort and _stabilise release the GIL
        later = _Later(_numpy_stable_argsort, b)
        first = _numpy_stable_argsort(a)
        return (
            _sorted_values(*first, with_values),
            _sorted_values(*later.result(), with_values),
        )
    bits_a, sign_a = _radix_args(a)
    bits_b, sign_b = _radix_args(b)
    out_a, work_a = _workspace(bits_a)
    out_b, work_b = _workspace(bits_b)
    values_a, value_bits_a = _values_out(a, with_values)
    values_b, value_bits_b = _values_out(b, with_values)
    _radix_argsort_two(
        bits_a,
        sign_a,
        out_a,
        work_a,
        value_bits_a,
        bits_b,
        sign_b,
        out_b,
        work_b,
        value_bits_b,
        work=a.size + b.size,
    )
    return (
        _sorted_values(out_a, values_a, with_values),
        _sorted_values(out_b, values_b, with_values),
    )


@njit(cache=True, nogil=True)
def _stabilise(keys, perm, out, values):  # pragma: no cover - compiled
    """From an unstable argsort ``perm`` of ``keys``: ``values = keys[perm]`` (``-0.0`` as
    ``+0.0``) and ``out`` the stable argsort (each run of equal values' indices ascending), the
    runs looked for only when the gather met two equal neighbours. O(n) apart from sorting the
    runs."""
    n = perm.shape[0]
    ties = False
    previous = np.nan  # (the keys are finite)
    for i in range(n):
        p = perm[i]
        value = keys[p] + 0  # -0.0 + 0 is +0.0
        values[i] = value
        out[i] = p
        ties |= value == previous
        previous = value
    if not ties:  # the runs' pass only where there are runs
        return
    start = 0
    for i in range(1, n + 1):
        if i == n or values[i] != values[start]:
            if i - start > 1:
                out[start:i] = np.sort(out[start:i])
            start = i


class _Later:
    """``func(arg)`` run on a new thread; :meth:`result` waits for it (and raises what it raised).
    A thread per call, not a pool: nothing to go stale in a forked child, and starting one costs
    far less than the sorts it runs."""

    def __init__(self, func, arg):
        self._out: list = []
        self._thread = threading.Thread(target=self._run, args=(func, arg), daemon=True)
        self._thread.start()

    def _run(self, func, arg):
        try:
            self._out.append((True, func(arg)))
        except BaseException as error:  # handed to the caller of result()
            self._out.append((False, error))

    def result(self):
        self._thread.join()
        ok, value = self._out[0]
        if not ok:
            raise value
        return value


def _numpy_stable_argsort(keys):
    """``(perm, keys[perm])`` for a stable ``perm`` (int32), by NumPy's default sort and
    :func:`_stabilise`."""
    perm = np.argsort(keys)
    out = POOL.empty(keys.size, np.int32)
    values = POOL.empty_like(keys)
    _stabilise(keys, perm, out, values)
    return out, values


def _default_sort_wins(keys) -> bool:
    """Whether ``keys`` go to NumPy's default sort: long enough (``MEASURED_FROM``) and of a dtype
    for which :func:`numpy_sorts_faster`."""
    return keys.size >= MEASURED_FROM and numpy_sorts_faster(keys.dtype)


def numpy_sorts_faster(dtype) -> bool:
    """Whether NumPy's default sort, made stable, beats the radix sort on this machine for
    ``dtype``: both timed once per process (best of three on ``MEASURED_FROM`` random values,
    about 0.1 s), the answer kept in ``NUMPY_FASTER``."""
    dtype = np.dtype(dtype)
    with _CALIBRATION:
        if dtype not in NUMPY_FASTER:
            keys = np.random.default_rng(0).standard_normal(MEASURED_FROM).astype(dtype)
            bits, sign = _radix_args(keys)

            def radix():
                out, work = _workspace(bits)
                values, value_bits = _values_out(keys, True)
                _radix_argsort_into(bits, sign, out, work, value_bits)

            NUMPY_FASTER[dtype] = _best_time(lambda: _numpy_stable_argsort(keys)) < _best_time(
                radix
            )
    return NUMPY_FASTER[dtype]


def _best_time(run) -> float:
    """The shortest of three timed calls of ``run`` after one untimed."""
    run()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@njit(cache=True, nogil=True)
def _is_sorted(keys):
    """Return whether ``keys`` is non-decreasing; stops at the first descent."""
    for i in range(1, keys.size):
        if keys[i] < keys[i - 1]:
            return False
    return True


def is_sorted(keys):
    """Return whether 1-D real ``keys`` is ascending (non-decreasing).  O(n), early exit."""
    return bool(_is_sorted(np.asarray(keys)))


@njit(cache=True, nogil=True)
def _insertion_repair(values, perm, budget):
    moves = 0
    for i in range(1, values.shape[0]):
        v = values[i]
        p = perm[i]
        j = i - 1
        while j >= 0 and (values[j] > v or (values[j] == v and perm[j] > p)):
            values[j + 1] = values[j]
            perm[j + 1] = perm[j]
            j -= 1
        moves += i - 1 - j
        values[j + 1] = v
        perm[j + 1] = p
        if moves > budget:
            return False
    return True


def repair(values, perm, budget):
    """Sort ``values`` in place by insertion, permuting ``perm`` alongside; ties by ``perm`` (the
    original indices), which is the order of a fresh plan (a stable argsort).

    For a previous sorting order applied to anchors that moved a little: O(n + moves). Gives up and
    returns False (leaving both arrays scrambled) once more than ``budget`` element moves were
    needed; True when ``values`` is sorted.
    """
    return bool(_insertion_repair(values, perm, budget))
