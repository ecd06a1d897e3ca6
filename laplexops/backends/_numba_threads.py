"""When the CPU kernels use threads: each kernel is compiled twice, and small calls run serially.

Numba's ``parallel=True`` kernels run their ``prange`` loops in a *parallel region* of its threading
layer (OpenMP, TBB or Numba's workqueue): waking the pool, handing out the iterations, and a barrier
at the end. On an idle machine that costs tens of microseconds; on a loaded one, where the pool's
threads compete for the cores with other threads that spin between calls (OpenBLAS and OpenMP
workers left spinning after a NumPy matrix product, another process), every region can wait for the
scheduler for milliseconds. A small product does microseconds of work, so an optimizer loop that
alternates small products with NumPy's BLAS work becomes a hundred times slower.

So every parallel kernel also exists as a serial build of the same code (``prange`` then runs as
``range``: no region, no pool), and a call takes the parallel build only when its work, counted in
elements touched, reaches ``PARALLEL_MIN_WORK`` and Numba may use more than one thread. Both builds
compute every output element by the same arithmetic in the same order (no kernel reduces across
``prange`` iterations), so the two give the same bits and a result does not depend on the path.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba
from numba import njit

__all__ = ["KERNELS", "PARALLEL_MIN_WORK", "Kernel", "kernel", "use_threads"]

#: the work (elements touched by one call) from which a kernel runs on Numba's threads; below it the
#: region's cost (tens of microseconds idle, milliseconds on a loaded machine) exceeds the gain
PARALLEL_MIN_WORK = 1 << 17


#: every :class:`Kernel` built so far (the CPU backend's parallel kernels), by qualified name
KERNELS: dict[str, Kernel] = {}


def use_threads(work: int) -> bool:
    """Whether a call touching ``work`` elements should run in a parallel region: the work reaches
    ``PARALLEL_MIN_WORK`` and this thread may use more than one Numba thread."""
    return work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1


class Kernel:
    """A Numba kernel in two builds: ``parallel`` (``parallel=True``) and ``serial`` (the same
    code, ``prange`` as ``range``). Calling it with ``work=`` picks one by :func:`use_threads`.

    The serial build compiles a copy of the function under its own qualified name, so that the
    two builds have separate entries in Numba's on-disk cache (its index does not tell the
    compile flags apart).
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        twin = types.FunctionType(
            func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
        )
        twin.__qualname__ = f"{func.__qualname__}_serial"
        twin.__doc__ = func.__doc__
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.parallel = njit(cache=True, parallel=True)(func)
        self.serial = njit(cache=True)(twin)
        KERNELS[f"{func.__module__}.{func.__qualname__}"] = self

    def __call__(self, *args: Any, work: int) -> Any:
        return (self.parallel if use_threads(work) else self.serial)(*args)


def kernel(func: Callable[..., Any]) -> Kernel:
    """Decorator: ``func`` as a :class:`Kernel` (a parallel and a serial build)."""
    return Kernel(func)
