"""The CPU backend's own ``exp`` and ``expm1`` of non-positive arguments (``_numba_exp``), which
every real decay goes through, against NumPy's (libm's): within two ulps everywhere, exact at the
ends."""

import numpy as np
import pytest

from laplexops.backends import _numba_exp


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(np.maximum(np.abs(want), np.finfo(np.float64).tiny))


@pytest.mark.parametrize("minus_one", [False, True], ids=["exp", "expm1"])
def test_exponentials_match_libm(rng, minus_one):
    x = -np.concatenate(
        [
            rng.uniform(0.0, 1e-300, 1000),
            10.0 ** rng.uniform(-20, 0, 20000),  # tiny to one, where expm1 must not cancel
            rng.uniform(0.0, 1.0, 20000),
            rng.uniform(0.0, 60.0, 20000),
            rng.uniform(0.0, 745.0, 20000),  # down to exp's underflow
            [0.0, np.log(2) / 2, np.log(2), 40.0, 700.0, 708.3, 745.0, 1e5, 1e300],
        ]
    )
    got = x.copy()
    _numba_exp.exponentials(got, minus_one, _numba_exp.NO_GAPS, 0.0, work=got.shape[0])
    want = np.expm1(x) if minus_one else np.exp(x)
    normal = np.abs(want) >= np.finfo(np.float64).tiny
    assert np.max(_ulps(got[normal], want[normal])) <= 2.0
    assert np.max(np.abs(got[~normal] - want[~normal])) <= 2 * 5e-324  # subnormal results
    ends = np.array([0.0, -0.0, -np.inf, -1e300])
    _numba_exp.exponentials(ends, minus_one, _numba_exp.NO_GAPS, 0.0, work=0)
    assert ends.tolist() == ([0.0, 0.0, -1.0, -1.0] if minus_one else [1.0, 1.0, 0.0, 0.0])


def test_float32_arrays_are_computed_in_float64(rng):
    x = -rng.uniform(0.0, 30.0, 5000).astype(np.float32)
    got = x.copy()
    _numba_exp.exponentials(got, False, _numba_exp.NO_GAPS, 0.0, work=0)
    assert got.dtype == np.float32
    assert np.array_equal(got, np.exp(x.astype(np.float64)).astype(np.float32))


def test_the_gaps_form_is_the_in_place_form_of_the_gaps(rng):
    z = np.sort(rng.uniform(0.0, 100.0, 3000))
    z[10:20] = z[10]  # ties: gaps of 0
    direct = np.empty(z.shape[0])
    _numba_exp.exponentials(direct, True, z, 0.7, work=0)
    x = np.concatenate([[-np.inf], -0.7 * np.diff(z)])
    _numba_exp.exponentials(x, True, _numba_exp.NO_GAPS, 0.0, work=0)
    assert np.array_equal(direct, x) and direct[0] == -1.0 and direct[11] == 0.0
