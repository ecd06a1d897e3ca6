"""Backends: one module per backend behind the narrow interface :class:`Backend`, one registry.

The registry maps a backend's name to the device kind whose data it serves (``"cpu"`` for host
memory, ``"cuda"`` for NVIDIA GPUs, ``"dask"`` for Dask arrays) and to a factory that builds
it; a backend is built on first use, once per process. ``LaplexOperator(..., backend=...)``
takes a registered name, ``"auto"`` (the first registered backend for the anchors' device that
can be built here), or a :class:`Backend` instance.

Adding a backend is one module implementing :class:`Backend` and one :func:`register_backend`
call (the built-in ones, ``"numba"``, ``"cupy"`` and ``"dask"``, are registered at the end of
this module).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._base import Backend, GramBackend, Side

__all__ = [
    "Backend",
    "BackendEntry",
    "GramBackend",
    "Side",
    "available",
    "get_backend",
    "register_backend",
    "registered",
    "set_backend",
    "unregister_backend",
]

#: device kinds a backend may serve: host memory, CUDA device memory, and Dask arrays (whose
#: chunks live on a Dask cluster's workers)
DEVICE_KINDS = ("cpu", "cuda", "dask")


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: the device kind it serves and the factory that builds it."""

    name: str
    device: str
    factory: Callable[[], Backend]


_REGISTRY: dict[str, BackendEntry] = {}
_built: dict[str, Backend | BaseException] = {}  # a name's instance, or why it cannot be built
_lock = threading.Lock()
_preferred: contextvars.ContextVar[tuple[Backend, ...]] = contextvars.ContextVar(
    "laplexops_preferred_backends", default=()
)


def register_backend(
    name: str, device: str, factory: Callable[[], Backend], *, replace: bool = False
) -> None:
    """Register a backend under ``name`` for data on ``device``.

    Parameters
    ----------
    name : str
        The name ``LaplexOperator(..., backend=name)`` selects it by (not ``"auto"``).
    device : {"cpu", "cuda", "dask"}
        The device kind whose data it serves; ``backend="auto"`` picks the first registered
        backend of the anchors' device kind that can be built.
    factory : callable
        Called without arguments on first use; returns the :class:`Backend`. An exception it
        raises (say ``ImportError`` for a missing library) makes the backend unavailable, and is
        chained to the error of a request for it.
    replace : bool, optional
        Allow replacing a registered backend of the same name (its built instance is dropped).

    Raises
    ------
    ValueError
        For the name ``"auto"``, an unknown device kind, or a name already registered (unless
        ``replace``).

    Examples
    --------
    >>> from laplexops.backends import register_backend, registered, unregister_backend
    >>> from laplexops.backends._numba import NumbaBackend
    >>> register_backend("numba-again", "cpu", NumbaBackend)
    >>> registered()["numba-again"]
    'cpu'
    >>> unregister_backend("numba-again")
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(
            f"a backend name must be a non-empty string other than 'auto'; got {name!r}"
        )
    if device not in DEVICE_KINDS:
        raise ValueError(f"device must be one of {DEVICE_KINDS}; got {device!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable; got {type(factory).__name__}")
    with _lock:
        if name in _REGISTRY and not replace:
            raise ValueError(f"a backend named {name!r} is registered already (pass replace=True)")
        _REGISTRY[name] = BackendEntry(name, device, factory)
        _built.pop(name, None)


def unregister_backend(name: str) -> None:
    """Remove the backend ``name`` from the registry (operators already built keep using it).

    Parameters
    ----------
    name : str
        A registered backend's name.

    Raises
    ------
    KeyError
        When no backend of that name is registered.

    Examples
    --------
    >>> from laplexops.backends import register_backend, unregister_backend
    >>> from laplexops.backends._numba import NumbaBackend
    >>> register_backend("scratch", "cpu", NumbaBackend)
    >>> unregister_backend("scratch")
    """
    with _lock:
        if name not in _REGISTRY:
            raise KeyError(f"no backend named {name!r} is registered")
        del _REGISTRY[name]
        _built.pop(name, None)


def registered() -> dict[str, str]:
    """Every registered backend's name and the device kind it serves, in registration order.

    Whether a backend can run here (its library installed, a device present) is
    :func:`available`'s question; this one builds nothing.

    Returns
    -------
    dict of str to str
        ``{name: device kind}``, device kinds ``"cpu"`` or ``"cuda"``.

    Examples
    --------
    >>> from laplexops.backends import registered
    >>> registered()["numba"]
    'cpu'
    """
    return {name: entry.device for name, entry in _REGISTRY.items()}


def _build(name: str) -> Backend:
    """The backend ``name``, built on first use; ``RuntimeError`` chaining the reason it cannot
    be built here (the factory's exception, kept for later requests)."""
    with _lock:
        entry = _REGISTRY[name]
        built = _built.get(name)
        if built is None:
            try:
                built = entry.factory()
            except Exception as exc:  # ImportError, CUDA errors without a driver or device, ...
                built = exc
            _built[name] = built
    if isinstance(built, BaseException):
        raise RuntimeError(
            f"the {name!r} backend is not available here: {type(built).__name__}: {built}"
            + (
                " (the GPU backend needs CuPy, pip install 'laplexops[gpu-cuda12]' or "
                "'[gpu-cuda13]', and a CUDA device)"
                if name == "cupy"
                else ""
            )
        ) from built
    return built


def available() -> list[str]:
    """Names of the registered backends that can be built here.

    Builds each registered backend once per process (a factory that raises makes its backend
    unavailable; the reason is chained to the error of a later request for it).

    Returns
    -------
    list of str
        In registration order; ``["numba"]`` on a machine without CuPy or a CUDA device.

    Examples
    --------
    >>> "numba" in lx.available_backends()
    True
    """
    names = []
    for name in list(_REGISTRY):
        try:
            _build(name)
        except RuntimeError:
            continue
        names.append(name)
    return names


def get_backend(backend: str | Backend, device: str) -> Backend:
    """The backend serving data on ``device`` (``"cpu"`` or ``"cuda"``) for a ``backend=``
    argument: a registered name, ``"auto"``, or a :class:`Backend` instance.

    Parameters
    ----------
    backend : str or Backend
        ``"auto"`` (the innermost :func:`set_backend` choice for ``device``, else the first
        registered backend for ``device`` that can be built here), a registered name, or an
        instance.
    device : {"cpu", "cuda", "dask"}
        The device kind of the data.

    Returns
    -------
    Backend
        The backend, built on first use (once per process for a registered name).

    Raises
    ------
    ValueError
        For an unknown name, or a backend that serves another device kind than the data's.
    TypeError
        For an argument that is neither a name nor a backend.
    RuntimeError
        When the backend (or, for ``"auto"``, every backend of that device kind) cannot be built
        here; the reason is chained.

    Examples
    --------
    >>> from laplexops.backends import get_backend
    >>> get_backend("auto", "cpu").name
    'numba'
    """
    if isinstance(backend, str):
        if backend == "auto":
            return _auto(device)
        if backend not in _REGISTRY:
            raise ValueError(
                f"backend must be 'auto', a registered name ({', '.join(map(repr, _REGISTRY))}) "
                f"or a Backend instance; got {backend!r}"
            )
        serves = _REGISTRY[backend].device
        if serves != device:
            raise ValueError(
                f"the {backend!r} backend serves {serves} data, but the anchors live on {device}"
            )
        return _build(backend)
    backend = _instance(backend)
    if backend.device != device:
        raise ValueError(
            f"the backend {backend.name!r} serves {backend.device} data, but the anchors live on "
            f"{device}"
        )
    return backend


@contextlib.contextmanager
def set_backend(backend: str | Backend) -> Iterator[Backend]:
    """Within the ``with`` block, ``backend="auto"`` picks ``backend`` for data on its device.

    Like :func:`scipy.fft.set_backend`: the choice is local to the thread (and async context),
    nests, and ends with the block. Operators built inside keep their backend afterwards.

    Parameters
    ----------
    backend : str or Backend
        A registered name or a backend instance.

    Yields
    ------
    Backend
        The backend chosen.

    Raises
    ------
    ValueError, TypeError, RuntimeError
        As :func:`get_backend` for a name that is not registered, an argument that is not a
        backend, or a backend that cannot be built here.

    Examples
    --------
    >>> from laplexops.backends import set_backend
    >>> with set_backend("numba"):
    ...     op = lx.LaplexOperator(np.arange(3.0), np.arange(2.0))
    >>> op.backend
    'numba'
    """
    if isinstance(backend, str):
        if backend not in _REGISTRY:
            raise ValueError(f"no backend named {backend!r} is registered")
        chosen = _build(backend)
    else:
        chosen = _instance(backend)
    token = _preferred.set((chosen, *_preferred.get()))
    try:
        yield chosen
    finally:
        _preferred.reset(token)


def _instance(backend: object) -> Backend:
    """``backend`` itself when it implements :class:`Backend`, else ``TypeError``."""
    if not isinstance(backend, Backend):
        raise TypeError(
            "backend must be 'auto', a registered name or a Backend instance (with name, device, "
            f"xp, asarray, snapshot, plan and apply); got {type(backend).__name__}"
        )
    return backend


def _auto(device: str) -> Backend:
    """The innermost :func:`set_backend` choice for ``device``, else the first registered backend
    of ``device`` that can be built here."""
    for backend in _preferred.get():
        if backend.device == device:
            return backend
    failure: RuntimeError | None = None
    for name, entry in _REGISTRY.items():
        if entry.device == device:
            try:
                return _build(name)
            except RuntimeError as exc:
                failure = failure or exc
    if failure is not None:
        raise RuntimeError(f"no laplexops backend for data on {device} can run here") from failure
    raise RuntimeError(f"no laplexops backend is registered for data on {device}")


def _builtin(module: str, cls: str) -> Callable[[], Backend]:
    """A factory importing ``cls`` from this package's ``module`` on first use."""

    def factory() -> Backend:
        return getattr(importlib.import_module(module, __name__), cls)()

    factory.__qualname__ = f"{module.lstrip('.')}.{cls}"
    return factory


register_backend("numba", "cpu", _builtin("._numba", "NumbaBackend"))
register_backend("cupy", "cuda", _builtin("._cupy", "CupyBackend"))
register_backend("dask", "dask", _builtin("._dask", "DaskBackend"))
