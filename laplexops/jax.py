"""JAX integration: ``W(x, y, rate) @ v`` as a differentiable, jit- and vmap-able JAX function.

:func:`laplex_matmul` is a :func:`jax.custom_vjp` function whose forward pass (one product) and
backward pass (one call of :meth:`laplexops.LaplexOperator.gradient` for all four gradients) run the
library on the host through :func:`jax.pure_callback`. Operators (with their sorted plans) are kept
in a small LRU cache keyed by the anchors' values, so that repeated calls on the same anchors do not
sort again, and new anchors of the same shapes repair the previous plan
(:meth:`laplexops.LaplexOperator.with_anchors`) instead of sorting from scratch.

This module imports JAX; ``import laplexops`` does not import it. The user's guide is
``docs/jax.md``.

Examples
--------
>>> import jax
>>> import jax.numpy as jnp
>>> from laplexops.jax import laplex_matmul
>>> x, y = jnp.array([0.0, 1.0, 2.0]), jnp.array([0.5, 1.5])
>>> u = laplex_matmul(x, y, 1.0, jnp.array([1.0, 2.0]))  # float32 unless jax_enable_x64 is set
>>> np.asarray(u, dtype=np.float64).round(4)
array([1.0528, 1.8196, 1.4362])
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._operator import LaplexOperator
from .backends import Backend, get_backend

__all__ = ["laplex_matmul", "cache_info", "cache_clear", "CacheInfo", "CACHE_SIZE"]

#: The number of operators (anchors and their plans) the cache keeps; the least recently used goes
#: first. Assign ``laplexops.jax.CACHE_SIZE`` to change it: the cache reads it at every insertion.
CACHE_SIZE = 8


# ---------------------------------------------------------------------------------------- API
def laplex_matmul(x: Any, y: Any, rate: Any, v: Any, *, backend: str | Backend = "auto") -> Any:
    """The product ``W @ v`` of ``W[i, j] = exp(-rate * |x[i] - y[j]|)``, differentiable in JAX.

    A :func:`jax.custom_vjp` function: it composes with :func:`jax.jit`, :func:`jax.grad`,
    :func:`jax.vjp` and :func:`jax.vmap` (reverse mode only: no :func:`jax.jvp`, ``jacfwd`` or
    forward-over-reverse Hessians). The forward pass is one product of a
    :class:`~laplexops.LaplexOperator`, the backward pass one call of its
    :meth:`~laplexops.LaplexOperator.gradient`, both run on the host through
    :func:`jax.pure_callback`; the operators and their plans are cached between calls (see
    :func:`cache_info`).

    Parameters
    ----------
    x : array_like, shape (m,)
        Row anchors: real and finite. Differentiable.
    y : array_like, shape (n,)
        Column anchors, likewise. Differentiable.
    rate : scalar
        The rate ``s``: a real scalar (the Laplace kernel) or a complex one ``a + i w`` (the
        phased kernel ``exp(-a |d|) (cos(w |d|) - i sin(w |d|))``), finite with ``Re(s) > 0``; a
        Python number or a 0-d array. Differentiable: for a complex rate the gradient JAX returns
        follows JAX's convention for complex inputs, ``dL/dRe(s) - i dL/dIm(s)`` for a real loss
        ``L`` (the conjugate of the ``rate`` field of :class:`laplexops.Gradients`); a step of
        gradient descent is ``s - lr * jnp.conj(grad)``.
    v : array_like, shape (n,) or (n, k)
        The operand, real or complex. Differentiable.
    backend : str or Backend, optional
        The backend for host data that runs the products: ``"auto"`` (the default: the
        ``"numba"`` backend, or the one chosen with :func:`laplexops.backends.set_backend`), a
        registered name or an instance serving device kind ``"cpu"``. It is resolved when the
        function is called or traced, not when a compiled function runs.

    Returns
    -------
    jax.Array, shape (m,) or (m, k)
        ``W @ v``. Its precision is that of the anchors and ``v`` (the wider; integer arrays take
        JAX's default float, half precision becomes float32); it is complex when ``rate`` or
        ``v`` is. ``x``, ``y``, ``rate`` and ``v`` are cast to that precision before the
        product, so their gradients come back in their own dtypes.

    Raises
    ------
    ValueError
        Anchors that are not 1-D, a ``v`` of ndim other than 1 or 2 or whose leading dimension is
        not ``n``, a ``backend`` that does not serve host data: when the function is called or
        traced.
    TypeError
        Complex or non-numeric anchors or operand, a rate that is not a scalar.
    jax.errors.JaxRuntimeError
        When the computation runs (under :func:`jax.jit` as well), for values the library checks
        inside the callback: anchors that are not finite, a rate with ``Re(rate) <= 0``. JAX
        re-raises the library's :class:`ValueError` as its runtime error, with its message.

    See Also
    --------
    laplexops.LaplexOperator : The operator the callbacks run.
    cache_info, cache_clear : The cache of operators.

    Notes
    -----
    **Where it runs.** The callbacks run the library on the host (the CPU backend, Numba by
    default). For arrays on a GPU, JAX copies the callback's operands to host memory and its
    results back to the device for each forward and backward call: the CuPy backend is not used.

    **vmap.** The callbacks are batched with ``vmap_method="expand_dims"``: under
    :func:`jax.vmap` they receive the whole batch at once. When only ``v`` is batched, the batch
    becomes extra columns of one ``matmat``; batched anchors or rates give one operator per batch
    element (from the cache, re-planned with ``with_anchors``). The backward pass under ``vmap``
    must return the gradients of each batch element (JAX sums them itself when the anchors were
    not batched), so it calls ``gradient`` once per element; a batch passed as the columns of a
    2-D ``v`` instead gets its summed gradients from one call.

    **Complex convention.** The cotangent JAX passes back for a complex output is the conjugate
    of the upstream gradient ``g`` of :meth:`laplexops.LaplexOperator.gradient`, and the
    cotangents JAX expects for complex inputs are the conjugates of the library's gradients; the
    backward pass conjugates both, so that ``jax.grad`` and :func:`jax.test_util.check_grads`
    agree with JAX's own differentiation of the dense product.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from laplexops.jax import laplex_matmul
    >>> x, y = jnp.array([0.0, 1.0, 2.0]), jnp.array([0.5, 1.5])
    >>> v = jnp.array([1.0, 2.0])
    >>> np.asarray(laplex_matmul(x, y, 1.0, v), dtype=np.float64).round(4)
    array([1.0528, 1.8196, 1.4362])

    The gradient of a loss with respect to the anchors, the rate and the operand, compiled:

    >>> def loss(x, y, rate, v):
    ...     return jnp.sum(laplex_matmul(x, y, rate, v) ** 2)
    >>> gx, gy, grate, gv = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, y, 1.0, v)
    >>> gx.shape, gy.shape, grate.shape, gv.shape
    ((3,), (2,), (), (2,))

    A batch of operands under ``vmap`` is one product with several columns:

    >>> vs = jnp.stack([v, 2 * v, -v])
    >>> jax.vmap(lambda v: laplex_matmul(x, y, 1.0, v))(vs).shape
    (3, 3)
    """
    x, y, rate, v = _inputs(x, y, rate, v)
    return _product(get_backend(backend, "cpu"), x, y, rate, v)


class CacheInfo(NamedTuple):
    """What :func:`cache_info` reports about the cache of operators.

    Parameters
    ----------
    hits : int
        Calls whose anchors were in the cache (no new plan).
    misses : int
        Calls that built a new operator.
    repairs : int
        Of the misses, those whose plan was repaired from a cached operator's plan of the same
        shapes (:meth:`laplexops.LaplexOperator.with_anchors`) rather than sorted from scratch.
    maxsize : int
        The number of operators the cache keeps (:data:`CACHE_SIZE`).
    currsize : int
        The number it holds now.
    """

    hits: int
    misses: int
    repairs: int
    maxsize: int
    currsize: int


def cache_info() -> CacheInfo:
    """Statistics of the cache of operators the callbacks of :func:`laplex_matmul` share.

    Each forward or backward call looks its anchors up (a hash of their bytes, then a comparison
    of the values): a hit reuses the operator and its plan (O(N) for the hash, no sort); a miss
    builds an operator, repairing the plan of the most recently used one of the same shapes
    when there is one.

    Returns
    -------
    CacheInfo
        Hits, misses, repairs, the maximum and the current size.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from laplexops.jax import cache_clear, cache_info, laplex_matmul
    >>> cache_clear()
    >>> x = jnp.linspace(0.0, 1.0, 5)
    >>> _ = laplex_matmul(x, x, 2.0, jnp.ones(5))
    >>> _ = laplex_matmul(x, x, 3.0, jnp.ones(5))  # another rate, same anchors: a hit
    >>> _ = laplex_matmul(x + 0.01, x, 2.0, jnp.ones(5))  # same shapes: the plan is repaired
    >>> cache_info()
    CacheInfo(hits=1, misses=2, repairs=1, maxsize=8, currsize=2)
    """
    return _CACHE.info()


def cache_clear() -> None:
    """Drop every cached operator and reset the statistics of :func:`cache_info`.

    Examples
    --------
    >>> from laplexops.jax import cache_clear, cache_info
    >>> cache_clear()
    >>> cache_info().currsize
    0
    """
    _CACHE.clear()


# ---------------------------------------------------------------------------------- the inputs
def _inputs(x: Any, y: Any, rate: Any, v: Any) -> tuple[Any, Any, Any, Any]:
    """The four inputs as JAX arrays of one precision, checked for what can be checked while
    tracing (shapes and dtypes); values are the library's to check, in the callbacks."""
    x, y, rate, v = (jnp.asarray(a) for a in (x, y, rate, v))
    for a, name in ((x, "x"), (y, "y"), (v, "v"), (rate, "rate")):
        if not jnp.issubdtype(a.dtype, jnp.number):
            raise TypeError(f"{name} must be numeric (integer, real or complex); got {a.dtype}")
    for a, name in ((x, "x"), (y, "y")):
        if jnp.iscomplexobj(a):
            raise TypeError(f"anchors must be real; {name} has dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"anchors must be 1-D; {name} has shape {tuple(a.shape)}")
    if rate.ndim != 0:
        raise TypeError(f"rate must be a scalar; got an array of shape {tuple(rate.shape)}")
    if v.ndim not in (1, 2):
        raise ValueError(f"v must have ndim 1 or 2; got shape {tuple(v.shape)}")
    if v.shape[0] != y.shape[0]:
        raise ValueError(
            f"v must have leading dimension {y.shape[0]} to match the operator of shape "
            f"{(x.shape[0], y.shape[0])}; got shape {tuple(v.shape)}"
        )
    # the precision: the anchors' (integer anchors take JAX's default float), raised by v's
    # (an integer v does not raise it), at least float32 (half precision cannot hold the decays)
    anchors = [a.dtype for a in (x, y) if jnp.issubdtype(a.dtype, jnp.floating)]
    real = functools.reduce(jnp.promote_types, anchors, jnp.dtype(jnp.float32))
    if not anchors:
        real = jnp.promote_types(real, jnp.result_type(float))
    if jnp.issubdtype(v.dtype, jnp.inexact):
        real = jnp.promote_types(real, jnp.finfo(v.dtype).dtype)
    cplx = jnp.promote_types(real, jnp.complex64)
    return (
        x.astype(real),
        y.astype(real),
        rate.astype(cplx if jnp.iscomplexobj(rate) else real),
        v.astype(cplx if jnp.iscomplexobj(v) else real),
    )


# --------------------------------------------------------------------------- the custom VJP
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _product(backend: Backend, x: Any, y: Any, rate: Any, v: Any) -> Any:
    return _forward(backend, x, y, rate, v)


def _product_fwd(backend: Backend, x: Any, y: Any, rate: Any, v: Any) -> tuple[Any, Any]:
    return _forward(backend, x, y, rate, v), (x, y, rate, v)


def _product_bwd(backend: Backend, residuals: Any, cotangent: Any) -> tuple[Any, ...]:
    x, y, rate, v = residuals
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in residuals)
    return tuple(
        jax.pure_callback(
            _callbacks(backend, v.ndim)[1],
            shapes,
            x,
            y,
            rate,
            v,
            cotangent,
            vmap_method="expand_dims",
        )
    )


_product.defvjp(_product_fwd, _product_bwd)


def _forward(backend: Backend, x: Any, y: Any, rate: Any, v: Any) -> Any:
    out = jax.ShapeDtypeStruct(
        (x.shape[0],) + v.shape[1:], jnp.result_type(rate.dtype, v.dtype, x.dtype)
    )
    return jax.pure_callback(
        _callbacks(backend, v.ndim)[0], out, x, y, rate, v, vmap_method="expand_dims"
    )


def _callbacks(backend: Backend, vcore: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The forward and backward callbacks for a backend and ``v.ndim``: the same objects on
    every call, so that JAX sees the same callback for the same function."""
    key = (id(backend), vcore)
    entry = _CALLBACKS.get(key)
    if entry is None:
        forward = functools.partial(_host_product, backend, vcore)
        backward = functools.partial(_host_vjp, backend, vcore)
        entry = _CALLBACKS.setdefault(key, (backend, forward, backward))
    return entry[1], entry[2]


#: the callbacks by (backend, v.ndim); an entry holds its backend, so that its id stays unique
_CALLBACKS: dict[tuple[int, int], tuple[Backend, Callable[..., Any], Callable[..., Any]]] = {}


# -------------------------------------------------------------------------- the host callbacks
# Under vmap (vmap_method="expand_dims") every argument arrives with the same number of leading
# batch dimensions, each either the batch's size or 1 (not batched); nested vmaps add one each.
# ``vcore`` is v's own ndim (1 or 2), so the leading dimensions of each argument are known.


def _host_product(backend: Backend, vcore: int, x: Any, y: Any, rate: Any, v: Any) -> np.ndarray:
    """``W @ v`` for every batch element: one operator per distinct (x, y, rate) element, and
    every element of ``v`` that shares it as further columns of one ``matmat``."""
    x, y, rate, v = (np.asarray(a) for a in (x, y, rate, v))
    rank = rate.ndim
    ops_batch = np.broadcast_shapes(x.shape[:rank], y.shape[:rank], rate.shape)
    batch = np.broadcast_shapes(ops_batch, v.shape[:rank])
    m, n = x.shape[-1], y.shape[-1]
    out = np.empty(batch + (m,) + v.shape[rank + 1 :], np.result_type(rate.dtype, v.dtype, x.dtype))
    for o in np.ndindex(ops_batch):
        op = _CACHE.operator(backend, _pick(x, o), _pick(y, o), _pick(rate, o))
        # the batch dimensions the operator is batched over are indexed; the others (v's own
        # batch, or none) are kept and become columns
        into = tuple(i if size > 1 else slice(None) for i, size in zip(o, ops_batch))
        of_v = tuple(
            (i if size_v > 1 else 0) if size > 1 else slice(None)
            for i, size, size_v in zip(o, ops_batch, v.shape)
        )
        vb = v[of_v]  # (kept batch dims) + (n,) or (n, k)
        kept = vb.shape[: vb.ndim - vcore]
        count, k = int(np.prod(kept)), (vb.shape[-1] if vcore == 2 else 1)
        columns = np.moveaxis(vb.reshape(count, n, k), 0, 1).reshape(n, count * k)
        u = op.matmat(columns).reshape(m, count, k)
        out[into] = np.moveaxis(u, 1, 0).reshape(kept + (m,) + vb.shape[vb.ndim - vcore + 1 :])
    return out


def _host_vjp(
    backend: Backend, vcore: int, x: Any, y: Any, rate: Any, v: Any, cotangent: Any
) -> tuple[np.ndarray, ...]:
    """The cotangents of x, y, rate and v for every batch element, one ``gradient`` call each,
    converted between the conventions: the library's upstream gradient ``g`` (and its gradient
    of a complex input) is the conjugate of JAX's cotangent."""
    x, y, rate, v, cotangent = (np.asarray(a) for a in (x, y, rate, v, cotangent))
    rank = rate.ndim
    ops_batch = np.broadcast_shapes(x.shape[:rank], y.shape[:rank], rate.shape)
    batch = np.broadcast_shapes(ops_batch, v.shape[:rank], cotangent.shape[:rank])
    cores = ((x.shape[-1],), (y.shape[-1],), (), v.shape[rank:])
    dtypes = (x.dtype, y.dtype, rate.dtype, v.dtype)
    outs = tuple(np.empty(batch + core, dtype) for core, dtype in zip(cores, dtypes))
    ops: dict[tuple[int, ...], LaplexOperator] = {}
    for b in np.ndindex(batch):
        o = tuple(i if size > 1 else 0 for i, size in zip(b, ops_batch))
        if o not in ops:
            ops[o] = _CACHE.operator(backend, _pick(x, o), _pick(y, o), _pick(rate, o))
        g = np.conj(_pick(cotangent, b))
        grads = ops[o].gradient(_pick(v, b), g)
        for out, grad in zip(outs, grads):
            out[b] = np.conj(grad)
    return outs


def _pick(a: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """The element ``index`` of ``a``'s leading batch dimensions, a dimension of size 1 standing
    for every index (it is not batched)."""
    return a[tuple(i if size > 1 else 0 for i, size in zip(index, a.shape))]


# ------------------------------------------------------------------------------------ the cache
class _Cache:
    """Operators by anchors, least recently used first; thread-safe (JAX may run callbacks from
    several threads). A hit is found by a hash of the anchors' bytes and confirmed by comparing
    their values; a miss repairs the most recent plan of the same shapes, backend and dtype."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: OrderedDict[tuple[Any, ...], LaplexOperator] = OrderedDict()
        self._hits = self._misses = self._repairs = 0

    def operator(self, backend: Backend, x: np.ndarray, y: np.ndarray, rate: Any) -> LaplexOperator:
        """The operator on anchors ``x``, ``y`` (host arrays) with ``rate`` (a 0-d array)."""
        digest = hashlib.blake2b(digest_size=16)
        for a in (x, y):
            digest.update(np.ascontiguousarray(a).data)
        family = (id(backend), x.dtype.str, x.shape, y.shape)
        key = (*family, digest.digest())
        value = complex(rate) if np.iscomplexobj(rate) else float(rate)
        with self._lock:
            op = self._ops.get(key)
            if op is not None and np.array_equal(op.x, x) and np.array_equal(op.y, y):
                self._ops.move_to_end(key)
                self._hits += 1
                return op.with_rate(value)
            previous = next((o for k, o in reversed(self._ops.items()) if k[:4] == family), None)
        if previous is not None:
            op = previous.with_anchors(x, y).with_rate(value).prepare()
        else:
            op = LaplexOperator(x, y, value, backend).prepare()
        with self._lock:
            self._misses += 1
            self._repairs += previous is not None
            self._ops[key] = op
            self._ops.move_to_end(key)
            while len(self._ops) > max(CACHE_SIZE, 1):
                self._ops.popitem(last=False)
        return op

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, self._repairs, CACHE_SIZE, len(self._ops))

    def clear(self) -> None:
        with self._lock:
            self._ops.clear()
            self._hits = self._misses = self._repairs = 0


_CACHE = _Cache()
