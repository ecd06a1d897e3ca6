"""The narrow interface every backend implements.

The front end (``laplexops._operator``) validates, converts namespaces and caches plans; it only
ever calls the members below and treats plans as opaque. A backend owns its arrays (NumPy for
Numba, CuPy for CUDA), its sort, and the decayed scan — the one primitive that products, adjoints
and gradients are composed of.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Backend", "SIDE_ROWS_X", "SIDE_ROWS_Y", "snapshot_with"]

SIDE_ROWS_X = 0  #: rows are the x anchors, columns the y anchors (W)
SIDE_ROWS_Y = 1  #: rows are the y anchors, columns the x anchors (W^T)


class Backend(Protocol):
    """What a backend provides."""

    #: short name used by ``backend=...`` (the device kind it serves is in ``backends.NAMES``)
    name: str

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
        side: int,
        rate: complex | float,
        b: Any,
        want_sum: bool = True,
        want_signed: bool = False,
        want_moment: bool = False,
    ) -> tuple[Any, Any, Any]:
        """Reductions of ``b`` (native, shape (n_side, k)) on one side.

        ``b`` comes at the precision of the result; it may be real when the rate is complex (and
        complex when the rate is real): the results are complex when either is.

        For side rows ``r`` and columns ``c`` of the side, and ``W_rc = exp(-rate |r - c|)``:
        ``sum = W b``, ``signed = sum_c sign(r - c) W_rc b_c``, ``moment = sum_c |r - c| W_rc b_c``.
        Returns the three (``None`` where not wanted); O(N k) on a built plan.
        """


def snapshot_with(xp: Any, a: Any, dtype: Any) -> tuple[Any, int, None]:
    """``Backend.snapshot`` through array module ``xp``: the copy, then a count of its non-finite
    values (a second pass; the count itself only when there is one); the order is not checked."""
    out = a.astype(dtype, copy=True)
    if out.dtype.kind != "f":
        return out, 0, None
    finite = xp.isfinite(out)
    bad = 0 if bool(xp.all(finite)) else int(out.shape[0] - int(xp.count_nonzero(finite)))
    return out, bad, None
