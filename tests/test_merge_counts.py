"""The plan's merge counts against ``np.searchsorted``, including chunk and lane boundaries inside
tie runs, and walks of very different lengths side by side."""

import numpy as np
import pytest

from laplexops.backends import _numba_threads
from laplexops.backends._numba_plan import merge_counts


def check(rs, cs, serial=False, monkeypatch=None):
    if serial:
        monkeypatch.setattr(_numba_threads, "PARALLEL_MIN_WORK", 1 << 62)
    lo = np.empty(rs.shape[0], np.int64)
    hi = merge_counts(rs, cs, lo)
    np.testing.assert_array_equal(lo, np.searchsorted(cs, rs, side="left"))
    np.testing.assert_array_equal(hi, np.searchsorted(cs, rs, side="right"))
    tied = bool(np.isin(rs, cs).any())
    assert (hi is not lo) if tied else (hi is lo)


@pytest.mark.parametrize("values", [3, 50, 10**9], ids=["heavy-ties", "ties", "distinct"])
@pytest.mark.parametrize(
    "m,n", [(200_001, 150_000), (70_000, 3), (1, 100_000), (0, 5), (5, 0), (3, 7), (6, 200_000)]
)
def test_merge_counts_match_searchsorted(rng, values, m, n):
    rs = np.sort(rng.integers(0, values, m)).astype(np.float64)
    cs = np.sort(rng.integers(0, values, n)).astype(np.float64)
    check(rs, cs)


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial"])
def test_merge_counts_of_clustered_float32_anchors(rng, monkeypatch, serial):
    """Rows in a few tight clusters among spread columns: the interleaved walks of a chunk take
    very different numbers of steps. Float32 values tie often."""
    m, n = 150_000, 120_000
    centres = rng.uniform(0, 1e6, 5)
    rs = np.sort(rng.choice(centres, m) + rng.integers(0, 200, m)).astype(np.float32)
    cs = np.sort(rng.uniform(0, 1e6, n)).astype(np.float32)
    check(rs, cs, serial, monkeypatch)


def test_no_columns_count_zero():
    lo = np.full(4, -1, np.int64)
    assert merge_counts(np.arange(4.0), np.empty(0), lo) is lo
    np.testing.assert_array_equal(lo, 0)
