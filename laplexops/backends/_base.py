"""The narrow interface every backend implements, and the plan layout the built-in ones share.

The front end (``laplexops._operator``) validates, converts namespaces and caches plans; it only
ever calls the members of :class:`Backend` and treats plans as opaque. A backend owns its arrays
(NumPy for Numba, CuPy for CUDA), its sort, and the decayed scan — the one primitive that
products, adjoints and gradients are composed of.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "Side", "SortedPlan", "snapshot_with"]


class Side(enum.IntEnum):
    """Which anchors are a product's rows.

    ``ROWS_X`` reduces onto the x anchors (``W``, ``W^H``'s columns), ``ROWS_Y`` onto the y
    anchors (``W^T``, ``W^H``).
    """

    ROWS_X = 0  #: rows are the x anchors, columns the y anchors
    ROWS_Y = 1  #: rows are the y anchors, columns the x anchors

    @property
    def other(self) -> Side:
        """The opposite side: the adjoint's and the transpose's rows."""
        return Side(1 - self)


@runtime_checkable
class Backend(Protocol):
    """What a backend provides to :class:`laplexops.LaplexOperator`.

    A backend is registered under its ``name`` with :func:`laplexops.backends.register_backend`,
    or passed as an instance through ``LaplexOperator(..., backend=instance)``. Plans are opaque
    to the front end: it builds one per operator (shared with the adjoint, the transpose and
    re-rated copies) and hands it back to :meth:`apply`.
    """

    #: short name, as in ``LaplexOperator(..., backend=name)``
    name: str

    #: the device kind whose data it serves: ``"cpu"`` (host memory) or ``"cuda"``
    device: str

    #: the array module of the backend's native arrays (``numpy``, ``cupy``)
    xp: Any

    def asarray(self, a: Any) -> Any:
        """The backend's native array for ``a`` (zero-copy where possible)."""

    def snapshot(self, a: Any, dtype: Any) -> tuple[Any, int, bool | None]:
        """A private copy of native 1-D array ``a`` as ``dtype`` (a float type at least as wide),
        how many of its values are not finite (NaN, +-inf), and whether it is in ascending order
        (``None`` when the backend does not find out in the same pass). One pass over ``a``."""

    def plan(
        self,
        x: Any,
        y: Any,
        hint: Any = None,
        ordered: tuple[bool | None, bool | None] = (None, None),
    ) -> Any:
        """The plan of anchors ``x`` (rows) and ``y`` (columns): the merged sort, O(N log N).

        ``x`` and ``y`` are native 1-D float arrays that the plan may keep (they are private
        copies); ``y is x`` means both sides share one sort. ``hint``, a plan of this backend for
        anchors of the same shapes, may be used to find the order faster when the anchors moved
        little. ``ordered``: what their snapshots said of their order (``None``: not known).
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
        """Reductions of ``b`` (native, shape (n_side, k)) onto the rows of ``side``.

        ``b`` comes at the precision of the result; it may be real when the rate is complex (and
        complex when the rate is real): the results are complex when either is.

        For side rows ``r`` and columns ``c`` of the side, and ``W_rc = exp(-rate |r - c|)``:
        ``sum = W b``, ``signed = sum_c sign(r - c) W_rc b_c``, ``moment = sum_c |r - c| W_rc b_c``.
        Returns the three (``None`` where not wanted); O(N k) on a built plan.
        """


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
