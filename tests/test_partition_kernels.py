"""The CPU kernels under the Dask backend's partitions: range assignment by cut points (against
``np.searchsorted``) and the end states of the column scans (against direct float64 sums)."""

from __future__ import annotations

import numpy as np
import pytest

from laplexops.backends import Side, get_backend
from laplexops.backends._numba_ranges import range_stats, scatter_by_range


@pytest.mark.parametrize("cuts", [0, 1, 2, 3, 7, 31, 257, 4000])
def test_range_stats_matches_searchsorted(rng, cuts):
    # integer-valued data: many values tie with the cut points and with each other
    splitters = np.unique(rng.integers(-50, 50, cuts).astype(np.float64))
    z = rng.integers(-60, 60, 3001).astype(np.float64) + rng.choice([0.0, 0.5], 3001)
    P = splitters.shape[0] + 1
    ranges = np.empty(z.shape[0], np.int32)
    counts = np.zeros(P, np.int64)
    least, greatest = np.full(P, np.inf), np.full(P, -np.inf)
    range_stats(z, splitters, ranges, counts, least, greatest)
    ref = np.searchsorted(splitters, z, side="right")
    np.testing.assert_array_equal(ranges, ref)
    np.testing.assert_array_equal(counts, np.bincount(ref, minlength=P))
    for p in range(P):
        inside = z[ref == p]
        assert least[p] == (inside.min() if inside.size else np.inf)
        assert greatest[p] == (inside.max() if inside.size else -np.inf)


def test_scatter_by_range_is_a_stable_counting_sort(rng):
    splitters = np.array([-0.5, 0.0, 0.25])
    z = rng.choice([-1.0, -0.5, 0.0, 0.1, 0.25, 2.0], 500)
    ranges = np.empty(z.shape[0], np.int32)
    counts = np.zeros(4, np.int64)
    range_stats(z, splitters, ranges, counts, np.full(4, np.inf), np.full(4, -np.inf))
    out = np.empty((z.shape[0], 2))
    scatter_by_range(z, ranges, 7, np.cumsum(counts) - counts, out)
    order = np.argsort(ranges, kind="stable")
    np.testing.assert_array_equal(out[:, 0], z[order])
    np.testing.assert_array_equal(out[:, 1], 7 + order)


@pytest.mark.parametrize("rate", [0.7, 2 - 1.5j])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("n", [1, 2, 5, 9, 40])
@pytest.mark.parametrize("moment", [False, True])
def test_scan_ends_against_direct_sums(rng, rate, k, n, moment):
    numba = get_backend("numba", "cpu")
    cols = np.sort(rng.uniform(0, 8, n + 3))
    cols[1] = cols[2]  # a tie among the columns
    rows = rng.uniform(0, 8, 4)
    plan = numba.plan(rows, cols)
    start = 2 if n + 3 > 4 else 0
    stop = start + n
    b = rng.standard_normal((n, k)) + (1j * rng.standard_normal((n, k)) if k == 3 else 0)
    ends = numba.scan_ends(plan, Side.ROWS_X, rate, b, start, moment)
    part = cols[start:stop]
    gap_f = part[-1] - part  # distances to the last column, to the first one
    gap_b = part - part[0]
    w_f, w_b = np.exp(-rate * gap_f)[:, None], np.exp(-rate * gap_b)[:, None]
    ref = [
        (w_f * b).sum(0),
        (gap_f[:, None] * w_f * b).sum(0) if moment else 0 * b[0],
        (w_b * b).sum(0),
        (gap_b[:, None] * w_b * b).sum(0) if moment else 0 * b[0],
    ]
    for got, want in zip(ends, ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(b).sum())
