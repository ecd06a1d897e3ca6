"""``exp`` and ``expm1`` of non-positive arguments in place, written out so that the loop runs in
SIMD lanes (libm's are one call per element; Numba here has no vector math library).

Every decay of the library is ``exp(-s Δ)`` or ``expm1(-s Δ)`` with ``Re s > 0`` and a gap
``Δ >= 0``, so only ``x <= 0`` is needed for a real rate. With ``x = k ln 2 + r``, ``|r| <= ln 2 /
2`` (``ln 2`` in two parts, Cody and Waite, so that ``k ln 2`` is exact), ``expm1(r)`` is its
Taylor polynomial of degree 13 (truncation below 1e-17 relative) and

    exp(x)   = 2^k (1 + expm1(r))
    expm1(x) = 2^k expm1(r) + (2^k - 1)

where ``2^k`` comes from a table of exact powers of two. Both are within one ulp of libm's; ``exp``
is 0 below about -745 (``-inf`` included), ``expm1`` is -1 below -40.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._numba_threads import kernel

__all__ = ["NO_GAPS", "exponentials", "exponentials_complex"]

#: ``exponentials``' ``z`` for exponents given in place
NO_GAPS = np.empty(0)

_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * _LN2_HI exact for |k| < 2^21
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
#: 2^-j for j = 0 .. 1099, the scale factors of the range reduction (a lookup the loop's lanes
#: gather)
_POW2 = 2.0 ** -np.arange(1100.0)


@kernel
def exponentials(a, minus_one, z, rate):  # pragma: no cover - compiled
    """``a[i] = exp(x_i)``, or ``expm1(x_i)`` when ``minus_one``, for real ``x_i <= 0`` (computed
    in float64 whatever ``a``'s dtype): ``x_i = a[i]`` (in place) when ``z`` is empty, else the
    exponents of the sorted anchors' gaps ``x_i = -rate (z[i] - z[i-1])``, ``x_0 = -inf`` (one
    pass instead of two). O(n), in parallel."""
    gaps = z.shape[0] > 0
    for i in prange(a.shape[0]):
        if gaps:
            x = -rate * (np.float64(z[i]) - np.float64(z[i - 1])) if i > 0 else -np.inf
        else:
            x = np.float64(a[i])
        x = min(max(x, -40.0 if minus_one else -746.0), 0.0)
        k = math.floor(x * _INV_LN2 + 0.5)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        c = 1.0 / 6227020800.0
        c = c * r + 1.0 / 479001600.0
        c = c * r + 1.0 / 39916800.0
        c = c * r + 1.0 / 3628800.0
        c = c * r + 1.0 / 362880.0
        c = c * r + 1.0 / 40320.0
        c = c * r + 1.0 / 5040.0
        c = c * r + 1.0 / 720.0
        c = c * r + 1.0 / 120.0
        c = c * r + 1.0 / 24.0
        c = c * r + 1.0 / 6.0
        c = c * r + 0.5
        p = r + (r * r) * c
        two_k = _POW2[np.intp(-k)]  # exact: a power of two (0 below 2^-1074)
        a[i] = two_k * p + (two_k - 1.0) if minus_one else two_k * (1.0 + p)


@kernel
def exponentials_complex(a):  # pragma: no cover - compiled
    """``a[i] = exp(a[i])`` for complex ``a``. O(n), in parallel."""
    for i in prange(a.shape[0]):
        a[i] = np.exp(a[i])
