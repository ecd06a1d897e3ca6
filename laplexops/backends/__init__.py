"""Backends: one module per backend behind the narrow interface of :mod:`._base`.

``get_backend(name, device)`` picks the backend for a request: ``"auto"`` chooses by the data's
device (host data -> ``"numba"``), a named backend must be able to serve that device.
"""

from __future__ import annotations

import functools

from ._base import SIDE_ROWS_X, SIDE_ROWS_Y, Backend

__all__ = ["Backend", "SIDE_ROWS_X", "SIDE_ROWS_Y", "available", "get_backend", "NAMES"]

#: every backend name laplexops knows, and the device kind each serves
NAMES = {"numba": "cpu", "cupy": "cuda"}

_loaded: dict[str, Backend] = {}


def _load(name: str) -> Backend:
    if name not in _loaded:
        if name == "numba":
            from ._numba import NumbaBackend

            _loaded[name] = NumbaBackend()
        elif name == "cupy" and _cuda_usable():
            from ._cupy import CupyBackend

            _loaded[name] = CupyBackend()
        else:
            raise RuntimeError(
                f"the {name!r} backend is not available in this installation of laplexops "
                f"(available: {', '.join(available())}); the GPU backend needs CuPy "
                f"(pip install 'laplexops[gpu-cuda12]' or '[gpu-cuda13]') and a CUDA device"
            )
    return _loaded[name]


@functools.cache
def _cuda_usable() -> bool:
    """Whether CuPy imports and sees at least one CUDA device (asked once per process)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA errors without a driver or device
        return False


def available() -> list[str]:
    """Names of the backends that can run here."""
    return ["numba"] + (["cupy"] if _cuda_usable() else [])


def get_backend(name: str, device: str) -> Backend:
    """The backend ``name`` (or the one for ``device`` when ``name == "auto"``) for data on
    ``device``.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when no available backend can
    serve the data's device.
    """
    if name == "auto":
        candidates = [n for n, dev in NAMES.items() if dev == device]
        if not candidates:
            raise RuntimeError(f"no laplexops backend serves data on device kind {device!r}")
        name = candidates[0]
    elif name not in NAMES:
        raise ValueError(
            f"backend must be one of 'auto', {', '.join(map(repr, NAMES))}; got {name!r}"
        )
    if NAMES[name] != device:
        raise ValueError(
            f"the {name!r} backend serves {NAMES[name]} data, but the anchors live on {device}"
        )
    return _load(name)
