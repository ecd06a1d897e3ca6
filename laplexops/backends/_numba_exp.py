"""``exp`` and ``expm1`` of non-positive arguments in place, written out so that the loop runs in
SIMD lanes (libm's are one call per element; Numba here has no vector math library).

Every decay of the library is ``exp(-s Δ)`` or ``expm1(-s Δ)`` with ``Re s > 0`` and a gap
``Δ >= 0``, so only ``x <= 0`` is needed for a real rate. With ``x = k ln 2 + r``, ``|r| <= ln 2 /
2`` (``ln 2`` in two parts, Cody and Waite, so that ``k ln 2`` is exact), ``expm1(r)`` is its
Taylor polynomial of degree 13 (truncation below 1e-17 relative) and

    exp(x)   = 2^k (1 + expm1(r))
    expm1(x) = 2^k expm1(r) + (2^k - 1)

where ``2^k`` is a product of exact powers of two chosen by the bits of ``-k``. Both are within one
ulp of libm's; ``exp`` is 0 below about -745 (``-inf`` included), ``expm1`` is -1 below -40.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._numba_threads import kernel

__all__ = ["exponentials", "exponentials_complex"]

_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * _LN2_HI exact for |k| < 2^21
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


@kernel
def exponentials(a, minus_one):  # pragma: no cover - compiled
    """``a[i] = exp(a[i])``, or ``expm1(a[i])`` when ``minus_one``, for real ``a <= 0`` (computed
    in float64 whatever ``a``'s dtype). O(n), in parallel."""
    for i in prange(a.shape[0]):
        x = max(np.float64(a[i]), -40.0 if minus_one else -746.0)
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
        bits = -k
        two_k = 1.0
        for power in (1024.0, 512.0, 256.0, 128.0, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0):
            take = bits >= power
            bits = bits - power if take else bits
            two_k = two_k * 2.0**-power if take else two_k
        a[i] = two_k * p + (two_k - 1.0) if minus_one else two_k * (1.0 + p)


@kernel
def exponentials_complex(a):  # pragma: no cover - compiled
    """``a[i] = exp(a[i])`` for complex ``a``. O(n), in parallel."""
    for i in prange(a.shape[0]):
        a[i] = np.exp(a[i])
