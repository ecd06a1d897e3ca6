"""Array-API namespaces: which namespace and device an array lives in, and the bridge to a backend.

Anything array-api-compat recognises (NumPy, CuPy, PyTorch, JAX, array-api-strict, ...) is accepted;
Python sequences are read as NumPy arrays. Arrays cross into a backend zero-copy through DLPack
where the libraries allow it, and results return in the caller's namespace.
"""

from __future__ import annotations

from typing import Any, cast

import array_api_compat as compat
import numpy as np

__all__ = [
    "namespace",
    "as_array",
    "device_kind",
    "same_device",
    "exportable",
    "to_numpy_dtype",
    "from_numpy_dtype",
    "default_float",
    "result_to",
]


def namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays``; ``TypeError`` when they mix namespaces."""
    try:
        return compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(
            sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrays})
        )
        raise TypeError(
            f"all arrays must come from one array namespace; got {kinds} ({exc})"
        ) from None


def as_array(a: Any) -> Any:
    """``a`` itself if it is an array of a known namespace, else ``np.asarray(a)``."""
    if compat.is_array_api_obj(a):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"expected an array or a sequence of numbers; got {type(a).__name__}"
        ) from exc


def device_kind(a: Any) -> str:
    """``"dask"`` for Dask arrays, ``"cuda"`` for arrays in GPU memory, ``"cpu"`` otherwise."""
    if compat.is_dask_array(a):
        return "dask"
    if compat.is_cupy_array(a):
        return "cuda"
    if compat.is_torch_array(a):
        return "cuda" if a.device.type == "cuda" else "cpu"
    if compat.is_jax_array(a):
        platforms = {d.platform for d in a.devices()}
        return "cuda" if "gpu" in platforms or "cuda" in platforms else "cpu"
    return "cpu"


def same_device(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` live on the same device."""
    try:
        return compat.device(a) == compat.device(b)
    except (TypeError, AttributeError):
        return True


def exportable(a: Any) -> Any:
    """``a`` ready for DLPack export (PyTorch refuses tensors that require grad)."""
    if compat.is_torch_array(a) and a.requires_grad:
        return a.detach()
    return a


def to_numpy_dtype(dtype: Any) -> np.dtype | None:
    """The NumPy dtype matching a namespace's dtype object, or None when there is none."""
    try:
        return np.dtype(dtype)
    except TypeError:
        pass
    name = str(dtype).rsplit(".", 1)[-1]
    try:
        return np.dtype(name)
    except TypeError:
        return None


def from_numpy_dtype(xp: Any, dtype: np.dtype) -> Any:
    """The dtype object of namespace ``xp`` for a NumPy dtype."""
    if compat.is_numpy_namespace(xp) or compat.is_cupy_namespace(xp):
        return np.dtype(dtype)
    return getattr(xp, np.dtype(dtype).name)


def default_float(xp: Any) -> np.dtype:
    """The namespace's default real floating dtype, as a NumPy dtype."""
    try:
        # a namespace names its default float with a dtype NumPy knows (float32 or float64)
        return cast(
            np.dtype,
            to_numpy_dtype(xp.__array_namespace_info__().default_dtypes()["real floating"]),
        )
    except (AttributeError, KeyError, TypeError):
        return np.dtype(np.float64)


def result_to(xp: Any, native: Any, like: Any) -> Any:
    """A backend result ``native`` as an array of namespace ``xp`` on the device of ``like``."""
    if (
        compat.is_numpy_namespace(xp)
        or compat.is_cupy_namespace(xp)
        or compat.is_dask_array(native)
    ):
        return native
    if compat.is_cupy_array(native):  # GPU results reach torch (or JAX) zero-copy
        return xp.from_dlpack(native)
    try:
        return xp.asarray(native, device=compat.device(like))
    except (TypeError, ValueError):
        return xp.asarray(native)
