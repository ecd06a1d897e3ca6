"""Plan-order layouts of operators on Dask arrays: route operands once, apply many times.

An operator on Dask anchors (``LaplexOperator(x, y)`` with ``dask.array`` anchors runs on the
Dask backend) keeps its anchors range-partitioned over the cluster: its *plan order* lists each
side's anchors partition by partition, sorted. A product in the caller's order routes its operand
into plan order and its result back out, one shuffle each way. An iterative method or a training
loop that applies the operator many times can instead route once::

    vp = to_plan_order(op, v)             # one shuffle
    for _ in range(steps):
        up = planned_matmat(op, vp)       # no shuffle: local scans plus O(P) carries
        ...                               # (vp updated in plan order)
    u = from_plan_order(op, up)           # one shuffle

Plan-ordered arrays are Dask arrays with one chunk per partition (zero-length chunks included).
Every function here takes a ``LaplexOperator`` running on the Dask backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends._dask import DaskBackend

__all__ = ["DaskBackend", "from_plan_order", "planned_matmat", "to_plan_order"]


def _dask_operator(op: Any) -> Any:
    if not isinstance(getattr(op, "_backend", None), DaskBackend):
        raise TypeError(
            f"expected a LaplexOperator on the Dask backend; got {type(op).__name__}"
            + (f" on backend {op.backend!r}" if hasattr(op, "backend") else "")
        )
    return op._backend


def _two_dimensional(a: Any, length: int, what: str) -> Any:
    import dask.array as da

    if not isinstance(a, da.Array):
        raise TypeError(f"{what} must be a Dask array; got {type(a).__name__}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{what} must be 1-D or 2-D; got shape {a.shape}")
    if a.shape[0] != length:
        raise ValueError(f"{what} must have leading dimension {length}; got shape {a.shape}")
    if np.dtype(a.dtype).kind not in "iufc":
        raise TypeError(f"{what} must have a numeric dtype; got {a.dtype}")
    return a if a.ndim == 2 else a[:, None]


def to_plan_order(op: Any, a: Any, *, rows: bool = False) -> Any:
    """``a``'s rows, given in the caller's order of the operator's columns (``rows=False``) or
    rows (``rows=True``), in plan order: one shuffle, O(N k). Each block ends on the worker of
    its partition, where the products in plan order that use it run.

    Parameters
    ----------
    op : LaplexOperator
        An operator on the Dask backend.
    a : dask.array.Array, shape (n,) or (n, k)
        One value (or ``k``) per column anchor (per row anchor with ``rows=True``).
    rows : bool, optional
        Whose anchors ``a`` runs over: the columns (the default: a product's operand) or the
        rows.

    Returns
    -------
    dask.array.Array, shape (n, k)
        Chunked by partition; always 2-D, with ``a``'s dtype.

    Examples
    --------
    >>> import dask.array as da
    >>> from laplexops.dask import from_plan_order, to_plan_order
    >>> x = da.from_array(np.array([3.0, 0.0, 2.0, 1.0]), chunks=2)
    >>> op = lx.LaplexOperator(x, x)
    >>> vp = to_plan_order(op, x)
    >>> vp[:, 0].compute()  # the plan sorts each partition
    array([0., 1., 2., 3.])
    >>> from_plan_order(op, vp, rows=False)[:, 0].compute()
    array([3., 0., 2., 1.])
    """
    backend = _dask_operator(op)
    side = op._side if rows else op._side.other
    a = _two_dimensional(a, op.shape[0] if rows else op.shape[1], "a")
    return backend.to_plan(op._plan, side, a, beside=True)


def from_plan_order(op: Any, a: Any, *, rows: bool = True) -> Any:
    """``a``'s rows, given in plan order of the operator's rows (``rows=True``, a product's
    result) or columns, in the caller's order: one shuffle, O(N k).

    Parameters
    ----------
    op : LaplexOperator
        An operator on the Dask backend.
    a : dask.array.Array, shape (m, k)
        In plan order, one chunk per partition (as :func:`planned_matmat` or
        :func:`to_plan_order` return it).
    rows : bool, optional
        Whose anchors ``a`` runs over: the rows (the default) or the columns.

    Returns
    -------
    dask.array.Array, shape (m, k)
        Chunked as the operator's anchors of that side are.

    Examples
    --------
    >>> import dask.array as da
    >>> from laplexops.dask import from_plan_order, planned_matmat, to_plan_order
    >>> x = da.from_array(np.array([0.0, 1.0, 2.0]), chunks=2)
    >>> y = da.from_array(np.array([0.5, 1.5]), chunks=1)
    >>> op = lx.LaplexOperator(x, y)
    >>> v = da.from_array(np.array([1.0, 2.0]), chunks=1)
    >>> u = from_plan_order(op, planned_matmat(op, to_plan_order(op, v)))
    >>> np.round(u[:, 0].compute(), 4)
    array([1.0528, 1.8196, 1.4362])
    """
    backend = _dask_operator(op)
    side = op._side if rows else op._side.other
    plan = op._plan
    a = _two_dimensional(a, op.shape[0] if rows else op.shape[1], "a")
    if a.chunks[0] != tuple(int(n) for n in plan.lengths[side]):
        raise ValueError("a is not in the plan order of this operator (its chunks differ)")
    return backend.from_plan(plan, side, a)


def planned_matmat(op: Any, a: Any) -> Any:
    """``W @ a`` in plan order: ``a`` in the plan order of the columns, the result in that of
    the rows. No shuffle: one task per partition for its carry summary, one small task folding
    them, one per partition for its local scan. O(N k) work, O(P k) data between partitions.

    Parameters
    ----------
    op : LaplexOperator
        An operator on the Dask backend (``op.H`` and ``op.T`` too).
    a : dask.array.Array, shape (n, k)
        From :func:`to_plan_order` (or computed from such arrays, chunk by chunk).

    Returns
    -------
    dask.array.Array, shape (m, k)
        With dtype ``result_type(op.dtype, a.dtype)``, one chunk per partition.

    Examples
    --------
    >>> import dask.array as da
    >>> from laplexops.dask import planned_matmat, to_plan_order
    >>> x = da.from_array(np.array([0.0, 1.0]), chunks=1)
    >>> op = lx.LaplexOperator(x, x, rate=1.0)
    >>> np.round(planned_matmat(op, to_plan_order(op, da.ones(2, chunks=1))).compute(), 4)
    array([[1.3679],
           [1.3679]])
    """
    backend = _dask_operator(op)
    plan = op._plan
    side = op._side.other
    a = _two_dimensional(a, op.shape[1], "a")
    if a.chunks[0] != tuple(int(n) for n in plan.lengths[side]):
        raise ValueError("a is not in the plan order of this operator's columns (chunks differ)")
    dtype = op._result_dtype(np.dtype(a.dtype))
    a = a.astype(op._working_dtype(dtype, np.dtype(a.dtype)))
    return backend.apply_planned(plan, op._side, op._rate, a)[0]
