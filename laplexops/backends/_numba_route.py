"""Permutations applied through cache-sized blocks: the CPU backend's gathers and scatters (Numba).

A product moves its operand from the caller's order into sorted order and its result back. Done
directly, ``out[perm[r]] = a[r]`` touches a cache line anywhere in ``out`` for every element: at a
million elements that random traffic takes longer than all the scans together. A :class:`Route`
splits the move in two passes over a *staging* array, each with local memory accesses:

- the original indices are cut into blocks of ``2**shift`` (a region of ``out`` that stays in the
  core's cache); staging slot order groups the elements by their block, in sorted order within a
  block: ``slot[r]`` is the slot of sorted position ``r``, ``offset[t]`` the original index of slot
  ``t`` less its block's start, ``starts[b]`` block ``b``'s first slot;
- a scatter writes ``stage[slot[r]]`` (as many sequential write streams as there are blocks: 16 at
  a million elements, more from 2^20 on, where the blocks stop growing), then
  :func:`scatter_inverse` fills each block's region of ``out`` in order from its slots, read
  through the route's ``inverse`` (``inverse[i]``: the slot of original index ``i``, less its
  block's first slot);
- a gather is the reverse: :func:`gather_blocks` reads each region into its slots, then
  :func:`gather` reads ``stage[slot[r]]`` in sorted order.

Both block passes read at random within a block (in cache) and write in order: scattered writes,
even in cache, took twice as long (each waits for its line). Data only moves, so the results are
bitwise those of the direct permutation. A route costs 6 bytes per element (int32 slots, uint16
offsets), 8 once it has scattered (its inverse, made on first use: a product's columns never
scatter; above ``INVERSE_MAX`` elements none, and :func:`scatter_blocks` writes each block's slots
at their offsets instead); building it is O(m), less than one direct scatter; the permutation can
be made again from it (:meth:`Route.permutation`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from ._numba_memory import POOL
from ._numba_threads import kernel

__all__ = [
    "INVERSE_MAX", "ROUTE_MIN", "Route", "gather", "gather_blocks", "scatter_blocks",
    "scatter_inverse", "to_slots",
]  # fmt: skip

#: the length from which a permutation gets a route: below it the direct moves stay in cache
ROUTE_MIN = 1 << 17
#: the length up to which a route of a permutation keeps its inverse (2 bytes per element): beyond
#: it a training step's memory (about 39 bytes per anchor at 1e8) has no room for it
INVERSE_MAX = 1 << 25
_STREAMS = 16  # about this many blocks: staging streams the hardware prefetchers follow
_LINE = 64  # bytes in a cache line


class Route:
    """The blocked form of a permutation ``perm`` (sorted position -> original index; see the
    module docstring). ``slot``, ``offset``, ``starts``, ``shift`` and ``inverse`` (made by
    :meth:`invert`, on the first scatter at the latest; ``None`` until then, and for a part of
    a permutation or beyond ``INVERSE_MAX``) go to the kernels.

    With ``length`` (greater than every index), ``perm`` may be any injective map into
    ``range(length)``, a part of a permutation: the route then gathers (``out[r] =
    a[perm[r]]`` from ``a`` of ``length`` rows) but does not put."""

    __slots__ = ("slot", "offset", "inverse", "starts", "shift", "sink", "length")

    def __init__(self, perm: np.ndarray, length: int | None = None) -> None:
        m = perm.shape[0]
        self.length = m if length is None else int(length)
        n = self.length
        # blocks of at least 2^12 indices, at most 2^16 (the offsets' uint16; 512 kB of float64)
        self.shift = min(16, max(12, int(np.ceil(np.log2(max(n, 1) / _STREAMS)))))
        blocks = ((n - 1) >> self.shift) + 1 if n else 0
        self.slot = POOL.empty(m, np.int32 if m < 2**31 else np.int64)
        self.offset = POOL.empty(m, np.uint16)
        if n == m:  # a permutation fills every block
            self.starts = np.minimum(np.arange(blocks + 1, dtype=np.int64) << self.shift, m)
        else:
            counts = np.bincount(perm >> self.shift, minlength=blocks)
            self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.sink = np.empty(blocks)  # see gather_blocks (concurrent calls may share it)
        _build(perm, self.shift, self.slot, self.offset, self.starts, work=m)
        self.inverse: np.ndarray | None = None

    def invert(self) -> np.ndarray | None:
        """The route's ``inverse``, made now unless held (a permutation of up to ``INVERSE_MAX``
        elements; else ``None``). O(m) once."""
        m = self.slot.shape[0]
        if self.inverse is None and self.length == m and m <= INVERSE_MAX:
            inverse = POOL.empty(m, np.uint16)
            _invert(self.starts, self.offset, inverse, work=m)
            self.inverse = inverse  # whole or not at all (concurrent callers each make one)
        return self.inverse

    @property
    def nbytes(self) -> int:
        """The bytes this route holds."""
        held = (self.slot, self.offset, self.inverse, self.starts, self.sink)
        return sum(a.nbytes for a in held if a is not None)

    def gather(self, a: np.ndarray | list, out: np.ndarray, stage: np.ndarray) -> None:
        """``out[r] = a[perm[r]]`` for the rows of ``a`` (1-D: its elements; a list of arrays:
        their rows in turn, not joined first), through ``stage`` (``out``'s shape and dtype).
        O(m k)."""
        if not out.size:
            return
        pieces = a if isinstance(a, list) else [a]
        rows = sum(piece.shape[0] for piece in pieces)
        if rows != self.length:
            raise ValueError(f"a route of {self.length} rows got {rows}")
        blocks = self.starts.shape[0] - 1
        runs = [(pieces[0], 0, blocks, 0)] if len(pieces) == 1 else self._runs(pieces)
        for region, lo, hi, origin in runs:
            gather_blocks(
                *(region, self.starts, self.offset, self.shift, stage, self.sink),
                *(lo, hi, origin),
                work=(hi - lo) << self.shift,
            )
        gather(stage, self.slot, out, work=out.size)

    def _runs(self, pieces: list):
        """``(region, lo, hi, origin)`` for each call of :func:`gather_blocks` over ``pieces``:
        a run of blocks ``lo .. hi - 1`` within one piece reads it in place (``origin``: the
        piece's first row); a block across pieces reads its rows joined (at most ``2**16``)."""
        ends = np.cumsum([piece.shape[0] for piece in pieces])
        firsts = (ends - [piece.shape[0] for piece in pieces]).tolist()
        size, blocks = 1 << self.shift, self.starts.shape[0] - 1
        b = 0
        while b < blocks:
            j = int(np.searchsorted(ends, b * size, side="right"))  # holds block b's first row
            end = min((b + 1) * size, self.length)
            if end <= ends[j]:
                stop = blocks if ends[j] == self.length else int(ends[j]) // size
                yield pieces[j], b, stop, firsts[j]
            else:
                stop, origin = b + 1, b * size
                parts = [p[max(origin - f, 0) : max(end - f, 0)] for p, f in zip(pieces, firsts)]
                yield np.concatenate(parts), b, stop, origin
            b = stop

    def permutation(self) -> np.ndarray:
        """The permutation this route was built from, made again (a new array). O(m)."""
        perm = POOL.empty(self.slot.shape[0], self.slot.dtype)
        _permutation(self.slot, self.offset, self.shift, perm, work=perm.shape[0])
        return perm

    def put(self, a: np.ndarray | list, out: np.ndarray, stage: np.ndarray) -> None:
        """``out[perm[r]] = a[r]`` for the rows of ``a`` (1-D: its elements; a list of arrays:
        their rows in turn, not joined first), through ``stage`` (``out``'s shape and dtype):
        the inverse of :meth:`gather`. O(m k)."""
        if self.length != self.slot.shape[0]:
            raise ValueError("a route of part of a permutation gathers only")
        if not stage.size:
            return
        start = 0
        for block in a if isinstance(a, list) else [a]:
            stop = start + block.shape[0]
            if block.size:
                to_slots(block, self.slot[start:stop], stage, work=block.size)
            start = stop
        self.scatter(stage, out)

    def scatter(self, stage: np.ndarray, out: np.ndarray) -> None:
        """``out[perm[r]] = x_r`` for the rows ``x_r`` (1-D: elements) that a kernel wrote to
        ``stage[slot[r]]``. O(m k)."""
        if not stage.size:
            return
        inverse = self.invert()
        if inverse is None:
            scatter_blocks(stage, self.starts, self.offset, self.shift, out, work=stage.size)
        else:
            scatter_inverse(stage, self.starts, inverse, out, work=stage.size)


@kernel
def _build(perm, shift, slot, offset, starts):  # pragma: no cover - compiled
    """Fill a :class:`Route`'s ``slot`` and ``offset`` for ``perm``: a stable counting sort of
    the positions by block, whose counts ``starts`` holds (a permutation fills every block).
    The first half of the positions takes each block's slots from its start, the second half
    from its end walking backwards, so the two halves run at once and meet exactly. O(m)."""
    m = perm.shape[0]
    half = m // 2
    mask = (1 << shift) - 1
    for part in prange(2):
        if part == 0:
            heads = starts[:-1].copy()  # the next free slot of each block, from the front
            for r in range(half):
                p = perm[r]
                b = p >> shift
                t = heads[b]
                heads[b] = t + 1
                slot[r] = t
                offset[t] = p & mask
        else:
            heads = starts[1:].copy()  # one past the last free slot, from the back
            for r in range(m - 1, half - 1, -1):
                p = perm[r]
                b = p >> shift
                t = heads[b] - 1
                heads[b] = t
                slot[r] = t
                offset[t] = p & mask


@kernel
def _invert(starts, offset, inverse):  # pragma: no cover - compiled
    """``inverse[starts[b] + offset[t]] = t - starts[b]`` for the slots ``t`` of each block ``b``
    of a permutation's route (whose block ``b`` holds the indices from ``starts[b]`` on). O(m)."""
    for b in prange(starts.shape[0] - 1):
        first = starts[b]
        region = inverse[first : starts[b + 1]]
        for t in range(first, starts[b + 1]):
            region[offset[t]] = t - first


@kernel
def _permutation(slot, offset, shift, perm):  # pragma: no cover - compiled
    """``perm[r]``, the original index of sorted position ``r``, from a route: its slot ``t =
    slot[r]`` lies in block ``t >> shift`` (a permutation fills every block, so each block's
    slots start at its first index), ``offset[t]`` into it. O(m)."""
    for r in prange(slot.shape[0]):
        t = slot[r]
        perm[r] = ((t >> shift) << shift) + offset[t]


# The block passes compute their indices (block start + offset) in unsigned arithmetic
# (``np.uintp``): a signed index makes Numba check its sign on every element, which took a third of
# the pass's time; and unlike a view of the block's region indexed by the offsets themselves,
# plain indices into the whole array let a single column's loop run in SIMD lanes (AVX-512
# gathers; docs/benchmarks.md).
#
# The moves take 1-D arrays (one value per row: the common single column, whose loops then
# compile to plain element moves, several times faster than the same moves through rows of one)
# or 2-D ones (rows of k values); these helpers, inlined into the kernels, are what differs.


def _copy_row(src, i, dst, t):  # pragma: no cover - only compiled
    """``dst[t] = src[i]``: a value of 1-D arrays, a row of 2-D ones."""
    raise NotImplementedError


def _first(a, i):  # pragma: no cover - only compiled
    """The first value of row ``i``: ``a[i]`` or ``a[i, 0]``."""
    raise NotImplementedError


def _clear_first(a, i):  # pragma: no cover - only compiled
    """Set the first value of row ``i`` to zero."""
    raise NotImplementedError


@overload(_copy_row, inline="always")
def _copy_row_impl(src, i, dst, t):
    if src.ndim == 1:

        def copy_value(src, i, dst, t):  # pragma: no cover - compiled
            dst[t] = src[i]

        return copy_value

    def copy_row(src, i, dst, t):  # pragma: no cover - compiled
        for j in range(src.shape[1]):
            dst[t, j] = src[i, j]

    return copy_row


@overload(_first, inline="always")
def _first_impl(a, i):
    if a.ndim == 1:
        return lambda a, i: a[i]  # pragma: no cover - compiled
    return lambda a, i: a[i, 0]  # pragma: no cover - compiled


@overload(_clear_first, inline="always")
def _clear_first_impl(a, i):
    if a.ndim == 1:

        def clear_value(a, i):  # pragma: no cover - compiled
            a[i] = 0

        return clear_value

    def clear_row(a, i):  # pragma: no cover - compiled
        a[i, 0] = 0

    return clear_row


@njit(cache=True, nogil=True)
def _lines(a, start, stop):  # pragma: no cover - compiled
    """Every ``_LINE // row size``-th row of ``a[start:stop]``: a stride that reads each cache line
    of the rows (for the prefetchers to stream them in) and no more."""
    row = max(1, a.size // max(1, a.shape[0])) * a.itemsize
    return range(start, min(stop, a.shape[0]), max(1, _LINE // row))


@kernel
def scatter_blocks(stage, starts, offset, shift, out):  # pragma: no cover - compiled
    """``out[block start + offset[t]] = stage[t]`` row by row, one block at a time: the second
    pass of a scatter into original order. Each block's region of ``out`` is first written in
    order (streamed into the cache; the values are overwritten), so that the scattered writes
    find it there. O(m k)."""
    for b in prange(starts.shape[0] - 1):
        region = out[b << shift : (b + 1) << shift]
        for i in _lines(region, 0, region.shape[0]):
            _clear_first(region, i)
        for t in range(starts[b], starts[b + 1]):
            _copy_row(stage, t, region, offset[t])


@kernel
def scatter_inverse(stage, starts, inverse, out):  # pragma: no cover - compiled
    """``out[i] = stage[starts[b] + inverse[i]]`` row by row, one block ``b`` at a time (a
    permutation's route: block ``b`` holds the indices and the slots from ``starts[b]`` on): the
    second pass of a scatter into original order, with its writes in order. O(m k)."""
    for b in prange(starts.shape[0] - 1):
        first = np.uintp(starts[b])
        for i in range(first, np.uintp(starts[b + 1])):
            _copy_row(stage, first + np.uintp(inverse[i]), out, i)


@kernel
def gather_blocks(a, starts, offset, shift, stage, sink, lo, hi, origin):  # pragma: no cover
    """``stage[t] = a[block start + offset[t] - origin]`` row by row for the blocks ``lo`` to
    ``hi`` (whose rows ``a`` holds from row ``origin`` on), one block at a time: the first pass
    of a gather into sorted order. Each block's region of ``a`` is first read in order (streamed
    into the cache) and its sum kept in ``sink[b]``, so that the reads are not optimised away.
    O(m k)."""
    for i in prange(hi - lo):
        b = lo + i
        first = (b << shift) - origin
        acc = _first(a, 0) * 0
        for r in _lines(a, first, first + (1 << shift)):
            acc += _first(a, r)
        sink[b] = acc.real
        for t in range(np.uintp(starts[b]), np.uintp(starts[b + 1])):
            _copy_row(a, np.uintp(first) + np.uintp(offset[t]), stage, t)


@kernel
def gather(b, perm, out):  # pragma: no cover - compiled
    """``out[c] = b[perm[c]]`` row by row: the direct gather (and with a route's slots for
    ``perm``, the second pass of a gather into sorted order). O(m k)."""
    for c in prange(perm.shape[0]):
        _copy_row(b, perm[c], out, c)


@kernel
def to_slots(a, slot, stage):  # pragma: no cover - compiled
    """``stage[slot[r]] = a[r]`` row by row: a route's staging written from rows in sorted
    order (a few sequential write streams). O(m k)."""
    for r in prange(slot.shape[0]):
        _copy_row(a, r, stage, slot[r])
