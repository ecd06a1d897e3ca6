"""laplexops: exact, trainable Laplace-kernel operators (LAPLEX).

``LaplexOperator(x, y, rate)`` is the dense matrix ``W[i, j] = exp(-rate * |x[i] - y[j]|)``, applied
exactly in O(N log N) (O(N) with its cached plan) without ever being stored.

``LaplexGram(a, rate, weights, noise)`` is the covariance ``diag(w) K(a, a) diag(w) + diag(u)`` with
an exact O(n) solve, log-determinant, sampler and Gaussian likelihood with its gradients.

Public names: :class:`LaplexOperator`, :class:`Gradients` (what its ``gradient`` returns),
:class:`LaplexGram`, :class:`GramGradients` (what its ``nll_gradient`` returns),
:data:`DENSE_LIMIT` (the size guard of ``to_dense``), :func:`available_backends` and
:func:`release_memory` (the memory the CPU backend keeps for reuse); the backend
registry is :mod:`laplexops.backends`. The contract (mathematics, API, errors, accuracy) is
``docs/reference.md``.

Examples
--------
>>> import numpy as np
>>> import laplexops as lx
>>> op = lx.LaplexOperator(np.linspace(0.0, 9.0, 10), np.linspace(0.5, 9.5, 10), rate=1.0)
>>> (op @ np.ones(10)).shape
(10,)
"""

from ._gram import GramGradients, LaplexGram
from ._operator import DENSE_LIMIT, Gradients, LaplexOperator
from .backends import available as available_backends
from .backends._numba_memory import release_memory

__version__ = "0.1.0"

__all__ = [
    "LaplexOperator",
    "Gradients",
    "LaplexGram",
    "GramGradients",
    "DENSE_LIMIT",
    "available_backends",
    "release_memory",
    "__version__",
]
