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
  :func:`scatter_blocks` copies each block's slots into its region of ``out``;
- a gather is the reverse: :func:`gather_blocks` reads each region into its slots, then
  :func:`gather` reads ``stage[slot[r]]`` in sorted order.

Data only moves, so the results are bitwise those of the direct permutation. A route costs 6 bytes
per element (int32 slots, uint16 offsets); building it is O(m), less than one direct scatter.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_threads import kernel

__all__ = ["ROUTE_MIN", "Route", "gather", "gather_blocks", "scatter_blocks"]

#: the length from which a permutation gets a route: below it the direct moves stay in cache
ROUTE_MIN = 1 << 17
_STREAMS = 16  # about this many blocks: staging streams the hardware prefetchers follow
_LINE = 64  # bytes in a cache line


class Route:
    """The blocked form of a permutation ``perm`` (sorted position -> original index; see the
    module docstring). ``slot``, ``offset``, ``starts`` and ``shift`` go to the kernels."""

    __slots__ = ("slot", "offset", "starts", "shift", "sink")

    def __init__(self, perm: np.ndarray) -> None:
        m = perm.shape[0]
        # blocks of at least 2^12 indices, at most 2^16 (the offsets' uint16; 512 kB of float64)
        self.shift = min(16, max(12, int(np.ceil(np.log2(max(m, 1) / _STREAMS)))))
        blocks = ((m - 1) >> self.shift) + 1 if m else 0
        self.slot = np.empty(m, np.int32 if m < 2**31 else np.int64)
        self.offset = np.empty(m, np.uint16)
        self.starts = np.minimum(np.arange(blocks + 1, dtype=np.int64) << self.shift, m)
        self.sink = np.empty(blocks)  # see gather_blocks (concurrent calls may share it)
        _build(perm, self.shift, self.slot, self.offset, self.starts, work=m)

    def gather(self, a: np.ndarray, out: np.ndarray, stage: np.ndarray) -> None:
        """``out[r] = a[perm[r]]`` for the rows of 2-D ``a``, through ``stage`` (``out``'s shape
        and dtype). O(m k)."""
        if a.shape[1]:
            work = a.shape[0] * a.shape[1]
            gather_blocks(a, self.starts, self.offset, self.shift, stage, self.sink, work=work)
            gather(stage, self.slot, out, work=work)

    def scatter(self, stage: np.ndarray, out: np.ndarray) -> None:
        """``out[perm[r]] = x_r`` for the rows ``x_r`` that a kernel wrote to ``stage[slot[r]]``.
        O(m k)."""
        if stage.shape[1]:
            work = stage.shape[0] * stage.shape[1]
            scatter_blocks(stage, self.starts, self.offset, self.shift, out, work=work)


@kernel
def _build(perm, shift, slot, offset, starts):  # pragma: no cover - compiled
    """Fill a :class:`Route`'s ``slot`` and ``offset`` for ``perm``: a stable counting sort of
    the positions by block, whose counts are known (a permutation fills every block). The first
    half of the positions takes each block's slots from its start, the second half from its end
    walking backwards, so the two halves run at once and meet exactly. O(m)."""
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


@njit(cache=True)
def _lines(a, start, stop):  # pragma: no cover - compiled
    """Every ``_LINE // row size``-th row of ``a[start:stop]``: a stride that reads each cache line
    of the rows (for the prefetchers to stream them in) and no more."""
    return range(start, min(stop, a.shape[0]), max(1, _LINE // (a.shape[1] * a.itemsize)))


@kernel
def scatter_blocks(stage, starts, offset, shift, out):  # pragma: no cover - compiled
    """``out[block start + offset[t]] = stage[t]`` row by row, one block at a time: the second
    pass of a scatter into original order. Each block's region of ``out`` is first written in
    order (streamed into the cache; the values are overwritten), so that the scattered writes
    find it there. O(m k)."""
    for b in prange(starts.shape[0] - 1):
        base = b << shift
        for i in _lines(out, base, base + (1 << shift)):
            out[i, 0] = 0
        for t in range(starts[b], starts[b + 1]):
            i = base + np.intp(offset[t])
            for j in range(stage.shape[1]):
                out[i, j] = stage[t, j]


@kernel
def gather_blocks(a, starts, offset, shift, stage, sink):  # pragma: no cover - compiled
    """``stage[t] = a[block start + offset[t]]`` row by row, one block at a time: the first pass
    of a gather into sorted order. Each block's region of ``a`` is first read in order (streamed
    into the cache) and its sum kept in ``sink[b]``, so that the reads are not optimised away.
    O(m k)."""
    for b in prange(starts.shape[0] - 1):
        base = b << shift
        acc = a[0, 0] * 0
        for i in _lines(a, base, base + (1 << shift)):
            acc += a[i, 0]
        sink[b] = acc
        for t in range(starts[b], starts[b + 1]):
            i = base + np.intp(offset[t])
            for j in range(a.shape[1]):
                stage[t, j] = a[i, j]


@kernel
def gather(b, perm, out):  # pragma: no cover - compiled
    """``out[c] = b[perm[c]]`` row by row: the direct gather (and with a route's slots for
    ``perm``, the second pass of a gather into sorted order). O(m k)."""
    for c in prange(perm.shape[0]):
        src = perm[c]
        for j in range(b.shape[1]):
            out[c, j] = b[src, j]
