"""laplexops: exact, trainable Laplace-kernel operators (LAPLEX).

``LaplexOperator(x, y, rate)`` is the dense matrix ``W[i, j] = exp(-rate * |x[i] - y[j]|)``, applied
exactly in O(N log N) (O(N) with its cached plan) without ever being stored. See ``docs/``.
"""

from ._operator import DENSE_LIMIT, Gradients, LaplexOperator
from .backends import available as available_backends

__version__ = "0.1.0"

__all__ = ["LaplexOperator", "Gradients", "DENSE_LIMIT", "available_backends", "__version__"]
