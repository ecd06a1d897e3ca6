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
compute every output element by the same arithmetic in the same order (no kernel reduces floats
across ``prange`` iterations; an integer count is exact in any order), so the two give the same bits
and a result does not depend on the path.

Every kernel releases the GIL while it runs (``nogil``; so do the backend's other compiled
functions): a product in one thread, such as a Dask worker's task, leaves the process's other
threads (the worker's event loop, which answers its peers' requests for data) free to run.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numba
from numba import njit


def _load_tbb() -> str | None:
    """Load the TBB runtime of the ``tbb`` wheel (a dependency on Linux), so that Numba can pick
    its TBB threading layer, and return its path (``None`` where there is none to load).

    Numba prefers TBB to OpenMP when it finds ``libtbb.so.12``, but the wheel installs it in the
    environment's ``lib`` folder, where the dynamic loader does not look; once loaded here, Numba's
    ``dlopen`` of the same name finds it. TBB's workers take their share of a parallel region's
    iterations as they arrive, and the calling thread does the rest: a region does not wait for
    a worker that another process's thread keeps off its core (OpenBLAS's workers spin for a tenth
    of a second after each call), where an OpenMP region would."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        dist = metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == "libtbb.so.12":
            path = os.path.realpath(str(dist.locate_file(file)))
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return None
            return path
    return None


#: the TBB runtime loaded for Numba's threading layer, if any (Numba picks its layer when it first
#: starts its threads, after this)
TBB = _load_tbb()

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
        self.parallel = njit(cache=True, parallel=True, nogil=True)(func)
        self.serial = njit(cache=True, nogil=True)(twin)
        KERNELS[f"{func.__module__}.{func.__qualname__}"] = self

    def __call__(self, *args: Any, work: int) -> Any:
        return (self.parallel if use_threads(work) else self.serial)(*args)


def kernel(func: Callable[..., Any]) -> Kernel:
    """Decorator: ``func`` as a :class:`Kernel` (a parallel and a serial build)."""
    return Kernel(func)
