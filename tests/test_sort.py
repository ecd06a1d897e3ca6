"""Tests for the Numba radix argsort: exact agreement with NumPy's stable argsort."""

import numpy as np
import pytest

from laplexops.backends import _numba_sort
from laplexops.backends._numba_sort import argsort, argsort_two, is_sorted

SIZES = [0, 1, 2, 100, 3000, 5000, 200_000]
DTYPES = [np.float32, np.float64]


def _inputs(rng, n, dtype):
    """Yield ``(name, keys)`` pairs covering the cases a radix sort can get wrong."""
    big = 300.0 if dtype == np.float64 else 37.0
    yield "uniform", rng.random(n) * 1000
    yield "normal", rng.standard_normal(n)
    yield "ties", rng.integers(0, 10, n).astype(float)
    yield "negative ties", rng.integers(-5, 5, n).astype(float)
    yield "signed zeros", rng.choice([-0.0, 0.0, 1.0, -1.0], n)
    yield "wide range", rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-big, big, n)
    yield "+-1e8", rng.uniform(-1e8, 1e8, n)
    yield "narrow", 100 + rng.random(n) * 1e-3
    yield "constant", np.full(n, 3.5)
    yield "sorted", np.sort(rng.random(n))
    yield "reversed", np.sort(rng.random(n))[::-1]


def _check(keys, perm):
    """Assert ``perm`` is exactly NumPy's stable argsort of ``keys``, as an integer array wide
    enough for its length (int32 from the radix sort)."""
    assert perm.dtype in (np.int32, np.int64)
    np.testing.assert_array_equal(perm, np.argsort(keys, kind="stable"))


@pytest.fixture(params=[False, True], ids=["default", "radix-only"])
def force_radix(request):
    """Options of the sorts: none, or no small-input NumPy fallback so tiny inputs hit the radix
    path."""
    return {"numpy_below": 0} if request.param else {}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_argsort_matches_numpy_stable(force_radix, n, dtype, rng):
    for _, keys in _inputs(rng, n, dtype):
        keys = keys.astype(dtype)
        _check(keys, argsort(keys, **force_radix))


@pytest.mark.parametrize(
    "dtypes", [(np.float64, np.float64), (np.float32, np.float32), (np.float64, np.float32)]
)
def test_argsort_two_matches_numpy_stable(force_radix, dtypes, rng):
    for (_, a), (_, b) in zip(_inputs(rng, 100_000, dtypes[0]), _inputs(rng, 60_001, dtypes[1])):
        a, b = a.astype(dtypes[0]), b[::-1].astype(dtypes[1])
        pa, pb = argsort_two(a, b, **force_radix)
        _check(a, pa)
        _check(b, pb)


def test_argsort_two_mixed_sizes(rng):
    a, b = rng.random(10), rng.standard_normal(50_000)
    for x, y in [(a, b), (b, a)]:
        px, py = argsort_two(x, y)
        _check(x, px)
        _check(y, py)


def test_strided_input(rng):
    keys = rng.standard_normal(20_000)[::2]
    _check(keys, argsort(keys))


def test_signed_zeros_are_equal_and_stable(force_radix):
    keys = np.array([0.0, -0.0, -1.0, 0.0, -0.0, 1.0])
    np.testing.assert_array_equal(argsort(keys, **force_radix), [2, 0, 1, 3, 4, 5])


def test_rejects_non_float_input():
    with pytest.raises(TypeError):
        argsort(np.arange(10))
    with pytest.raises(TypeError):
        argsort(np.zeros((2, 2)))


def test_is_sorted(rng):
    x = np.sort(rng.standard_normal(10_000))
    assert is_sorted(x) and is_sorted(x[:0]) and is_sorted(x[:1])
    assert is_sorted(np.array([1.0, 1.0, 2.0]))
    assert not is_sorted(np.array([1.0, 2.0, 1.5]))
    y = x.copy()
    y[5000] = y[4999] - 1.0
    assert not is_sorted(y)


def _check_values(keys, perm, values):
    """``values`` is ``keys[perm]`` with ``-0.0`` read as ``+0.0``: the same bits elsewhere."""
    assert values.dtype == keys.dtype and values.shape == keys.shape
    want = keys[perm]
    want = np.where(want == 0, np.zeros_like(want), want)  # -0.0 -> +0.0 ...
    got = np.where(values == 0, np.zeros_like(values), values)  # ... on both sides
    assert got.tobytes() == want.tobytes()
    # and -0.0 never turns into anything but a zero, nor a zero into anything else
    assert np.array_equal(values == 0, keys[perm] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_sorted_values_come_with_the_permutation(force_radix, n, dtype, rng):
    """``with_values``: the sort's last pass writes the sorted values (no gather after it), for
    every input kind, through the radix path and NumPy's fallback, one array or two at once."""
    for _, keys in _inputs(rng, n, dtype):
        keys = keys.astype(dtype)
        perm, values = argsort(keys, with_values=True, **force_radix)
        _check(keys, perm)
        _check_values(keys, perm, values)
        other = keys[::-1].copy()
        (pa, va), (pb, vb) = argsort_two(keys, other, with_values=True, **force_radix)
        _check(keys, pa)
        _check_values(keys, pa, va)
        _check(other, pb)
        _check_values(other, pb, vb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_radix_ways_agree_bitwise(dtype, rng, monkeypatch):
    """Large inputs go to NumPy's default sort made stable where it is faster here, else to the
    radix sort: both give the stable permutation and the same sorted values, -0.0 as +0.0."""
    n = _numba_sort.MEASURED_FROM + int(rng.integers(1, 5000))
    pool = rng.standard_normal(int(rng.integers(2, 3000)))
    a = rng.choice(pool, n).astype(dtype)  # long runs of ties
    a[rng.integers(0, n, 100)] = -0.0
    a[rng.integers(0, n, 100)] = 0.0
    b = rng.standard_normal(n + 17).astype(dtype)
    results = []
    for numpy_faster in (True, False):
        monkeypatch.setitem(_numba_sort.NUMPY_FASTER, np.dtype(dtype), numpy_faster)
        results.append((argsort_two(a, b, with_values=True), argsort(a, with_values=True)))
    ((pa, va), (pb, vb)), (p1, v1) = results[0]
    ((ra, wa), (rb, wb)), (r1, w1) = results[1]
    for perm, values, keys in ((pa, va, a), (pb, vb, b), (p1, v1, a)):
        _check(keys, perm)
        np.testing.assert_array_equal(values, keys[perm])
        assert not np.signbit(values[values == 0]).any()
    for ours, theirs in ((pa, ra), (pb, rb), (p1, r1), (va, wa), (vb, wb), (v1, w1)):
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()


def test_the_faster_sort_is_measured_once(monkeypatch):
    monkeypatch.setattr(_numba_sort, "NUMPY_FASTER", {})
    first = _numba_sort.numpy_sorts_faster(np.float64)
    assert isinstance(first, bool) and _numba_sort.NUMPY_FASTER == {np.dtype(np.float64): first}
    assert _numba_sort.numpy_sorts_faster("float64") is first


def test_the_second_sorts_thread_hands_back_its_error():
    def fail(_):
        raise MemoryError("no room")

    later = _numba_sort._Later(fail, None)
    with pytest.raises(MemoryError, match="no room"):
        later.result()
    assert _numba_sort._Later(np.sort, np.array([2.0, 1.0])).result().tolist() == [1.0, 2.0]
