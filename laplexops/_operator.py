"""``LaplexOperator``: the dense matrix ``W[i, j] = exp(-s |x_i - y_j|)``, applied without storing
it.

The front end validates input, bridges array namespaces, and owns the plan cache; the arithmetic is
a backend's decayed scan (see :mod:`laplexops.backends`). Every product, adjoint, transpose and
gradient of an operator (and of the operators derived from it by ``H``, ``T`` and ``with_rate``)
shares one plan, built on first use in O(N log N); each further product costs O(N) for N = m + n.
The behaviour implemented here is specified in ``docs/reference.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _namespace as ns
from .backends import Backend, Side, get_backend
from .backends._base import gradient_reductions

__all__ = ["LaplexOperator", "Gradients", "DENSE_LIMIT"]

#: :meth:`LaplexOperator.to_dense` refuses matrices with more entries than this (1e8) unless
#: ``force=True``.
DENSE_LIMIT = 10**8


class Gradients(NamedTuple):
    """The gradients returned by :meth:`LaplexOperator.gradient`.

    For the real scalar ``L = Re(sum_i conj(g_i) (W v)_i)`` (summed over the columns of a 2-D
    ``v``), each field is the gradient of ``L`` with respect to one input. For a complex input
    ``p`` the value is ``dL/dRe(p) + i dL/dIm(p)`` (PyTorch's convention).

    Parameters
    ----------
    x : array, shape (m,)
        ``dL/dx``, in the anchors' namespace, on their device, with the operator's real dtype.
    y : array, shape (n,)
        ``dL/dy``, likewise.
    rate : float or complex
        ``dL/drate``: a Python float for a real rate, a complex for a complex rate.
    v : array, shape of ``v``
        ``dL/dv = W^H g``: its real part, in ``v``'s dtype, when ``v`` is real.

    Examples
    --------
    >>> op = lx.LaplexOperator(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]))
    >>> grads = op.gradient(np.array([1.0, 2.0]), np.array([1.0, 0.0, -1.0]))
    >>> grads._fields
    ('x', 'y', 'rate', 'v')
    >>> round(grads.rate, 4)
    -0.0314
    """

    x: Any
    y: Any
    rate: float | complex
    v: Any


#: the anchors' snapshots an operator keeps once its plan is built, in bytes (both together):
#: larger ones are let go where the backend can make them again from its plan (see
#: ``Backend.anchors``); at 1e8 anchors that is 4 or 8 bytes per anchor less
_ANCHORS_KEEP_BYTES = 1 << 28


class _PlanCell:
    """The lazily built plan, shared by an operator and its adjoint, transpose and re-rated copies,
    with the anchors' snapshots ``anchors`` in the plan's orientation (rows, columns) until the
    plan holds them (``None`` then, see ``LaplexOperator._anchors``); ``hint`` is the previous plan
    of a ``with_anchors`` step until this one is built."""

    __slots__ = ("plan", "hint", "anchors")

    def __init__(self, anchors: tuple[Any, Any], hint: Any = None) -> None:
        self.plan = None
        self.hint = hint
        self.anchors: tuple[Any, Any] | None = anchors


def _check_rate(rate: Any) -> float | complex:
    """``rate`` as a Python float (real) or complex (phased); the errors of ``docs/reference.md``,
    Errors."""
    if isinstance(rate, (bool, np.bool_)) or getattr(rate, "dtype", None) in (bool, np.bool_):
        raise TypeError("rate must be a real or complex number; got a boolean")
    if isinstance(rate, (str, bytes)):
        raise TypeError(f"rate must be a real or complex number; got the string {rate!r}")
    try:
        value = complex(rate)
    except (TypeError, ValueError):
        raise TypeError(
            f"rate must be a real or complex scalar; got {type(rate).__name__} {rate!r}"
        ) from None
    if not (np.isfinite(value.real) and np.isfinite(value.imag)):
        raise ValueError(f"rate must be finite; got {rate!r}")
    if value.real <= 0:
        raise ValueError(f"the real part of rate must be > 0; got {rate!r}")
    dtype = getattr(rate, "dtype", None)
    is_complex = isinstance(rate, (complex, np.complexfloating)) or (
        dtype is not None and "complex" in str(dtype)
    )
    return value if is_complex else value.real


def _numeric_dtype(a: Any, what: str) -> np.dtype:
    """The NumPy dtype of array ``a``; ``TypeError`` unless it is integer, real or complex."""
    dtype = ns.to_numpy_dtype(a.dtype)
    if dtype is None or dtype.kind not in "iufc":
        raise TypeError(
            f"{what} must have a numeric (integer, real or complex) dtype; got {a.dtype}"
        )
    return dtype


class LaplexOperator:
    """The LAPLEX matrix ``W[i, j] = exp(-rate * |x[i] - y[j]|)`` of shape ``(len(x), len(y))``.

    ``W`` is dense (typically full rank) and never stored. A product ``W @ v`` is exact: the
    merged anchors are sorted once (the *plan*, cached and shared with the adjoint, the transpose
    and re-rated copies), then two linear recurrences whose decays ``exp(-rate * dz)`` involve only
    differences ``dz >= 0`` of neighbouring sorted anchors give every row, so no factor can
    overflow whatever the anchors' spread. Ties (``x[i] == y[j]``) have distance 0 and weight 1.

    Parameters
    ----------
    x : array_like, shape (m,)
        Row anchors: a real 1-D array of any array-API namespace (NumPy, CuPy, PyTorch,
        array-api-strict, ...) or a sequence of numbers. Copied (a snapshot): later changes to the
        caller's array do not change the operator. Integer anchors become the namespace's default
        float; float16 becomes float32.
    y : array_like, shape (n,)
        Column anchors, as ``x``, from the same namespace and on the same device.
    rate : float or complex, optional
        The rate ``s``, finite with ``Re(s) > 0`` (default 1.0). A complex rate ``a + i w`` gives
        the phased kernel ``exp(-a |d|) (cos(w |d|) - i sin(w |d|))`` and a complex operator.
    backend : str or Backend, optional
        ``"auto"`` (the default) picks the first registered backend for the anchors' device (the
        Numba backend for host memory, the CuPy backend for CUDA memory), or the one chosen with
        :func:`laplexops.backends.set_backend`. A registered name (see
        :func:`laplexops.backends.registered`) or a :class:`~laplexops.backends.Backend` instance
        forces one, which must serve the anchors' device.

    Raises
    ------
    ValueError
        Anchors that are not 1-D or not finite, a rate that is not finite or has ``Re(rate) <= 0``,
        an unknown backend name, or a backend for another device than the anchors'.
    TypeError
        Anchors of a non-numeric or complex dtype, anchors from two namespaces or devices, a rate
        that is not a real or complex number (strings, booleans, arrays), or a ``backend`` that is
        neither a name nor a backend.
    RuntimeError
        When the backend (for ``"auto"``: every backend of the anchors' device) cannot run here;
        the reason is chained.

    See Also
    --------
    Gradients : What :meth:`gradient` returns.
    laplexops.backends : The backend registry.

    Notes
    -----
    With N = m + n, building the plan costs O(N log N) (a radix sort; anchors already in ascending
    order skip it, and :meth:`with_anchors` repairs the previous order in O(N + moves)); every
    product, adjoint product and gradient on a built plan costs O(N k) for k right-hand sides.
    Memory is O(N k): nothing of size m n is allocated outside :meth:`to_dense`.

    The operator satisfies SciPy's ``LinearOperator`` protocol (``shape``, ``dtype``,
    ``matvec``, ``rmatvec``, ``matmat``, ``rmatmat``), so it can be passed directly to
    :func:`scipy.sparse.linalg.cg` and the other iterative solvers.

    Examples
    --------
    >>> x = np.array([0.0, 1.0, 2.0])
    >>> y = np.array([0.5, 1.5])
    >>> op = lx.LaplexOperator(x, y, rate=1.0)
    >>> op
    LaplexOperator(shape=(3, 2), rate=1.0, dtype=float64, backend='numba')
    >>> np.round(op @ np.array([1.0, 2.0]), 4)
    array([1.0528, 1.8196, 1.4362])
    >>> np.allclose(op.to_dense(), np.exp(-np.abs(x[:, None] - y[None, :])))
    True
    """

    def __init__(
        self, x: Any, y: Any, rate: float | complex = 1.0, backend: str | Backend = "auto"
    ) -> None:
        rate = _check_rate(rate)
        xp, x, y, real = _anchors(x, y)
        chosen = get_backend(backend, ns.device_kind(x))
        xs, x_ordered = _snapshot(chosen, x, real, "x")
        ys, y_ordered = (
            (xs, x_ordered) if (y is x or _equal(xp, x, y)) else _snapshot(chosen, y, real, "y")
        )
        self._init(
            xp,
            (xs.shape[0], ys.shape[0]),
            np.dtype(xs.dtype),
            rate,
            chosen,
            _PlanCell((xs, ys)),
            like=x,
            ordered=(x_ordered, y_ordered),
        )

    def _init(
        self,
        xp: Any,
        shape: tuple[int, int],
        real: np.dtype,
        rate: float | complex,
        backend: Backend,
        cell: _PlanCell,
        flip: bool = False,
        like: Any = None,
        ordered: tuple[bool | None, bool | None] = (None, None),
    ) -> None:
        """Set the state: ``shape`` (rows, columns) and the real dtype ``real`` of the anchors,
        whose private native snapshots the plan ``cell`` holds (in the plan's orientation, which
        ``flip`` swaps); ``like`` an array of the caller's namespace and device, ``ordered`` what
        the snapshots said of their order (for the plan)."""
        self._xp, self._rate = xp, rate
        self._shape = shape
        self._real = real
        self._ordered = ordered
        self._like = like
        self._backend = backend
        self._cell = cell
        self._flip = flip
        self._dtype = np.result_type(real, np.complex64) if isinstance(rate, complex) else real

    def _anchors(self) -> tuple[Any, Any]:
        """The snapshots ``(x, y)`` (rows, columns): the cell's, or made again from the plan."""
        held = self._cell.anchors
        if held is None:  # let go once the plan was built, by a backend that can make them
            held = getattr(self._backend, "anchors")(self._cell.plan)  # noqa: B009 (optional)
        a, b = held
        return (b, a) if self._flip else (a, b)

    # ------------------------------------------------------------------ construction helpers
    def _derived(self, flip: bool, rate: float | complex) -> LaplexOperator:
        """An operator sharing this one's plan: the same anchors, maybe swapped, another rate."""
        op = object.__new__(LaplexOperator)
        swap = flip != self._flip
        op._init(
            self._xp,
            self._shape[::-1] if swap else self._shape,
            self._real,
            rate,
            self._backend,
            self._cell,
            flip,
            self._like,
            self._ordered[::-1] if swap else self._ordered,
        )
        return op

    def with_rate(self, rate: float | complex) -> LaplexOperator:
        """The operator on the same anchors with another rate, sharing this operator's plan.

        The plan depends on the anchors only, so nothing is sorted again: O(1) now, and the new
        operator's products cost O(N) from the first one. A step of a training loop that updates
        the rate only.

        Parameters
        ----------
        rate : float or complex
            The new rate, finite with ``Re(rate) > 0``. A complex rate makes a complex operator.

        Returns
        -------
        LaplexOperator
            ``exp(-rate * |x[i] - y[j]|)`` on this operator's anchors and backend.

        Raises
        ------
        ValueError
            A rate that is not finite or has ``Re(rate) <= 0``.
        TypeError
            A rate that is not a real or complex number.

        Examples
        --------
        >>> op = lx.LaplexOperator([0.0, 1.0, 2.0], [0.5, 1.5])
        >>> phased = op.with_rate(1.0 + 2.0j)
        >>> phased.rate, phased.dtype
        ((1+2j), dtype('complex128'))
        """
        return self._derived(self._flip, _check_rate(rate))

    def with_anchors(self, x: Any, y: Any) -> LaplexOperator:
        """A new operator on new anchors with this rate and backend: the next training step.

        The result is the operator ``LaplexOperator(x, y, self.rate, backend)``. When this
        operator's plan has been built and the shapes agree, the new plan is built on first use
        from it: anchors that moved little keep nearly the old order, which is repaired locally in
        O(N + moves) instead of sorted anew in O(N log N) (with a fallback to the sort when too
        much moved). The repaired order is the one a fresh sort gives (ties by original index).

        Parameters
        ----------
        x : array_like, shape (m',)
            The new row anchors, validated and copied as by the constructor.
        y : array_like, shape (n',)
            The new column anchors, likewise.

        Returns
        -------
        LaplexOperator
            The operator on the new anchors.

        Raises
        ------
        ValueError, TypeError
            As the constructor, for anchors that are not finite, not 1-D or not real numbers, or
            that live on another device than this operator's backend serves.

        Examples
        --------
        >>> x, y = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5])
        >>> op = lx.LaplexOperator(x, y).prepare()
        >>> step = op.with_anchors(x + 0.01, y)
        >>> np.allclose(step @ np.ones(2), lx.LaplexOperator(x + 0.01, y) @ np.ones(2))
        True
        """
        op = LaplexOperator(x, y, self._rate, self._backend)
        if self._cell.plan is not None and op.shape == self.shape:
            x_, y_ = op._anchors()
            op._flip = self._flip  # the plan's orientation, so that the hint lines up
            op._cell = _PlanCell((y_, x_) if op._flip else (x_, y_), hint=self._cell.plan)
        return op

    # ------------------------------------------------------------------ attributes
    @property
    def x(self) -> Any:
        """The row anchors, shape ``(m,)``: the operator's snapshot, with its real dtype.

        In the anchors' namespace and on their device: a read-only view for NumPy data, a copy
        otherwise (changing it cannot change the operator). Anchors of more than 256 MiB are
        held by the plan once it is built; they are then made again from it, in O(N).

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), [0.5, 1.5])
        >>> op.x
        array([0., 1., 2.])
        >>> op.x.flags.writeable
        False
        """
        return self._public(self._anchors()[0])

    @property
    def y(self) -> Any:
        """The column anchors, shape ``(n,)``: the operator's snapshot, as :attr:`x`.

        Examples
        --------
        >>> lx.LaplexOperator([2.0, 0.0], [1.5, 0.5, 1.0]).y
        array([1.5, 0.5, 1. ])
        """
        return self._public(self._anchors()[1])

    def _public(self, a: Any) -> Any:
        """The snapshot ``a`` for the caller: a read-only view for NumPy anchors, a copy in any
        other namespace (CuPy and PyTorch have no read-only arrays; a view would let a write to
        it change the operator)."""
        if isinstance(a, np.ndarray) and ns.compat.is_numpy_namespace(self._xp):
            a = a.view()
            a.flags.writeable = False
            return a
        return ns.result_to(self._xp, a.copy(), self._like)

    @property
    def rate(self) -> float | complex:
        """The rate ``s``: a Python float for a real rate, a complex for a complex one.

        A rate given as a complex number (or a complex NumPy scalar) stays complex even with a zero
        imaginary part; then the operator is complex too.

        Examples
        --------
        >>> lx.LaplexOperator(np.zeros(2), np.zeros(3), np.float32(2.0)).rate
        2.0
        >>> lx.LaplexOperator(np.zeros(2), np.zeros(3), 0.5 + 1j).rate
        (0.5+1j)
        """
        return self._rate

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: the number of row and of column anchors.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), np.arange(2.0) + 0.5)
        >>> op.shape
        (3, 2)
        """
        return self._shape

    @property
    def dtype(self) -> Any:
        """The operator's dtype, as a dtype object of the anchors' namespace.

        float32 or float64 after the anchors (the wider of the two; integer anchors give the
        namespace's default float, float16 gives float32), complex64 or complex128 of that
        precision for a complex rate. A product's result has ``result_type(dtype, operand dtype)``
        where integer operands do not raise the precision.

        Examples
        --------
        >>> x = np.zeros(3, dtype=np.float32)
        >>> lx.LaplexOperator(x, x).dtype
        dtype('float32')
        >>> lx.LaplexOperator(x, x, 1.0 + 0.5j).dtype
        dtype('complex64')
        >>> lx.LaplexOperator([0, 1], [2]).dtype
        dtype('float64')
        """
        return ns.from_numpy_dtype(self._xp, self._dtype)

    @property
    def backend(self) -> str:
        """The name of the backend that runs this operator (``"numba"``, ``"cupy"``, ...).

        Examples
        --------
        >>> lx.LaplexOperator([0.0, 1.0], [0.5], backend="auto").backend  # host data
        'numba'
        """
        return self._backend.name

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"LaplexOperator(shape=({m}, {n}), rate={self._rate!r}, dtype={self._dtype}, "
            f"backend={self._backend.name!r})"
        )

    # ------------------------------------------------------------------ plan
    @property
    def _plan(self) -> Any:
        return self._build_plan()

    def _build_plan(self) -> Any:
        """The shared plan, built now if it is not yet."""
        cell = self._cell
        if cell.plan is None:
            held = cell.anchors
            if held is None:  # another thread built it meanwhile (and let the anchors go)
                return cell.plan
            x, y = held
            ordered = self._ordered[::-1] if self._flip else self._ordered
            cell.plan = self._backend.plan(x, y, cell.hint, ordered)
            cell.hint = None
            if x.nbytes + (0 if y is x else y.nbytes) > _ANCHORS_KEEP_BYTES and hasattr(
                self._backend, "anchors"
            ):
                cell.anchors = None  # the plan holds them: made again on request
        return cell.plan

    def prepare(self) -> LaplexOperator:
        """Build the plan now instead of in the first product.

        The plan (the merged sort of the anchors) is shared by this operator and every operator
        derived from it by :attr:`H`, :attr:`T` and :meth:`with_rate`. Building it costs
        O(N log N), less for anchors already sorted or repaired after :meth:`with_anchors`.
        Where the backend can, ``prepare`` also lays out what this operator's products need
        beyond the plan (on the CPU: the merge counts of its orientation, its decays, the scan's
        scratch), so that its first product costs what later ones do; a second call does
        nothing more. Useful to time products apart from the sort, or to sort before a
        latency-sensitive loop.

        Returns
        -------
        LaplexOperator
            ``self``, with its plan built.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.linspace(0.0, 2.0, 3), np.array([0.5, 1.5]))
        >>> op.prepare() is op
        True
        """
        plan = self._build_plan()
        lay_out = getattr(self._backend, "prepare", None)
        if lay_out is not None:
            lay_out(plan, self._side, self._rate, self._dtype)
        return self

    @property
    def _side(self) -> Side:
        return Side.ROWS_Y if self._flip else Side.ROWS_X

    # ------------------------------------------------------------------ operands
    def _operand(
        self, v: Any, length: int, what: str, ndims: tuple[int, ...] = (1, 2)
    ) -> tuple[Any, np.dtype, Any]:
        """``v`` as a native array checked against namespace, device and shape; with its dtype."""
        v = ns.as_array(v)
        if ns.namespace(v) is not self._xp and not (
            ns.compat.is_numpy_array(v) and ns.compat.is_numpy_namespace(self._xp)
        ):
            raise TypeError(
                f"{what} must come from the anchors' array namespace "
                f"({self._xp.__name__}); got {type(v).__module__}.{type(v).__name__}"
            )
        if not ns.same_device(v, self._like):
            raise TypeError(
                f"{what} lives on device {ns.compat.device(v)}, the anchors on "
                f"{ns.compat.device(self._like)}; move one of them explicitly"
            )
        dtype = _numeric_dtype(v, what)
        if v.ndim not in ndims:
            raise ValueError(f"{what} must have ndim in {ndims}; got shape {tuple(v.shape)}")
        if v.shape[0] != length:
            raise ValueError(
                f"{what} must have leading dimension {length} to match the operator "
                f"of shape {self.shape}; got shape {tuple(v.shape)}"
            )
        return self._backend.asarray(ns.exportable(v)), dtype, v

    def _result_dtype(self, *dtypes: np.dtype) -> np.dtype:
        """``result_type(op.dtype, ...)``, where integer operands do not raise the precision."""
        return np.result_type(self._dtype, *(d for d in dtypes if d.kind in "fc"))

    @staticmethod
    def _working_dtype(result: np.dtype, operand: np.dtype) -> np.dtype:
        """The operand at the result's precision, keeping a real operand real: a real vector
        against a complex rate needs no complex copy (the backend promotes as it scans)."""
        return result if operand.kind == "c" else np.finfo(result).dtype

    def _apply(self, v: Any, adjoint: bool, ndims: tuple[int, ...], what: str) -> Any:
        """``W v`` (``W^H v`` when ``adjoint``) for an operand named ``what`` of ``ndims``; a
        vector method (``ndims`` (1, 2)) takes one column at most."""
        m, n = self.shape
        if ndims == (1, 2) and getattr(v, "ndim", 1) == 2 and v.shape[1] != 1:
            lead, name = (m, "rmatvec") if adjoint else (n, "matvec")
            raise ValueError(
                f"{name} takes shape ({lead},) or ({lead}, 1); got {tuple(v.shape)}; "
                f"use {name.replace('vec', 'mat')} for several columns"
            )
        native, dtype, original = self._operand(v, m if adjoint else n, what, ndims)
        work = self._working_dtype(self._result_dtype(dtype), dtype)
        k = 1 if native.ndim == 1 else native.shape[1]
        b = native.astype(work, copy=False).reshape(native.shape[0], k)
        side = self._side.other if adjoint else self._side
        rate = self._rate.conjugate() if adjoint else self._rate
        out = self._backend.apply(self._plan, side, rate, b)[0]
        out = out.reshape(out.shape[0]) if native.ndim == 1 else out
        return ns.result_to(self._xp, out, original)

    # ------------------------------------------------------------------ LinearOperator protocol
    def matvec(self, v: Any) -> Any:
        """The product ``W @ v``: ``u[i] = sum_j exp(-rate |x[i] - y[j]|) v[j]``.

        O(N) on a built plan, O(N log N) when this call builds it (N = m + n).

        Parameters
        ----------
        v : array, shape (n,) or (n, 1)
            Real or complex, from the anchors' namespace and device.

        Returns
        -------
        array, shape (m,) or (m, 1)
            In ``v``'s namespace and on its device, with dtype ``result_type(op.dtype, v.dtype)``
            (an integer ``v`` does not raise the precision).

        Raises
        ------
        ValueError
            An operand whose leading dimension is not n, of ndim 0 or > 2, or of shape
            ``(n, k)`` with ``k > 1`` (use :meth:`matmat`).
        TypeError
            An operand of a non-numeric dtype, or from another namespace or device than the
            anchors.

        Examples
        --------
        >>> op = lx.LaplexOperator(x=np.arange(3.0), y=[0.5, 1.5])
        >>> np.round(op.matvec(np.array([1.0, 2.0])), 4)
        array([1.0528, 1.8196, 1.4362])
        """
        return self._apply(v, False, (1, 2), "v")

    def matmat(self, V: Any) -> Any:
        """The product ``W @ V`` of ``k`` columns at once; O(N k) on a built plan.

        ``V`` (real or complex, from the anchors' namespace and device) is checked as
        :meth:`matvec` checks its operand, except that it must be 2-D; the result is in ``V``'s
        namespace and on its device, with the dtype :meth:`matvec` gives.

        Parameters
        ----------
        V : array, shape (n, k)
            ``k`` columns, ``k = 1`` included.

        Returns
        -------
        array, shape (m, k)
            Column ``j`` is ``W @ V[:, j]``.

        Raises
        ------
        ValueError, TypeError
            As :meth:`matvec`; ``ValueError`` also for a ``V`` that is not 2-D.

        See Also
        --------
        matvec, rmatmat

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), [0.5, 1.5], rate=1.0)
        >>> np.round(op.matmat(np.eye(2)), 4)
        array([[0.6065, 0.2231],
               [0.6065, 0.6065],
               [0.2231, 0.6065]])
        """
        return self._apply(V, False, (2,), "V")

    def rmatvec(self, u: Any) -> Any:
        """The adjoint product ``W^H @ u`` (conjugate transpose); O(N) on a built plan.

        ``(W^H u)[j] = sum_i exp(-conj(rate) |x[i] - y[j]|) u[i]``, on the plan :meth:`matvec`
        uses. ``u`` (real or complex, from the anchors' namespace and device) is checked as
        :meth:`matvec` checks its operand, with m in place of n; the result is in ``u``'s
        namespace and on its device, with the dtype :meth:`matvec` gives.

        Parameters
        ----------
        u : array, shape (m,) or (m, 1)
            One right-hand side of the adjoint (an upstream gradient, say).

        Returns
        -------
        array, shape (n,) or (n, 1)
            ``W^H u``, shaped as ``u`` is (1-D or one column).

        Raises
        ------
        ValueError, TypeError
            As :meth:`matvec`; several columns go to :meth:`rmatmat`.

        See Also
        --------
        matvec, H

        Examples
        --------
        >>> op = lx.LaplexOperator([0, 1, 2], [0.5, 1.5])  # integer anchors: float64
        >>> np.round(op.rmatvec(np.array([1.0, 0.0, -1.0])), 4)
        array([ 0.3834, -0.3834])
        """
        return self._apply(u, True, (1, 2), "u")

    def rmatmat(self, U: Any) -> Any:
        """The adjoint product ``W^H @ U`` of ``k`` columns at once; O(N k) on a built plan.

        Each column as :meth:`rmatvec` would give it, from one pass over the plan per column
        block; ``U`` as :meth:`matmat` takes ``V``, with m rows instead of n, and the same
        errors (:class:`ValueError`, :class:`TypeError`).

        Parameters
        ----------
        U : array, shape (m, k)
            The adjoint's right-hand sides.

        Returns
        -------
        array, shape (n, k)
            ``W^H U``: conjugate weights, rows and columns swapped.

        See Also
        --------
        matmat, rmatvec

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), y=np.array([0.5, 1.5]))
        >>> op.rmatmat(np.ones((3, 4))).shape
        (2, 4)
        """
        return self._apply(U, True, (2,), "U")

    def __matmul__(self, v: Any) -> Any:
        """``op @ v``: :meth:`matvec` for a 1-D ``v``, :meth:`matmat` for a 2-D one.

        Parameters
        ----------
        v : array, shape (n,) or (n, k)
            The operand, from the anchors' namespace and device.

        Returns
        -------
        array, shape (m,) or (m, k)
            ``W @ v``, in ``v``'s namespace and on its device.

        Raises
        ------
        ValueError
            For an operand of any other number of dimensions, and as :meth:`matvec` and
            :meth:`matmat`.
        TypeError
            As :meth:`matvec`.

        Examples
        --------
        >>> op = lx.LaplexOperator(x=[0.0, 1.0, 2.0], y=[0.5, 1.5], rate=1.0)
        >>> (op @ np.ones(2)).shape, (op @ np.ones((2, 5))).shape
        ((3,), (3, 5))
        """
        ndim = getattr(ns.as_array(v), "ndim", None)
        if ndim == 1:
            return self.matvec(v)
        if ndim == 2:
            return self.matmat(v)
        raise ValueError(f"operand of @ must be 1-D or 2-D; got ndim {ndim}")

    def dot(self, v: Any) -> Any:
        """The product ``self @ v``: :meth:`matvec` for 1-D ``v``, :meth:`matmat` for 2-D ``v``.

        Parameters
        ----------
        v : array, shape (n,) or (n, k)
            The operand.

        Returns
        -------
        array, shape (m,) or (m, k)
            ``W @ v``.

        Raises
        ------
        ValueError, TypeError
            As :meth:`matvec` and :meth:`matmat`; ``ValueError`` for an operand of ndim 0 or > 2.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.linspace(0.0, 2.0, 3), [0.5, 1.5], 1.0)
        >>> np.round(op.dot(np.array([1.0, 2.0])), 4)
        array([1.0528, 1.8196, 1.4362])
        """
        return self @ v

    @property
    def H(self) -> LaplexOperator:
        """The adjoint ``W^H``: the operator ``LaplexOperator(y, x, conj(rate))``, shape ``(n, m)``.

        It shares this operator's plan (O(1), no sort); ``op.H @ u`` equals ``op.rmatvec(u)``. For
        a real rate ``W^H = W^T``.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]), 1.0 + 2.0j)
        >>> op.H
        LaplexOperator(shape=(2, 3), rate=(1-2j), dtype=complex128, backend='numba')
        >>> np.allclose(op.H.to_dense(), op.to_dense().conj().T)
        True
        """
        return self._derived(not self._flip, self._rate.conjugate())

    def adjoint(self) -> LaplexOperator:
        """The adjoint ``W^H``, the same as :attr:`H`.

        Returns
        -------
        LaplexOperator
            ``LaplexOperator(y, x, conj(rate))``, sharing this operator's plan.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), np.array([0.5, 1.5]), backend="numba")
        >>> op.adjoint().shape
        (2, 3)
        """
        return self.H

    @property
    def T(self) -> LaplexOperator:
        """The transpose ``W^T``: the operator ``LaplexOperator(y, x, rate)``, shape ``(n, m)``.

        It shares this operator's plan (O(1), no sort).

        Examples
        --------
        >>> op = lx.LaplexOperator((0.0, 1.0, 2.0), (0.5, 1.5))
        >>> np.allclose(op.T.to_dense(), op.to_dense().T)
        True
        """
        return self._derived(not self._flip, self._rate)

    def transpose(self) -> LaplexOperator:
        """The transpose ``W^T``, the same as :attr:`T`.

        Returns
        -------
        LaplexOperator
            ``LaplexOperator(y, x, rate)``, sharing this operator's plan.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), np.arange(0.5, 2.0))
        >>> op.transpose().shape
        (2, 3)
        """
        return self.T

    def aslinearoperator(self) -> Any:
        """This operator wrapped as a SciPy (host data) or CuPy (CUDA data) ``LinearOperator``.

        The operator itself already satisfies the ``LinearOperator`` protocol and can be passed
        to the solvers directly; the wrapper is for code that needs the class (for instance to
        compose operators with ``+`` and ``*``). For an operator on Dask arrays it is SciPy's,
        taking and returning NumPy arrays: each call is chunked as the anchors are, runs on the
        cluster and is computed, so SciPy's solvers can drive a distributed operator.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator or cupyx.scipy.sparse.linalg.LinearOperator
            With this operator's shape and NumPy dtype, calling :meth:`matvec`, :meth:`rmatvec`,
            :meth:`matmat` and :meth:`rmatmat`.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.arange(3.0), np.linspace(0.5, 1.5, 2), rate=1)
        >>> lin = op.aslinearoperator()
        >>> lin.shape, lin.dtype
        ((3, 2), dtype('float64'))
        >>> np.round(lin.matvec(np.array([1.0, 2.0])), 4)
        array([1.0528, 1.8196, 1.4362])
        """
        if self._backend.device == "cuda":
            from cupyx.scipy.sparse.linalg import LinearOperator
        else:
            from scipy.sparse.linalg import LinearOperator
        methods = (self.matvec, self.rmatvec, self.matmat, self.rmatmat)
        if self._backend.device == "dask":
            # SciPy's solvers pass NumPy arrays: each call runs on the cluster and returns NumPy
            x, y = self._anchors()
            chunks = (y.chunks[0], x.chunks[0], y.chunks[0], x.chunks[0])
            methods = tuple(_through_dask(f, c) for f, c in zip(methods, chunks))
        matvec, rmatvec, matmat, rmatmat = methods
        return LinearOperator(
            self.shape,
            matvec=matvec,
            rmatvec=rmatvec,
            matmat=matmat,
            rmatmat=rmatmat,
            dtype=self._dtype,
        )

    def to_dense(self, force: bool = False) -> Any:
        """The explicit matrix ``W[i, j] = exp(-rate |x[i] - y[j]|)``: for checks and small sizes.

        Computed from the definition in float64 (complex128), then cast to :attr:`dtype`: O(m n)
        time and memory, unlike every other member.

        Parameters
        ----------
        force : bool, optional
            Build it even above :data:`~laplexops.DENSE_LIMIT` (1e8) entries.

        Returns
        -------
        array, shape (m, n)
            In the anchors' namespace and on their device, with dtype :attr:`dtype`.

        Raises
        ------
        ValueError
            When ``m * n`` exceeds :data:`~laplexops.DENSE_LIMIT` and ``force`` is false.

        Examples
        --------
        >>> op = lx.LaplexOperator(np.r_[0.0:3.0], [0.5, 1.5])
        >>> np.round(op.to_dense(), 4)
        array([[0.6065, 0.2231],
               [0.6065, 0.6065],
               [0.2231, 0.6065]])
        """
        m, n = self.shape
        if m * n > DENSE_LIMIT and not force:
            raise ValueError(
                f"to_dense of a {m} x {n} operator ({m * n:.3g} entries) exceeds "
                f"the guard of {DENSE_LIMIT:.0e}; pass force=True to build it anyway"
            )
        xp = self._backend.xp
        x, y = (a.astype(np.float64) for a in self._anchors())
        dense = xp.exp(-self._rate * xp.abs(x[:, None] - y[None, :])).astype(self._dtype)
        return ns.result_to(self._xp, dense, self._like)

    # ------------------------------------------------------------------ gradient
    def gradient(self, v: Any, g: Any) -> Gradients:
        """Gradients of ``L = Re(sum_i conj(g_i) (W v)_i)`` with respect to x, y, rate and v.

        ``g`` is the upstream gradient of a loss with respect to ``W @ v``, so the result is what
        a chain rule needs. For a 2-D ``v`` the sum runs over the columns too. With
        ``S_ij = sign(x_i - y_j)`` (``sign(0) = 0``) and ``s`` the rate::

            dL/dx_i  = Re( conj(g_i) sum_j (-s) S_ij W_ij v_j )
            dL/dy_j  = Re( sum_i conj(g_i) s S_ij W_ij v_j )
            dL/ds    = Re(A) for a real s, conj(A) for a complex s,
                       A = sum_ij conj(g_i) (-|x_i - y_j|) W_ij v_j
            dL/dv    = W^H g   (its real part when v is real)

        For a complex parameter ``p`` the value is ``dL/dRe(p) + i dL/dIm(p)`` (PyTorch's
        convention). All four come from two passes of the scan on the cached plan (the signed and
        first-moment reductions of ``v`` onto the rows, the plain and signed reductions of
        ``conj(g)`` onto the columns): O(N k), like two products.

        Parameters
        ----------
        v : array, shape (n,) or (n, k)
            The operand of the product, from the anchors' namespace and device.
        g : array, shape (m,) or (m, k)
            The upstream gradient, shaped like ``W @ v``.

        Returns
        -------
        Gradients
            The named tuple ``(x, y, rate, v)``: arrays in the anchors' namespace and device for
            ``x`` (shape (m,)) and ``y`` (shape (n,)) with the operator's real dtype, a Python
            float or complex for ``rate``, and an array shaped like ``v`` for ``v``.

        Raises
        ------
        ValueError
            A ``v`` or ``g`` whose leading dimension does not match, of ndim 0 or > 2, or a ``g``
            not shaped like ``W @ v``.
        TypeError
            As :meth:`matvec`, for either operand.

        Examples
        --------
        >>> x, y = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5])
        >>> op = lx.LaplexOperator(x, y, rate=1.0)
        >>> v, g = np.array([1.0, 2.0]), np.array([1.0, 0.0, -1.0])
        >>> grads = op.gradient(v, g)
        >>> np.round(grads.x, 4)
        array([ 1.0528, -0.    ,  1.4362])
        >>> round(grads.rate, 4)
        -0.0314
        >>> np.allclose(grads.v, op.rmatvec(g))
        True
        """
        m, n = self.shape
        vn, vdtype, v_orig = self._operand(v, n, "v")
        gn, gdtype, _ = self._operand(g, m, "g")
        if gn.shape != ((m,) if vn.ndim == 1 else (m, vn.shape[1])):
            raise ValueError(
                f"g must have the shape of W @ v, {(m,) + tuple(vn.shape[1:])}; "
                f"got {tuple(gn.shape)}"
            )
        dtype = self._result_dtype(vdtype, gdtype)
        k = 1 if vn.ndim == 1 else vn.shape[1]
        V = vn.astype(self._working_dtype(dtype, vdtype), copy=False).reshape(n, k)
        G = gn.astype(self._working_dtype(dtype, gdtype), copy=False).reshape(m, k)
        s = self._rate
        plan, backend = self._plan, self._backend
        real = self._real
        gc = G.conj() if G.dtype.kind == "c" else G
        reductions = getattr(backend, "gradient_reductions", None)
        if reductions is None:
            dx, a, dy, ct_sum = gradient_reductions(backend, plan, self._side, s, V, gc)
        else:
            dx, a, dy, ct_sum = reductions(plan, self._side, s, V, gc)
        gx, gy = _times_minus_rate(dx, s), _times_minus_rate(dy, s)
        a = -a
        gv = ct_sum.conj() if ct_sum.dtype.kind == "c" else ct_sum
        if vdtype.kind == "c":
            gv = gv.astype(dtype, copy=False)
        else:
            gv = gv.real.astype(vdtype if vdtype.kind == "f" else real, copy=False)
        gv = gv.reshape(n) if vn.ndim == 1 else gv
        like = self._like
        return Gradients(
            ns.result_to(self._xp, gx.astype(real, copy=False), like),
            ns.result_to(self._xp, gy.astype(real, copy=False), like),
            complex(a.conj()) if isinstance(s, complex) else float(a.real),
            ns.result_to(self._xp, gv, v_orig),
        )


def _through_dask(method: Any, chunks: tuple[int, ...]) -> Any:
    """``method`` (a product of an operator on Dask arrays) for NumPy operands: the operand
    chunked as the operator's anchors are, the result computed into NumPy."""
    import dask.array as da

    def call(a: Any) -> Any:
        a = np.asarray(a)
        blocks = (chunks,) if a.ndim == 1 else (chunks, (a.shape[1],))
        return np.asarray(method(da.from_array(a, chunks=blocks)).compute())

    return call


def _times_minus_rate(d: Any, s: float | complex) -> Any:
    """``Re(-s d)`` for a fresh array ``d`` of the gradient's reductions: in place when both are
    real (no temporary of the anchors' length)."""
    if d.dtype.kind == "c" or isinstance(s, complex):
        return (-s * d).real
    d *= -s
    return d


def _anchors(x: Any, y: Any) -> tuple[Any, Any, Any, np.dtype]:
    """Validate anchors as ``docs/reference.md``, Errors, says (their finiteness as they are
    copied, ``_snapshot``); return (namespace, x, y, their real NumPy dtype)."""
    x, y = ns.as_array(x), ns.as_array(y)
    xp = ns.namespace(x, y)
    if not ns.same_device(x, y):
        raise TypeError(
            f"x and y must live on one device; got {ns.compat.device(x)} and {ns.compat.device(y)}"
        )
    dtypes = []
    for a, name in ((x, "x"), (y, "y")):
        dtype = _numeric_dtype(a, name)
        if dtype.kind == "c":
            raise TypeError(f"anchors must be real; {name} has dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"anchors must be 1-D; {name} has shape {tuple(a.shape)}")
        dtypes.append(dtype)
    floats = [d for d in dtypes if d.kind == "f"]
    real = np.result_type(*floats) if floats else ns.default_float(xp)
    # half precision cannot hold the decays' range: float16 anchors compute in float32
    return xp, x, y, np.result_type(real, np.float32)


def _snapshot(backend: Backend, a: Any, real: np.dtype, name: str) -> tuple[Any, bool | None]:
    """The backend's private copy of anchors ``a`` as ``real`` and whether they are in ascending
    order (``None``: not known); ``ValueError`` (``docs/reference.md``, Errors) when one is not
    finite (checked in the same pass as the copy)."""
    copy, bad, ordered = backend.snapshot(backend.asarray(ns.exportable(a)), real)
    if bad:
        raise ValueError(f"anchors must be finite; {name} has {bad} non-finite value(s)")
    return copy, ordered


def _equal(xp: Any, x: Any, y: Any) -> bool:
    """Whether two validated anchor arrays hold the same values (then one sort serves both); the
    first values are compared first, which settles most distinct pairs without a full pass."""
    if x.shape != y.shape:
        return False
    if x.shape[0] and not bool(x[0] == y[0]):
        return False
    return bool(xp.all(x == y))
