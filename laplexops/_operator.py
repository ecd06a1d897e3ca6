"""``LaplexOperator``: the dense matrix ``W[i, j] = exp(-s |x_i - y_j|)``, applied without storing
it.

The front end validates input, bridges array namespaces, and owns the plan cache; the arithmetic is
a backend's decayed scan (see :mod:`laplexops.backends`). Every product, adjoint, transpose and
gradient of an operator (and of the operators derived from it by ``H``, ``T`` and ``with_rate``)
shares one plan, built on first use in O(N log N); each further product costs O(N) for N = m + n.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _namespace as ns
from .backends import Backend, Side, get_backend

__all__ = ["LaplexOperator", "Gradients", "DENSE_LIMIT"]

#: ``to_dense`` refuses matrices with more entries than this unless ``force=True``
DENSE_LIMIT = 10**8


class Gradients(NamedTuple):
    """Gradients of ``L = Re(sum conj(g) * (W @ v))``; see :meth:`LaplexOperator.gradient`."""

    x: Any
    y: Any
    rate: float | complex
    v: Any


class _PlanCell:
    """The lazily built plan, shared by an operator and its adjoint, transpose and re-rated copies;
    ``hint`` is the previous plan of a ``with_anchors`` step until this one is built."""

    __slots__ = ("plan", "hint")

    def __init__(self, hint=None):
        self.plan = None
        self.hint = hint


def _check_rate(rate: Any) -> float | complex:
    """``rate`` as a Python float (real) or complex (phased); errors per SPEC §5."""
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

    Parameters
    ----------
    x, y : 1-D real arrays (any array-API namespace, or sequences)
        Row and column anchors. They are copied (snapshots): later changes to the caller's arrays do
        not affect the operator. Integer anchors become the namespace's default float.
    rate : float or complex
        ``Re(rate) > 0``. A complex rate ``a + i w`` gives the phased kernel
        ``exp(-a|d|) (cos(w|d|) - i sin(w|d|))``.
    backend : str or Backend
        ``"auto"`` (the default) chooses by the anchors' device; a registered name
        (``"numba"``, ``"cupy"``, see :func:`laplexops.backends.registered`) or a backend
        instance forces one, which must serve the anchors' device.

    Products cost O(N log N) for the first call (the merged sort, cached as the plan) and O(N) for
    every further product, adjoint or gradient, N = m + n. Memory is O(N): W is never formed.
    """

    def __init__(
        self, x: Any, y: Any, rate: float | complex = 1.0, backend: str | Backend = "auto"
    ):
        rate = _check_rate(rate)
        xp, x, y, real = _anchors(x, y)
        chosen = get_backend(backend, ns.device_kind(x))
        xs, x_ordered = _snapshot(chosen, x, real, "x")
        ys, y_ordered = (
            (xs, x_ordered) if (y is x or _equal(xp, x, y)) else _snapshot(chosen, y, real, "y")
        )
        self._init(xp, xs, ys, rate, chosen, like=x, ordered=(x_ordered, y_ordered))

    def _init(
        self, xp, x, y, rate, backend, cell=None, flip=False, like=None, ordered=(None, None)
    ):
        """Set the state; ``x`` and ``y`` are private native anchors (rows, columns), ``like`` an
        array of the caller's namespace and device, ``ordered`` what their snapshots said of their
        order (for the plan)."""
        self._xp, self._x, self._y, self._rate = xp, x, y, rate
        self._ordered = ordered
        self._like = like
        self._backend = backend
        self._cell = _PlanCell() if cell is None else cell
        self._flip = flip
        real = np.dtype(x.dtype)
        self._dtype = np.result_type(real, np.complex64) if isinstance(rate, complex) else real

    # ------------------------------------------------------------------ construction helpers
    def _derived(self, flip: bool, rate) -> LaplexOperator:
        """An operator sharing this one's plan: the same anchors, maybe swapped, another rate."""
        op = object.__new__(LaplexOperator)
        swap = flip != self._flip
        x, y = (self._y, self._x) if swap else (self._x, self._y)
        op._init(
            self._xp,
            x,
            y,
            rate,
            self._backend,
            self._cell,
            flip,
            self._like,
            self._ordered[::-1] if swap else self._ordered,
        )
        return op

    def with_rate(self, rate: float | complex) -> LaplexOperator:
        """The operator with the same anchors and plan and a new ``rate`` (no re-sort)."""
        return self._derived(self._flip, _check_rate(rate))

    def with_anchors(self, x: Any, y: Any) -> LaplexOperator:
        """A new operator on new anchors with this rate and backend: the next training step.

        Its plan is built on first use from this operator's plan when there is one: anchors that
        moved little keep nearly the old order, which is repaired locally (O(N + moves)) instead
        of sorted anew.
        """
        op = LaplexOperator(x, y, self._rate, self._backend)
        if self._cell.plan is not None and op.shape == self.shape:
            op._flip = self._flip  # the plan's orientation, so that the hint lines up
            op._cell = _PlanCell(hint=self._cell.plan)
        return op

    # ------------------------------------------------------------------ attributes
    @property
    def x(self):
        """Row anchors (a read-only snapshot, in the anchors' namespace)."""
        return self._public(self._x)

    @property
    def y(self):
        """Column anchors (a read-only snapshot, in the anchors' namespace)."""
        return self._public(self._y)

    def _public(self, a):
        if isinstance(a, np.ndarray):
            a = a.view()
            a.flags.writeable = False
        else:  # no read-only arrays on the GPU: a copy keeps the snapshot intact
            a = a.copy()
        return ns.result_to(self._xp, a, self._like)

    @property
    def rate(self) -> float | complex:
        return self._rate

    @property
    def shape(self) -> tuple[int, int]:
        return (self._x.shape[0], self._y.shape[0])

    @property
    def dtype(self):
        """float32/float64 of the anchors, complex of that precision for a complex rate."""
        return ns.from_numpy_dtype(self._xp, self._dtype)

    @property
    def backend(self) -> str:
        return self._backend.name

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"LaplexOperator(shape=({m}, {n}), rate={self._rate!r}, dtype={self._dtype}, "
            f"backend={self._backend.name!r})"
        )

    # ------------------------------------------------------------------ plan
    @property
    def _plan(self):
        return self._build_plan()

    def _build_plan(self):
        """The shared plan, built now if it is not yet."""
        cell = self._cell
        if cell.plan is None:
            x, y = (self._y, self._x) if self._flip else (self._x, self._y)
            ordered = self._ordered[::-1] if self._flip else self._ordered
            cell.plan = self._backend.plan(x, y, cell.hint, ordered)
            cell.hint = None
        return cell.plan

    def prepare(self) -> LaplexOperator:
        """Build the plan now (otherwise the first product does); returns ``self``. O(N log N)."""
        self._build_plan()
        return self

    @property
    def _side(self) -> Side:
        return Side.ROWS_Y if self._flip else Side.ROWS_X

    # ------------------------------------------------------------------ operands
    def _operand(self, v, length: int, what: str, ndims=(1, 2)):
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

    def _apply(self, v, adjoint: bool, ndims, what: str):
        m, n = self.shape
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
    def matvec(self, v):
        """``W @ v`` for ``v`` of shape ``(n,)`` or ``(n, 1)``; O(N) on a cached plan."""
        if getattr(v, "ndim", 1) == 2 and v.shape[1] != 1:
            raise ValueError(
                f"matvec takes shape ({self.shape[1]},) or ({self.shape[1]}, 1); "
                f"got {tuple(v.shape)}; use matmat for several columns"
            )
        return self._apply(v, False, (1, 2), "v")

    def matmat(self, V):
        """``W @ V`` for ``V`` of shape ``(n, k)``; O(N k)."""
        return self._apply(V, False, (2,), "V")

    def rmatvec(self, u):
        """``W^H @ u`` for ``u`` of shape ``(m,)`` or ``(m, 1)``; O(N)."""
        if getattr(u, "ndim", 1) == 2 and u.shape[1] != 1:
            raise ValueError(
                f"rmatvec takes shape ({self.shape[0]},) or ({self.shape[0]}, 1); "
                f"got {tuple(u.shape)}; use rmatmat for several columns"
            )
        return self._apply(u, True, (1, 2), "u")

    def rmatmat(self, U):
        """``W^H @ U`` for ``U`` of shape ``(m, k)``; O(N k)."""
        return self._apply(U, True, (2,), "U")

    def __matmul__(self, v):
        ndim = getattr(ns.as_array(v), "ndim", None)
        if ndim == 1:
            return self.matvec(v)
        if ndim == 2:
            return self.matmat(v)
        raise ValueError(f"operand of @ must be 1-D or 2-D; got ndim {ndim}")

    def dot(self, v):
        """Same as ``self @ v``."""
        return self @ v

    @property
    def H(self) -> LaplexOperator:
        """``W^H = LaplexOperator(y, x, conj(rate))``, sharing the plan."""
        return self._derived(not self._flip, self._rate.conjugate())

    def adjoint(self) -> LaplexOperator:
        """Same as :attr:`H`."""
        return self.H

    @property
    def T(self) -> LaplexOperator:
        """``W^T = LaplexOperator(y, x, rate)``, sharing the plan."""
        return self._derived(not self._flip, self._rate)

    def transpose(self) -> LaplexOperator:
        """Same as :attr:`T`."""
        return self.T

    def aslinearoperator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` applying this operator for host data, a
        ``cupyx.scipy.sparse.linalg.LinearOperator`` for CUDA data."""
        if self._backend.device == "cuda":
            from cupyx.scipy.sparse.linalg import LinearOperator
        else:
            from scipy.sparse.linalg import LinearOperator
        return LinearOperator(
            self.shape,
            matvec=self.matvec,
            rmatvec=self.rmatvec,
            matmat=self.matmat,
            rmatmat=self.rmatmat,
            dtype=self._dtype,
        )

    def to_dense(self, force: bool = False):
        """The explicit ``(m, n)`` matrix, O(m n) memory: for tests and small sizes.

        Raises ``ValueError`` above ``DENSE_LIMIT`` (1e8) entries unless ``force=True``.
        """
        m, n = self.shape
        if m * n > DENSE_LIMIT and not force:
            raise ValueError(
                f"to_dense of a {m} x {n} operator ({m * n:.3g} entries) exceeds "
                f"the guard of {DENSE_LIMIT:.0e}; pass force=True to build it anyway"
            )
        xp = self._backend.xp
        x = self._x.astype(np.float64)
        y = self._y.astype(np.float64)
        dense = xp.exp(-self._rate * xp.abs(x[:, None] - y[None, :])).astype(self._dtype)
        return ns.result_to(self._xp, dense, self._like)

    # ------------------------------------------------------------------ gradient
    def gradient(self, v, g) -> Gradients:
        """Gradients of ``L = Re(sum_i conj(g_i) (W v)_i)`` (summed over columns for 2-D ``v``).

        ``g`` is the upstream gradient, shaped like ``W @ v``. With ``S = sign(x_i - y_j)``::

            x    = Re(conj(g_i) * sum_j (-s) S W_ij v_j)
            y    = Re(sum_i conj(g_i) * s S W_ij v_j)
            rate = Re(A) (real s) or conj(A) (complex s),  A = sum_ij conj(g_i) (-|x_i - y_j|) W_ij
            v_j v    = W^H g   (its real part when v is real)

        For a complex parameter the value is ``dL/dRe + i dL/dIm``. Two passes of the scan: the
        signed and first-moment reductions of ``v`` on the rows, the plain and signed reductions of
        ``conj(g)`` on the columns. O(N k) on a cached plan.
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
        einsum = backend.xp.einsum
        real = np.dtype(self._x.dtype)
        gc = G.conj() if G.dtype.kind == "c" else G
        # one side at a time: the row reductions are contracted (and freed) before the column
        # pass allocates its own, which keeps the peak at about two m x k intermediates
        _, signed, moment = backend.apply(
            plan, self._side, s, V, want_sum=False, want_signed=True, want_moment=True
        )
        gx = (-s * einsum("ik,ik->i", gc, signed)).real
        a = -einsum("ik,ik->", gc, moment)
        del signed, moment
        ct_sum, ct_signed, _ = backend.apply(plan, self._side.other, s, gc, want_signed=True)
        gy = (-s * einsum("jk,jk->j", V, ct_signed)).real
        del ct_signed
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
            complex(a.conjugate()) if isinstance(s, complex) else float(a.real),
            ns.result_to(self._xp, gv, v_orig),
        )


def _anchors(x: Any, y: Any):
    """Validate anchors per SPEC §5 (their finiteness as they are copied, ``_snapshot``); return
    (namespace, x, y, their real NumPy dtype)."""
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


def _snapshot(backend, a, real, name: str):
    """The backend's private copy of anchors ``a`` as ``real`` and whether they are in ascending
    order (``None``: not known); ``ValueError`` (SPEC §5) when one is not finite (checked in the
    same pass as the copy)."""
    copy, bad, ordered = backend.snapshot(backend.asarray(ns.exportable(a)), real)
    if bad:
        raise ValueError(f"anchors must be finite; {name} has {bad} non-finite value(s)")
    return copy, ordered


def _equal(xp, x, y) -> bool:
    """Whether two validated anchor arrays hold the same values (then one sort serves both); the
    first values are compared first, which settles most distinct pairs without a full pass."""
    if x.shape != y.shape:
        return False
    if x.shape[0] and not bool(x[0] == y[0]):
        return False
    return bool(xp.all(x == y))
