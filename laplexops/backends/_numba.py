"""CPU backend: NumPy arrays, Numba kernels (radix sort, merge counts, decayed scans)."""

from __future__ import annotations

import math
import threading
import weakref
from contextlib import contextmanager

import numpy as np

from . import _numba_filter, _numba_filter2, _numba_plan, _numba_sort
from ._base import Side, SortedPlan, gradient_reductions, snapshot_with
from ._numba_memory import POOL
from ._numba_plan import merge_counts
from ._numba_route import ROUTE_MIN, Route, gather
from ._numba_scan import (
    column_scans,
    decays,
    rows_signed_moment_dot,
    rows_sum_one_column,
    rows_sum_signed_dot,
    scan,
    scan_ends,
    scan_square,
    split_decays,
)

__all__ = ["NumbaBackend", "NumbaPlan"]

_NO_PERM = np.empty(0, dtype=np.int64)  # the kernels' identity permutation
_DECAY_CACHE_SIZE = 4
#: the decays a plan keeps beyond its newest set, in bytes: at 1e8 anchors a set takes over a
#: gigabyte. The price: above that size a product after a gradient (or any call that needs
#: another side's or rate's set) makes its decays again, which takes about as long as the
#: product (9.4 against 10.6 ms at 1e6); a training step that moves its anchors makes them anyway
_DECAY_CACHE_BYTES = 1 << 30
#: the merge counts a plan keeps for both sides together, in bytes (see NumbaPlan.side)
_COUNTS_KEEP_BYTES = 1 << 28
#: a permutation larger than this, in bytes, is let go once its route is built: the route stands
#: for it (made again on request, see Route.permutation: a training step's next plan, the Gram)
_PERM_KEEP_BYTES = 1 << 28
_REPAIR_MOVES = 4  # insertion moves per anchor before a plan repair falls back to a sort


#: the dtypes whose snapshots a compiled pass copies (and checks) at once
_SNAPSHOT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _index_dtype(size: int) -> np.dtype:
    """The dtype of merge counts over ``size`` anchors."""
    return np.dtype(np.int32 if size < 2**31 else np.int64)


class _Side:
    """One orientation of a plan: sorted rows against sorted columns, their merge counts (made
    again on use when the plan let them go, see :meth:`NumbaPlan.side`), their permutations
    ``rperm``, ``cperm`` (``None`` for anchors that came sorted; where there is a route, the route
    stands for its permutation) and the routes ``rroute``, ``croute`` (``None`` where the moves
    go direct)."""

    __slots__ = (
        "rz", "cz", "rperm", "cperm", "rroute", "croute", "_counts", "ties", "square"
    )  # fmt: skip

    def __init__(self, rz, cz, rperm, cperm, rroute, croute):
        self.rz, self.cz, self.rperm, self.cperm = rz, cz, rperm, cperm
        self.rroute, self.croute = rroute, croute
        # rows are the columns, all distinct: lo = arange, hi = lo + 1 (see scan_square)
        self.square = rz is cz and not bool((cz[1:] == cz[:-1]).any())
        self._counts = None
        lo, hi = self.counts()
        self.ties = self.square or hi is not lo  # a row equals a column

    def counts(self):
        """``(lo, hi)``, the merge counts (see ``_numba_scan``; one array when no row ties with
        a column), made now unless held; O(m + n)."""
        held = self._counts
        if held is None:
            index = _index_dtype(self.rz.shape[0] + self.cz.shape[0])
            size = 0 if self.square else self.rz.shape[0]
            lo = POOL.empty(size, index)
            hi = merge_counts(self.rz[:size], self.cz, lo)
            held = self._counts = (lo, hi)
        return held

    def release_counts(self) -> None:
        """Let the merge counts go (made again on use)."""
        self._counts = None

    def counts_nbytes(self) -> int:
        """The bytes of the merge counts held (0 when let go)."""
        held = self._counts
        if held is None:
            return 0
        lo, hi = held
        return lo.nbytes + (0 if hi is lo else hi.nbytes)

    @property
    def lo(self):
        """``lo[r] = #{c : cs[c] < rs[r]}`` (see :meth:`counts`)."""
        return self.counts()[0]

    @property
    def hi(self):
        """``hi[r] = #{c : cs[c] <= rs[r]}`` (see :meth:`counts`)."""
        return self.counts()[1]

    def decays(self, rate, dtype: np.dtype):
        """``(d, el, er)`` for ``rate`` in ``dtype`` (see ``_numba_scan``); O(m + n)."""
        real = np.finfo(dtype).dtype
        m, n = self.lo.shape[0], self.cz.shape[0]  # m = 0 for a square side: no el, er
        return decays(
            self.rz.astype(real, copy=False),
            self.cz.astype(real, copy=False),
            self.lo,
            dtype.type(rate),
            POOL.empty(n, dtype),
            POOL.empty(m, dtype),
            POOL.empty(m, dtype),
        )


class NumbaPlan(SortedPlan):
    """Sorted anchors of both sides (see :class:`SortedPlan`), each orientation's merge counts,
    and a small cache of decays per rate."""

    def __init__(self, x: np.ndarray, y: np.ndarray, hint: NumbaPlan | None = None):
        shape, shared = (x.shape[0], y.shape[0]), y is x
        previous = hint.sorted if hint is not None and hint.shape == shape else None
        anchors = (x,) if shared else (x, y)
        found = [
            _presorted(a, None if previous is None else previous[i][1], previous is not None)
            for i, a in enumerate(anchors)
        ]
        # the sides still unsorted get a full sort: both at once, one per core, when both need it
        missing = [i for i, (values, _) in enumerate(found) if values is None]
        if len(missing) == 2:
            sorts = _numba_sort.argsort_two(x, y, with_values=True)
        else:
            sorts = tuple(_numba_sort.argsort(anchors[i], with_values=True) for i in missing)
        for i, (perm, values) in zip(missing, sorts):
            found[i] = (values, perm)  # the values from the sort's last pass: no gather
        super().__init__(shape, shared, tuple(found * 2 if shared else found))
        self._decays: dict = {}
        self._routes: list = [None, None]  # of x's permutation, of y's
        self.scratch = _Scratch()
        self.gram_pool = _numba_filter.Pool()  # the Gram's factors and scratch
        weakref.finalize(self, POOL.trim)  # its arrays free: the pool's free memory bounded again

    def side(self, side: Side) -> _Side:
        """The orientation whose rows are ``side``'s anchors, its merge counts held. Beyond
        ``_COUNTS_KEEP_BYTES`` for both, the plan lets the other orientation's go: at 1e8
        anchors a gradient then holds one side's at a time. The price: a call on the other side
        makes them again, a tenth of a product's time or so (a merge walk)."""
        key = Side.ROWS_X if self.shared else Side(side)
        s = self._sides[key]
        if s is None or s.counts_nbytes() == 0:
            # counts to be made: the other side's go first when both would pass the limit
            rows = self.shape[0] if key == Side.ROWS_X else self.shape[1]
            size = 2 * rows * _index_dtype(sum(self.shape)).itemsize
            for other in self._sides:
                if other is not None and other is not s:
                    if size + other.counts_nbytes() > _COUNTS_KEEP_BYTES:
                        other.release_counts()
        s = super().side(side)
        s.counts()
        return s

    def _orient(self, rz, cz, rperm, cperm) -> _Side:
        rroute, croute = self._route(rperm), self._route(cperm)
        return _Side(rz, cz, rroute or rperm, croute or cperm, rroute, croute)

    def _route(self, perm) -> Route | None:
        """The route of ``perm`` (x's or y's permutation), built on first use; ``None`` for
        anchors that came sorted or are too few for a route to pay. Above ``_PERM_KEEP_BYTES``
        the route then stands for the permutation in ``sorted``."""
        if isinstance(perm, Route):
            return perm
        if perm is None or perm.shape[0] < ROUTE_MIN:
            return None
        i = 0 if perm is self.sorted[0][1] else 1
        if self._routes[i] is None:
            route = self._routes[i] = Route(perm)
            if perm.nbytes > _PERM_KEEP_BYTES:
                self.sorted = tuple((v, route if p is perm else p) for v, p in self.sorted)
        return self._routes[i]

    def decays(self, side: Side, rate, dtype: np.dtype, keep: bool = True, split: bool = False):
        """The side's decays ``(d, el, er)`` for ``rate`` in ``dtype``, cached for a few (side,
        rate, dtype) up to ``_DECAY_CACHE_BYTES`` (the newest always). With ``keep=False`` the
        set is handed over instead: taken out of the cache, or made and not put in, so that the
        caller can let ``d`` go before it is done with ``el`` and ``er``.

        With ``split``, ``er`` is the split decays (``_numba_scan.split_decays``; the same set
        where no row of the side ties with a column), made from the set of sums: in a new array
        where that set is cached (it may be in use), else in its ``er``."""
        if self.shared:
            side = Side.ROWS_X
        if split:
            s = self.side(side)
            split = s.ties and not s.square
        key = (side, rate, dtype, split)
        hit = self._decays.get(key) if keep else self._decays.pop(key, None)
        if hit is not None:
            return hit
        s = self.side(side)
        m, n = s.lo.shape[0], s.cz.shape[0]
        base = (side, rate, dtype, False)
        held = (self._decays.get(base) if keep else self._decays.pop(base, None)) if split else None
        size = (m if held is not None else n + 2 * m) * np.dtype(dtype).itemsize
        if keep:  # the oldest sets go first, so that they are not held while the new one is made
            while self._decays and (
                len(self._decays) >= _DECAY_CACHE_SIZE
                or size + self._decays_nbytes() > _DECAY_CACHE_BYTES
            ):
                self._decays.pop(next(iter(self._decays)))
        if held is not None:
            d, el, er = held
            out = POOL.empty(m, dtype)
            split_decays(s.lo, s.hi, d, er, out, work=m)
            hit = (d, el, out)
        else:
            hit = s.decays(rate, dtype)
            if split:  # a set of this call's own
                split_decays(s.lo, s.hi, hit[0], hit[2], hit[2], work=m)
        if keep:
            self._decays[key] = hit
        return hit

    def _decays_nbytes(self) -> int:
        """The bytes of the decays cached (the arrays that sets share counted once)."""
        held = {id(a): a.nbytes for found in self._decays.values() for a in found}
        return sum(held.values())


def _permutation(perm):
    """A plan's permutation (or ``None``) as an array: made again where its route stands for
    it."""
    return perm.permutation() if isinstance(perm, Route) else perm


def _take(a: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``a[perm]`` for 1-D ``a``, gathered in parallel when large."""
    out = POOL.empty(perm.shape[0], a.dtype)
    gather(a, perm, out, work=perm.shape[0])
    return out


def _presorted(a: np.ndarray, previous: np.ndarray | Route | None, hinted: bool):
    """``(a[perm], perm)`` found without a full sort, else ``(None, None)``.

    ``(a, None)`` when ``a`` is already sorted. Otherwise, when ``hinted``, the previous plan's
    order ``previous`` of anchors of the same length (``None``: they were sorted; a route where it
    stands for the order) is repaired by insertion when the anchors moved little since — a
    training step — in O(n + moves), giving up past a few moves per anchor.
    """
    if _numba_sort.is_sorted(a):
        return a, None
    if hinted:
        if previous is None:
            perm = np.arange(a.shape[0])
        elif isinstance(previous, Route):
            perm = previous.permutation()
        else:  # a copy: the repair works in place
            perm = POOL.empty_like(previous)
            np.copyto(perm, previous)
        values = _take(a, perm)
        if _numba_sort.repair(values, perm, _REPAIR_MOVES * a.shape[0]):
            return values, perm
    return None, None


class _Scratch:
    """Scan scratch arrays kept between calls: fresh multi-megabyte arrays cost page faults that
    take longer than the scan itself. A few shapes per plan (a gradient uses two); a concurrent
    caller gets arrays of its own. Layouts of more than ``KEEP_BYTES`` are not kept: beside the
    scans of so many elements their page faults cost little, and kept they would add to the
    peak memory of every later call (a training step's gradient, with a product's set kept,
    would hold both)."""

    _KEEP = 3
    KEEP_BYTES = 1 << 28

    def __init__(self):
        self._lock = threading.Lock()
        self._sets: dict = {}

    @classmethod
    def _kept(cls, layout) -> bool:
        return sum(_nbytes(shape, dtype) for shape, dtype in layout) <= cls.KEEP_BYTES

    def reserve(self, layout):
        """Create the arrays of ``layout`` now, their pages touched, unless kept already (or
        too large to keep)."""
        key = tuple(layout)
        if not self._kept(layout):
            return
        with self._lock:
            if key not in self._sets:
                self._sets[key] = tuple(_touched(shape, dtype) for shape, dtype in layout)
                while len(self._sets) > self._KEEP:
                    self._sets.pop(next(iter(self._sets)))

    @contextmanager
    def __call__(self, layout):
        """Arrays of the ``(shape, dtype)`` pairs in ``layout``, reused when seen recently."""
        if not self._kept(layout):
            # made for this call and not held here: the caller can let each one go when done
            yield tuple(POOL.empty(shape, dtype) for shape, dtype in layout)
            return
        key = tuple(layout)
        mine = self._lock.acquire(blocking=False)
        try:
            arrays = self._sets.pop(key, None) if mine else None
            if arrays is None:
                arrays = tuple(POOL.empty(shape, dtype) for shape, dtype in layout)
            if mine:
                self._sets[key] = arrays  # most recent last
                while len(self._sets) > self._KEEP:
                    self._sets.pop(next(iter(self._sets)))
            yield arrays
        finally:
            if mine:
                self._lock.release()


class NumbaBackend:
    """Backend for host data (NumPy and anything DLPack-exportable to it)."""

    name = "numba"
    device = "cpu"
    xp = np

    def asarray(self, a):
        if isinstance(a, np.ndarray):
            return a
        try:
            return np.from_dlpack(a)
        except (TypeError, AttributeError, BufferError, RuntimeError):
            return np.asarray(a)

    def snapshot(self, a, dtype):
        """``a`` copied as ``dtype`` and its count of non-finite values: one pass for float32 and
        float64 (``_numba_plan.snapshot``), other types through NumPy; order not checked."""
        a, dtype = np.asarray(a), np.dtype(dtype)
        if a.ndim == 1 and a.dtype in _SNAPSHOT_TYPES and dtype in _SNAPSHOT_TYPES:
            return (*_numba_plan.snapshot(a, dtype), None)
        return snapshot_with(np, a, dtype)

    def plan(self, x, y, hint=None, ordered=(None, None)):
        return NumbaPlan(x, y, hint)  # (its sorts find sorted anchors on their own)

    def anchors(self, plan):
        """The snapshots ``(x, y)`` the plan was built from, made again from its sorted values and
        permutations: ``x[perm] = xs`` (the sorted values themselves where they came sorted);
        one array for both when they were one. O(N)."""
        made = []
        for values, perm in plan.sorted[: 1 if plan.shared else 2]:
            if perm is None:
                made.append(values)
            else:
                a = np.empty_like(values)
                a[_permutation(perm)] = values
                made.append(a)
        return (made[0], made[0]) if plan.shared else tuple(made)

    def prepare(self, plan, side, rate, dtype):
        """Lay out what a product of one column on ``side`` at ``rate`` in ``dtype`` needs
        beyond the sorts: the side's merge counts, its decays, the scan's scratch, its pages
        touched, and the inverse of the rows' route; the first such product then costs what
        later ones do. O(N)."""
        s = plan.side(side)
        if s.rroute is not None:
            s.rroute.invert()
        real = np.finfo(dtype).dtype
        decay = np.result_type(real, np.complex64) if isinstance(rate, complex) else real
        plan.decays(side, rate, decay)
        wants = (True, False, False)
        plan.scratch.reserve(_scan_layout(s, 1, np.result_type(real, decay), real, wants))

    def apply(self, plan, side, rate, b, *, want_sum=True, want_signed=False, want_moment=False):
        s = plan.side(side)
        real = np.finfo(b.dtype).dtype
        decay = np.result_type(real, np.complex64) if isinstance(rate, complex) else real
        split = want_signed or want_moment  # sums alone take the side's own er (and lo)
        d, el, er = plan.decays(side, rate, decay, split=split)
        b = np.ascontiguousarray(b)
        m, n, k = s.rz.shape[0], s.cz.shape[0], b.shape[1]
        dtype = np.result_type(b.dtype, d.dtype)
        wants = (want_sum, want_signed, want_moment)
        outs = [np.empty((m, k) if want else (0, 0), dtype=dtype) for want in wants]
        layout = _scan_layout(s, k, dtype, b.dtype, wants)
        with plan.scratch(layout) as (*scratch, operand, out_stage):
            if s.cperm is not None:
                # the route's staging in the forward scan's scratch, written after it
                b_stage = _carve(scratch[0], (n, k), b.dtype)
                sorted_b = operand[:n]
                _to_sorted(b, s.cperm, s.croute, sorted_b, b_stage)
                b = sorted_b
            if _results_staged_in_operand(s):
                out_stage = _carve(operand, (m * k * sum(wants),), dtype)
            rdest, targets = _row_targets(s.rperm, s.rroute, outs, out_stage)
            cz = s.cz.astype(real, copy=False)
            if s.square:
                # one task per column: a single column gains nothing from threads
                scan_square(cz, rdest, d, b, *targets, *scratch, work=n * k if k > 1 else 0)
            elif _one_column_sums(s, k, wants) and m and n:
                # (1, n + 1): the states one apart, zeros at the ends, written on every call
                # (the operand's staging above shares fwd's scratch)
                fwd, bwd = scratch[:2]
                fwd[0, 0] = bwd[0, n] = 0
                scans = fwd[:, 1:], bwd[:, :n], *scratch[2:]
                column_scans(cz, d, b, *scans, False, work=m + n)
                target = targets[0][:, 0]
                rows_sum_one_column(s.lo, rdest, el, er, fwd, bwd, target, work=m + n)
            else:
                scan(
                    s.rz.astype(real, copy=False),
                    cz,
                    s.lo,
                    s.hi if split else s.lo,
                    rdest,
                    d,
                    el,
                    er,
                    b,
                    s.ties and split,
                    *targets,
                    *scratch,
                    work=(m + n) * k,
                )
            _to_rows(s.rroute, targets, outs)
        return tuple(o if want else None for o, want in zip(outs, wants))

    def scan_ends(self, plan, side, rate, b, start, want_moment=False):
        """The end states of the scans of ``b`` (shape (n, k)) over the columns ``start ..
        start + n - 1`` of ``side``'s orientation, in sorted order: shape (4, k), the forward
        scan and its first moment at the last of those columns, the backward ones at the first
        (``_numba_scan.scan_ends``; the moments zero unless ``want_moment``). O(n k)."""
        s = plan.side(side)
        real = np.finfo(b.dtype).dtype
        decay = np.result_type(real, np.complex64) if isinstance(rate, complex) else real
        d = plan.decays(side, rate, decay)[0]
        b = np.ascontiguousarray(b)
        ends = np.zeros((4, b.shape[1]), dtype=np.result_type(b.dtype, d.dtype))
        cz = s.cz.astype(real, copy=False)
        scan_ends(cz, d, b, start, want_moment, ends, work=2 * b.size)
        return ends

    def gradient_reductions(self, plan, side, rate, v, gc):
        """:func:`~laplexops.backends._base.gradient_reductions` in two scans whose row passes
        contract as they go: the operands gathered once into sorted order serve both sides
        (``v`` is one side's columns and the other's row operand, ``gc`` the reverse), and no
        signed or moment reduction is written out. O(N k)."""
        sx = plan.side(side)
        m, n, k = sx.rz.shape[0], sx.cz.shape[0], v.shape[1]
        if sx.square or m == 0 or n == 0 or k == 0:
            return gradient_reductions(self, plan, side, rate, v, gc)
        real = np.finfo(np.result_type(v.dtype, gc.dtype)).dtype
        decay = np.result_type(real, np.complex64) if isinstance(rate, complex) else real
        # decays beyond the plan's cache are handed over, so that d goes after the column scans
        keep = (m + n + max(m, n)) * np.dtype(decay).itemsize <= _DECAY_CACHE_BYTES
        dx_, elx, erx = plan.decays(side, rate, decay, keep, split=True)
        dtype = np.result_type(v.dtype, gc.dtype, decay)
        zero = dtype.type(0)
        v, gc = np.ascontiguousarray(v), np.ascontiguousarray(gc)
        longer = max(m, n)
        # Side y's rows and columns are side x's columns and rows: its permutations and routes
        # are side x's, swapped. Each array below is let go once read for the last time (at
        # sizes whose scratch the plan does not keep, that lowers the peak memory): the results
        # are made when their staging is written, and that staging is scratch no longer read.
        layout = [
            ((k * longer,), dtype),  # forward and backward scans: side x's, then side y's
            ((k * longer,), dtype),
            ((k, n), dtype),  # side x's moments
            ((k, n), dtype),
            ((n if sx.cperm is not None else 0, k), v.dtype),  # v in sorted column order
            ((m if sx.rperm is not None else 0, k), gc.dtype),  # gc in sorted row order
            ((m if sx.rroute is not None else 0,), dtype),  # side x's result, staged
        ]
        parts = np.empty(min(256, m), dtype)
        xroute, yroute, cperm = sx.rroute, sx.croute, sx.cperm
        # Where the plan does not keep this scratch, v in sorted order is read by side x's column
        # scans alone: gc is moved into sorted order after them, staged there, then side x's
        # result is staged there, and v is moved into sorted order again for side y. One more
        # gather, for an array fewer at the peak (and gc's written after d is let go).
        again = (
            xroute is not None
            and cperm is not None
            and not plan.scratch._kept(layout)
            and n * k * v.dtype.itemsize >= m * dtype.itemsize
        )
        if again:
            layout[-2:] = [((0, k), gc.dtype), ((0,), dtype)]  # gc's made when gathered
        v_given = v
        with plan.scratch(layout) as (fwd, bwd, f1, b1, vs, gs, x_stage):
            f, b = fwd[: k * n].reshape(k, n), bwd[: k * n].reshape(k, n)
            if cperm is not None:  # the routes' staging in scratch written later
                _to_sorted(v, cperm, yroute, vs, _carve(fwd, (n, k), v.dtype))
                v = vs
            if sx.rperm is not None and not again:
                _to_sorted(gc, sx.rperm, xroute, gs, _carve(fwd, (m, k), gc.dtype))
                gc = gs
            rx, cx = sx.rz.astype(real, copy=False), sx.cz.astype(real, copy=False)
            work = (m + n) * k
            column_scans(cx, dx_, v, f, b, f1, b1, True, work=work)
            del dx_
            if sx.rperm is not None and again:
                gs = np.empty((m, k), gc.dtype)
                _to_sorted(gc, sx.rperm, xroute, gs, _carve_or_new(vs, (m, k), gc.dtype))
                gc = gs
            if again:
                dx = _carve(vs, (m,), dtype)
            else:
                dx = x_stage if xroute is not None else np.empty(m, dtype)
            rows_signed_moment_dot(
                rx,
                cx,
                sx.lo,
                sx.hi,
                _rdest(sx.rperm, xroute),
                elx,
                erx,
                gc,
                f,
                b,
                f1,
                b1,
                dx,
                parts,
                zero,
                work=work,
            )
            del f, b, f1, b1, elx, erx, sx
            dx = _unstaged(xroute, dx.reshape(m, 1))
            if again:
                _to_sorted(v_given, cperm, yroute, vs, _carve(fwd, (n, k), v.dtype))
            # side y: its merge counts and decays only now (at huge sizes the plan then holds
            # one side's of each)
            sy = plan.side(side.other)
            dy_, ely, ery = plan.decays(side.other, rate, decay, keep, split=True)
            fy, by = fwd[: k * m].reshape(k, m), bwd[: k * m].reshape(k, m)
            column_scans(rx, dy_, gc, fy, by, fy[:, :0], by[:, :0], False, work=work)
            del dy_
            # its results' staging: gc's sorted copy, and side x's staging where it had its own
            staged = yroute is not None
            wtg = _carve_or_new(gs if staged else None, (n, k), dtype)
            dy = _carve_or_new(x_stage if staged else None, (n, 1), dtype)
            del gc, gs, x_stage
            rows_sum_signed_dot(
                sy.lo,
                sy.hi,
                _rdest(sy.rperm, yroute),
                ely,
                ery,
                v,
                sy.ties,
                fy,
                by,
                wtg,
                dy.reshape(n),
                zero,
                work=work,
            )
            del fy, by, fwd, bwd, v, vs, ely, ery
            wtg, dy = _unstaged(yroute, wtg), _unstaged(yroute, dy)
        return dx.reshape(m), parts.sum(), dy.reshape(n), wtg

    # the Gram's filter (see GramBackend and _numba_filter)
    def gram_factor(self, plan, rate, weights, noise):
        z, perm = plan.sorted[0]
        perm = _permutation(perm)
        filters = _numba_filter2.PhasedFactor if isinstance(rate, complex) else _numba_filter.Factor
        return filters(z, perm, rate, weights, noise, plan.gram_pool)

    @staticmethod
    def _filter(factor):
        """The module of the factor's filter: scalar (real rate) or two-state (phased)."""
        return _numba_filter2 if isinstance(factor, _numba_filter2.PhasedFactor) else _numba_filter

    def gram_quadratic(self, factor, r, mean):
        return self._filter(factor).quadratic(factor, r, mean)

    def gram_solve(self, factor, b):
        return self._filter(factor).solve(factor, b)

    def gram_color(self, factor, z):
        return self._filter(factor).color_columns(factor, z)

    def gram_nll_gradient(self, factor, r, mean, summed=(False, False)):
        return self._filter(factor).nll_gradient(factor, r, mean, summed)


def _touched(shape, dtype) -> np.ndarray:
    """An array whose pages are all mapped: kept memory, or new and written once (``np.zeros``
    maps them lazily)."""
    return POOL.empty(shape, dtype, touch=True)


def _scan_layout(s: _Side, k: int, dtype, operand_dtype, wants):
    """The scratch arrays of one ``apply`` on side ``s`` (see ``scan`` and ``scan_square``) that
    wants the reductions ``wants`` (sum, signed, moment): the scans' states in ``dtype``, the
    operand in sorted column order, the results' staging for their route (none when they fit
    in the operand's)."""
    m, n = s.rz.shape[0], s.cz.shape[0]
    want_sum, _, want_moment = wants
    if s.square:
        shapes = [(k, n), (k, n * want_moment)]
    else:
        states = n + _one_column_sums(s, k, wants)  # see rows_sum_one_column
        shapes = [
            (k, states),
            (k, states),
            (k, n * want_moment),
            (k, n * want_moment),
        ]
    staged = s.cperm is not None
    results = m * k * sum(wants) * (s.rroute is not None)
    operand_rows = n if staged else 0
    if _results_staged_in_operand(s):
        # one region for both, as long as the larger: the results are written after the last read
        # of the operand
        size = results * np.dtype(dtype).itemsize
        operand_rows = max(n, -(-size // (k * np.dtype(operand_dtype).itemsize)))
        results = 0
    return [(shape, dtype) for shape in shapes] + [
        ((operand_rows, k), operand_dtype),
        ((results,), dtype),
    ]


def _one_column_sums(s: _Side, k: int, wants) -> bool:
    """Whether an ``apply`` takes the one-column row pass (``rows_sum_one_column``, whose scan
    states lie one apart in scratch of ``n + 1``): sums alone of one column, rows not the
    columns."""
    return k == 1 and tuple(wants) == (True, False, False) and not s.square


def _results_staged_in_operand(s: _Side) -> bool:
    """Whether an ``apply``'s routed results are staged in the sorted operand's scratch (made
    large enough for both): the row pass of ``scan`` does not read the operand
    (``scan_square``'s does)."""
    return s.rroute is not None and s.cperm is not None and not s.square


def _nbytes(shape, dtype) -> int:
    """The bytes of an array of ``shape`` and ``dtype`` (plain Python: called on every product)."""
    return math.prod(shape) * np.dtype(dtype).itemsize


def _carve(buf: np.ndarray, shape, dtype) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` over the first bytes of the C-contiguous ``buf``."""
    size = _nbytes(shape, dtype)
    return buf.reshape(-1).view(np.uint8)[:size].view(dtype).reshape(shape)


def _to_sorted(a, perm, route, out, stage) -> None:
    """``out = a[perm]`` (rows), through ``route`` when there is one (``stage`` its staging, shaped
    like ``out``)."""
    a, out = _movable(a), _movable(out)
    if route is None:
        gather(a, perm, out, work=out.size)
    else:
        route.gather(a, out, _movable(stage))


def _rdest(perm, route) -> np.ndarray:
    """Where a row pass writes sorted row ``r`` (its ``rdest``): to slot ``route.slot[r]`` of a
    staging array when there is a route, else to row ``perm[r]`` (no permutation: to row r)."""
    if route is not None:
        return route.slot
    return _NO_PERM if perm is None else perm


def _unstaged(route, staged: np.ndarray) -> np.ndarray:
    """The (n, k) results a row pass wrote for :func:`_rdest`, in original row order: a new
    array moved through ``route`` from its staging, or ``staged`` itself without a route."""
    if route is None:
        return staged
    out = np.empty(staged.shape, staged.dtype)
    _to_rows(route, [staged], [out])
    return out


def _carve_or_new(buf: np.ndarray | None, shape, dtype) -> np.ndarray:
    """:func:`_carve` from ``buf`` when it is large enough, else a new array."""
    if buf is not None and buf.nbytes >= _nbytes(shape, dtype):
        return _carve(buf, shape, dtype)
    return POOL.empty(shape, dtype)


def _row_targets(perm, route, outs, stage):
    """Where a row pass writes the results ``outs`` (2-D, empty when not wanted): ``(rdest,
    targets)`` for the kernels. Without a route, sorted row ``r`` goes to row ``perm[r]`` of its
    output; with one, to its slot of an array carved from the flat ``stage`` (one per result, in
    turn), and :func:`_to_rows` then moves them into the outputs."""
    if route is None:
        return _rdest(perm, None), outs
    targets, start = [], 0
    for o in outs:
        if o.shape[0]:
            targets.append(stage[start : start + o.size].reshape(o.shape))
            start += o.size
        else:
            targets.append(o)
    return _rdest(perm, route), targets


def _to_rows(route, targets, outs) -> None:
    """Move what a row pass wrote to ``targets`` (see :func:`_row_targets`) into ``outs``."""
    if route is not None:
        for t, o in zip(targets, outs):
            if o.shape[0]:
                route.scatter(_movable(t), _movable(o))


def _movable(a: np.ndarray) -> np.ndarray:
    """A C-contiguous (n, k) array in the form the moves of ``_numba_route`` take fastest: one
    column as a 1-D array (plain element moves), several complex ones as reals (n, 2k)."""
    if a.shape[1] == 1:
        return a.reshape(a.shape[0])
    if a.dtype.kind == "c":
        return a.view(np.finfo(a.dtype).dtype).reshape(a.shape[0], 2 * a.shape[1])
    return a
