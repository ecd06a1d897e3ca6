"""The narrow interface every backend implements, and the plan layout the built-in ones share.

The front end (``laplexops._operator``) validates, converts namespaces and caches plans; it only
ever calls the members of :class:`Backend` and treats plans as opaque. A backend owns its arrays
(NumPy for Numba, CuPy for CUDA), its sort, and the decayed scan — the one primitive that
products, adjoints and gradients are composed of.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "GramBackend",
    "Side",
    "SortedPlan",
    "gradient_reductions",
    "snapshot_with",
]


class Side(enum.IntEnum):
    """Which anchors are a product's rows: the orientation of a plan that :meth:`Backend.apply`
    reduces onto.

    ``ROWS_X`` reduces onto the x anchors (the rows of ``W``: ``W @ v``), ``ROWS_Y`` onto the y
    anchors (the rows of ``W^T`` and ``W^H``: ``W^T @ u``, ``W^H @ u`` with the rate conjugated).

    Examples
    --------
    >>> from laplexops.backends import Side
    >>> Side.ROWS_X.other
    <Side.ROWS_Y: 1>
    >>> int(Side.ROWS_Y)
    1
    """

    ROWS_X = 0  #: rows are the x anchors, columns the y anchors
    ROWS_Y = 1  #: rows are the y anchors, columns the x anchors

    @property
    def other(self) -> Side:
        """The opposite side: the adjoint's and the transpose's rows.

        Returns
        -------
        Side
            ``ROWS_Y`` for ``ROWS_X`` and ``ROWS_X`` for ``ROWS_Y``.

        Examples
        --------
        >>> from laplexops.backends import Side
        >>> Side.ROWS_Y.other
        <Side.ROWS_X: 0>
        """
        return Side(1 - self)


@runtime_checkable
class Backend(Protocol):
    """What a backend provides to :class:`laplexops.LaplexOperator`.

    A backend is registered under its ``name`` with :func:`laplexops.backends.register_backend`,
    or passed as an instance through ``LaplexOperator(..., backend=instance)``. The front end
    validates input, converts namespaces and caches plans; it calls only the members below and
    treats plans as opaque: it builds one per operator (shared with the adjoint, the transpose and
    re-rated copies) and hands it back to :meth:`apply`. Any object with these members is a
    backend (the check ``isinstance(obj, Backend)`` looks at the members' presence only). Three
    more members are optional: ``gradient_reductions``, which the front end calls for gradients
    when present (see ``laplexops.backends._base.gradient_reductions``); ``prepare(plan, side,
    rate, dtype)``, which ``LaplexOperator.prepare()`` calls to lay out a product ahead of its
    first call; and ``anchors(plan)``, the snapshots ``(x, y)`` the plan was built from, made
    again from it: with it the front end lets its own copies of large anchors go once the plan
    is built.

    Attributes
    ----------
    name : str
        Short name, as in ``LaplexOperator(..., backend=name)``.
    device : {"cpu", "cuda", "dask"}
        The device kind whose data it serves: host memory, CUDA device memory, or Dask arrays.
    xp : module
        The array module of the backend's native arrays (:mod:`numpy`, ``cupy``,
        ``dask.array``).

    Examples
    --------
    >>> from laplexops.backends import Backend, get_backend
    >>> numba = get_backend("numba", "cpu")
    >>> isinstance(numba, Backend), numba.device, numba.xp is np
    (True, 'cpu', True)
    """

    #: short name, as in ``LaplexOperator(..., backend=name)``
    name: str

    #: the device kind whose data it serves: ``"cpu"`` (host memory), ``"cuda"`` or ``"dask"``
    device: str

    #: the array module of the backend's native arrays (``numpy``, ``cupy``)
    xp: Any

    def asarray(self, a: Any) -> Any:
        """The backend's native array for ``a``, zero-copy where possible.

        Parameters
        ----------
        a : array
            An array of the caller's namespace on this backend's device kind (through DLPack for
            other namespaces).

        Returns
        -------
        array
            A native array (of ``xp``) with ``a``'s values.

        Examples
        --------
        >>> from laplexops.backends import get_backend
        >>> a = np.array([0.0, 2.0, 1.0])
        >>> get_backend("numba", "cpu").asarray(a) is a
        True
        """

    def snapshot(self, a: Any, dtype: Any) -> tuple[Any, int, bool | None]:
        """A private copy of anchors ``a``, checked in the same pass.

        Parameters
        ----------
        a : array
            A native 1-D array of anchors (integer or real).
        dtype : numpy.dtype
            float32 or float64, at least as wide as ``a``'s dtype.

        Returns
        -------
        copy : array
            A new native array of ``a``'s values as ``dtype``; the operator keeps it.
        bad : int
            How many of its values are not finite (NaN, +-inf): the front end raises
            ``ValueError`` when it is not 0.
        ordered : bool or None
            Whether the values are in ascending order, ``None`` when the backend does not find
            out in the same pass.

        Examples
        --------
        >>> from laplexops.backends import get_backend
        >>> copy, bad, ordered = get_backend("numba", "cpu").snapshot(
        ...     np.array([0, 2, 1]), np.dtype(np.float64)
        ... )
        >>> copy, bad
        (array([0., 2., 1.]), 0)
        """

    def plan(
        self,
        x: Any,
        y: Any,
        hint: Any = None,
        ordered: tuple[bool | None, bool | None] = (None, None),
    ) -> Any:
        """The plan of anchors ``x`` (rows) and ``y`` (columns): the merged sort, O(N log N).

        Parameters
        ----------
        x, y : array
            Native 1-D float arrays (the snapshots), which the plan may keep; ``y is x`` means
            both sides share one sort (the square case).
        hint : plan, optional
            A plan of this backend for anchors of the same shapes (the previous step of
            :meth:`laplexops.LaplexOperator.with_anchors`), which may be used to find the order
            faster when the anchors moved little.
        ordered : tuple of (bool or None), optional
            What the snapshots said of ``x``'s and ``y``'s order (``None``: not known).

        Returns
        -------
        plan
            An object only this backend reads: passed back to :meth:`apply`, for both sides.

        Examples
        --------
        >>> from laplexops.backends import get_backend
        >>> numba = get_backend("numba", "cpu")
        >>> plan = numba.plan(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]))
        >>> plan.shape
        (3, 2)
        """

    def apply(
        self,
        plan: Any,
        side: Side,
        rate: complex | float,
        b: Any,
        *,
        want_sum: bool = True,
        want_signed: bool = False,
        want_moment: bool = False,
    ) -> tuple[Any, Any, Any]:
        """Reductions of ``b`` onto the rows of ``side``: the one primitive of every product.

        For the side's rows ``r`` and columns ``c`` and ``W_rc = exp(-rate |r - c|)``::

            sum_r    = sum_c W_rc b_c                   (W @ b)
            signed_r = sum_c sign(r - c) W_rc b_c        (sign(0) = 0)
            moment_r = sum_c |r - c| W_rc b_c            (-dW/drate @ b)

        O(N k) on a built plan. ``exp`` may only see non-negative distances (such as the gaps
        between neighbouring sorted anchors), never ``rate * c`` and ``-rate * r`` apart: those
        overflow once ``|rate|`` times the anchors' spread passes about 80 (float32) or 700
        (float64).

        Parameters
        ----------
        plan : plan
            A plan of this backend (from :meth:`plan`).
        side : Side
            Whose anchors are the rows.
        rate : float or complex
            The rate (conjugated by the front end for an adjoint product).
        b : array
            Native, shape ``(n_cols, k)``, at the precision of the result; it may be real when the
            rate is complex and complex when the rate is real: the results are complex when
            either is.
        want_sum, want_signed, want_moment : bool, optional
            Which reductions to compute.

        Returns
        -------
        tuple of 3 arrays or None
            ``(sum, signed, moment)``, each of shape ``(n_rows, k)`` or ``None`` where not wanted.

        Examples
        --------
        >>> from laplexops.backends import Side, get_backend
        >>> numba = get_backend("numba", "cpu")
        >>> plan = numba.plan(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]))
        >>> b = np.array([[1.0], [2.0]])
        >>> total, signed, moment = numba.apply(plan, Side.ROWS_X, 1.0, b, want_signed=True)
        >>> np.round(total[:, 0], 4), np.round(signed[:, 0], 4), moment
        (array([1.0528, 1.8196, 1.4362]), array([-1.0528, -0.6065,  1.4362]), None)
        """


def gradient_reductions(
    backend: Backend, plan: Any, side: Side, rate: complex | float, v: Any, gc: Any
) -> tuple[Any, Any, Any, Any]:
    """The reductions a gradient of ``W @ v`` is made of, contracted: from :meth:`Backend.apply`
    on both sides of ``plan``. A backend may provide a method ``gradient_reductions(plan, side,
    rate, v, gc)`` computing the same in fewer passes; the front end calls it when present.

    With ``W`` the operator of ``side`` (rows, columns), ``S = sign(r - c)`` and ``M = |r - c|``
    elementwise, ``v`` of shape ``(n_cols, k)`` and ``gc`` (the conjugated upstream gradient) of
    shape ``(n_rows, k)``, all four in O(N k)::

        dx   = sum_k gc * ((S W) @ v)          shape (n_rows,)
        a    = sum   gc * ((M W) @ v)          a scalar (0-d array)
        dy   = sum_k v * ((S W)^T @ gc)        shape (n_cols,)
        wtg  = W^T @ gc                        shape (n_cols, k)

    Examples
    --------
    >>> from laplexops.backends import Side, get_backend
    >>> from laplexops.backends._base import gradient_reductions
    >>> numba = get_backend("numba", "cpu")
    >>> plan = numba.plan(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]))
    >>> v, g = np.array([[1.0], [2.0]]), np.array([[1.0], [0.0], [-1.0]])
    >>> dx, a, dy, wtg = gradient_reductions(numba, plan, Side.ROWS_X, 1.0, v, g)
    >>> np.round(dx, 4), round(float(a), 4)
    (array([-1.0528, -0.    , -1.4362]), 0.0314)
    """
    einsum = backend.xp.einsum
    _, signed, moment = backend.apply(
        plan, side, rate, v, want_sum=False, want_signed=True, want_moment=True
    )
    dx = einsum("ik,ik->i", gc, signed)
    a = einsum("ik,ik->", gc, moment)
    del signed, moment  # freed before the other side allocates its own
    wtg, ct_signed, _ = backend.apply(plan, side.other, rate, gc, want_signed=True)
    return dx, a, einsum("jk,jk->j", v, ct_signed), wtg


@runtime_checkable
class GramBackend(Protocol):
    """The members a :class:`Backend` adds to run :class:`laplexops.LaplexGram`.

    ``Σ = diag(w) K diag(w) + diag(u)`` with ``K[i, j] = exp(-rate |a_i - a_j|)`` is, over the
    anchors in sorted order, a scalar linear-Gaussian state-space model; its LDLᵀ factor comes
    from one O(n) variance recursion (:meth:`gram_factor`), and every other member is an O(n k)
    pass over that factor (``docs/math.md``). The plan is the square plan of
    ``backend.plan(a, a)`` (one sort); the factor is opaque to the front end except for its
    ``logdet`` (``log det Σ``, a float) and ``zero_pivot`` (``None``, or the caller's indices
    ``(i, j)`` of the anchor whose pivot is 0 and of its sorted predecessor, ``j = -1`` for the
    first), which the front end reads after :meth:`gram_quadratic` and :meth:`gram_nll_gradient`
    (whose results it discards when a pivot is 0: they may then be anything, ``None`` included)
    and before every other member: a backend may defer the recursion to the first member that
    uses the factor. Arrays are native, in the caller's order of the anchors; sums
    accumulate in float64.

    Examples
    --------
    >>> from laplexops.backends import GramBackend, get_backend
    >>> isinstance(get_backend("numba", "cpu"), GramBackend)
    True
    """

    def gram_factor(self, plan: Any, rate: float | complex, weights: Any, noise: Any) -> Any:
        """The factor of Σ for ``rate`` and per-anchor float64 ``weights``, ``noise``; a complex
        rate is the phased Gram, ``K = Re exp(-rate |a_i - a_j|)``."""

    def gram_quadratic(self, factor: Any, r: Any, mean: Any) -> Any:
        """``(r_j - mean)ᵀ Σ⁻¹ (r_j - mean)`` for each column of ``r`` (n, k); ``mean`` (n,) or
        ``None``. Float64, shape (k,)."""

    def gram_solve(self, factor: Any, b: Any) -> Any:
        """``Σ⁻¹ b`` for ``b`` of shape (n, k), float64."""

    def gram_color(self, factor: Any, z: Any) -> Any:
        """``L D^½ z`` for ``z`` of shape (n, k) (rows taken in sorted order): standard normal
        ``z`` gives k draws of N(0, Σ) as columns, float64."""

    def gram_nll_gradient(
        self, factor: Any, r: Any, mean: Any, summed: tuple[bool, bool] = (False, False)
    ) -> tuple:
        """The gradient of ``(1/k) sum_j (r_j - mean)ᵀ Σ⁻¹ (r_j - mean) / 2 + log det Σ / 2``
        over the columns of ``r`` (n, k), with the value's data term from the same pass:
        ``(quad, anchors, rate, weights, noise, mean)``, ``quad`` the sum over the columns of
        their quadratic forms (a float), the arrays float64 of shape (n,), the rate a float; the
        weights' (noise's) gradient is its sum over the anchors, a float, where ``summed[0]``
        (``summed[1]``): the derivative for one value shared by every anchor."""


class DeferredFactor:
    """A :class:`GramBackend` factor whose variance recursion runs on first use: ``zero_pivot``
    and ``logdet`` (as :class:`GramBackend` defines them) call ``compute()``, which a subclass
    implements and which sets ``_zero_pivot`` and ``_logdet``."""

    _zero_pivot: tuple[int, int] | None = None
    _logdet: float = math.nan

    def compute(self) -> Any:
        raise NotImplementedError

    @property
    def zero_pivot(self) -> tuple[int, int] | None:
        self.compute()
        return self._zero_pivot

    @property
    def logdet(self) -> float:
        self.compute()
        return self._logdet


class SortedPlan:
    """The plan layout of the built-in backends: both sides' anchors sorted, with their
    permutations, and the two orientations (:class:`Side`) built from them on first use.

    ``sorted`` is ``((xs, xperm), (ys, yperm))``: sorted values and the permutation that sorts
    them (``xs = x[xperm]``); a permutation is ``None`` when the anchors were already sorted.
    ``shared`` (x and y one array) makes both orientations one. Subclasses build an orientation
    in ``_orient(rz, cz, rperm, cperm)``: rows ``rz`` against columns ``cz``.
    """

    def __init__(self, shape: tuple[int, int], shared: bool, sorted_: tuple) -> None:
        self.shape = shape
        self.shared = shared
        self.sorted = sorted_
        self._sides: list[Any] = [None, None]

    def side(self, side: Side) -> Any:
        """The orientation whose rows are ``side``'s anchors, built on first use (a matvec never
        builds the other one)."""
        side = Side.ROWS_X if self.shared else Side(side)
        if self._sides[side] is None:
            rows, cols = self.sorted if side == Side.ROWS_X else self.sorted[::-1]
            self._sides[side] = self._orient(rows[0], cols[0], rows[1], cols[1])
        return self._sides[side]

    def _orient(self, rz: Any, cz: Any, rperm: Any, cperm: Any) -> Any:
        raise NotImplementedError


def snapshot_with(xp: Any, a: Any, dtype: Any) -> tuple[Any, int, None]:
    """``Backend.snapshot`` through array module ``xp``: the copy, then a count of its non-finite
    values (a second pass; the count itself only when there is one); the order is not checked."""
    out = a.astype(dtype, copy=True)
    if out.dtype.kind != "f":
        return out, 0, None
    finite = xp.isfinite(out)
    bad = 0 if bool(xp.all(finite)) else int(out.shape[0] - int(xp.count_nonzero(finite)))
    return out, bad, None


def scan_ends_with(xp: Any, cols: Any, rate: Any, b: Any, want_moment: bool) -> Any:
    """The end states of the scans of ``b`` (shape (n, k)) over the sorted columns ``cols``
    through array module ``xp``: rows ``F, F1, B, B1`` of shape (4, k) with ``z = cols[-1]``,
    ``a = cols[0]``,

        F = sum_c exp(-s (z - c)) b_c,   F1 = sum_c (z - c) exp(-s (z - c)) b_c,
        B = sum_c exp(-s (c - a)) b_c,   B1 = sum_c (c - a) exp(-s (c - a)) b_c

    (``F1``, ``B1`` zero unless ``want_moment``), as sums of direct terms: every distance is
    non-negative and rounded once, so no term overflows. O(n k)."""
    cols = cols.astype(xp.finfo(b.dtype).dtype, copy=False)
    ends = []
    for distance in (cols[-1] - cols, cols - cols[0]):
        e = xp.exp(-rate * distance)[:, None]
        ends.append(xp.sum(e * b, axis=0))
        ends.append(xp.sum((distance[:, None] * e) * b, axis=0) if want_moment else 0 * ends[-1])
    return xp.stack(ends)
