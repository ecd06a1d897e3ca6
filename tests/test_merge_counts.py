"""The plan's merge counts against ``np.searchsorted``, including chunk boundaries inside tie
runs."""

import numpy as np
import pytest

from laplexops.backends._numba_plan import merge_counts


@pytest.mark.parametrize("values", [3, 50, 10**9], ids=["heavy-ties", "ties", "distinct"])
@pytest.mark.parametrize("m,n", [(200_001, 150_000), (70_000, 3), (1, 100_000), (0, 5), (5, 0)])
def test_merge_counts_match_searchsorted(rng, values, m, n):
    rs = np.sort(rng.integers(0, values, m)).astype(np.float64)
    cs = np.sort(rng.integers(0, values, n)).astype(np.float64)
    lo = np.empty(m, np.int64)
    hi = np.empty(m, np.int64)
    merge_counts(rs, cs, lo, hi)
    np.testing.assert_array_equal(lo, np.searchsorted(cs, rs, side="left"))
    np.testing.assert_array_equal(hi, np.searchsorted(cs, rs, side="right"))
