"""Buffers kept for reuse: the CPU backend's plans and scratch without a page-fault storm.

A fresh product or a training step (``with_anchors``, a product, a gradient) makes its plan's
arrays anew: snapshots, sorted values and orders, routes, merge counts, decays, scratch, about 50
bytes per anchor for a product (100 MB at a million a side). The allocator often hands
multi-megabyte arrays back to the operating system when they are freed, so the next plan's arrays
start as unmapped pages, and the first write to each page costs a fault: on the machine measured
(docs/benchmarks.md) these faults took half of the time of ``with_anchors`` and a product at a
million anchors a side.

:data:`POOL` keeps the memory of such arrays after them. Each array from :meth:`BufferPool.empty`
is a view of a buffer (a flat ``uint8`` array) that the pool holds; a buffer is free again when
no object but the pool refers to it (no array made from it is alive, which its reference count
tells), and the next request of about its size gets it. So a training loop's plans and scratch
take each other's memory step after step.

What the pool holds beyond the arrays in use is bounded: at most ``keep_bytes`` of free memory
(``LAPLEXOPS_KEEP_BYTES`` in the environment, 512 MiB by default; 0 turns the pool off) while any
of its arrays is in use, and an eighth of that once none is (as the allocator itself keeps some
freed memory). The least recently used free buffers go first, whenever the pool is asked for
memory and whenever a plan dies (unless another call holds the pool then). So a training loop
keeps each dead plan's memory for the next one (an operator is alive throughout: the next plan is
built from the previous one), and once the last operator is gone an eighth of ``keep_bytes`` at
most stays. An array larger than a quarter of ``keep_bytes``, or smaller than ``MIN_BYTES``, is a
plain NumPy array. :func:`release_memory` lets every free buffer go.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

import numpy as np

__all__ = ["MIN_BYTES", "POOL", "BufferPool", "release_memory"]

#: the size from which an array comes from the pool: below it the allocator keeps freed memory
#: mapped, and a buffer's bookkeeping would cost more than its page faults
MIN_BYTES = 1 << 20
_SLACK = 8  # a buffer serves a request when it is at most 1 / _SLACK larger
_DEFAULT_KEEP = 512 << 20


def _keep_bytes_from_environment() -> int:
    """``LAPLEXOPS_KEEP_BYTES`` as a byte count (the default where unset)."""
    text = os.environ.get("LAPLEXOPS_KEEP_BYTES", "").strip()
    if not text:
        return _DEFAULT_KEEP
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"LAPLEXOPS_KEEP_BYTES must be a byte count, got {text!r}") from None
    if value < 0:
        raise ValueError(f"LAPLEXOPS_KEEP_BYTES must be at least 0, got {value}")
    return value


class BufferPool:
    """Flat buffers handed out as arrays and taken back once nothing refers to them (see the
    module docstring); at most ``keep_bytes`` of free ones held. Thread-safe."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = int(keep_bytes)
        self._lock = threading.Lock()
        self._buffers: list[np.ndarray] = []  # least recently handed out first
        _POOLS.add(self)

    def _free(self, i: int) -> bool:
        """Whether buffer ``i`` is free: the pool's list holds the only reference to it (one
        more is ``getrefcount``'s own argument)."""
        return sys.getrefcount(self._buffers[i]) == 2

    def empty(self, shape, dtype, touch: bool = False) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, on a free buffer of
        at least its size (and at most an eighth larger) when there is one. ``touch``: write
        a new buffer's pages once now, so that later writes fault no more."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
        size = dtype.itemsize
        for s in shape:
            size *= s
        new = True
        if size < MIN_BYTES or 4 * size > self.keep_bytes:
            array = np.empty(shape, dtype)
        else:
            with self._lock:
                fits = [
                    i
                    for i in range(len(self._buffers))
                    if size <= self._buffers[i].nbytes <= size + size // _SLACK and self._free(i)
                ]
                new = not fits
                if new:
                    buf = np.empty(size, np.uint8)
                else:
                    buf = self._buffers.pop(min(fits, key=lambda i: self._buffers[i].nbytes))
                self._buffers.append(buf)  # most recently handed out last
                array = buf[:size].view(dtype).reshape(shape)
                del buf
                self._drop_free()
        if touch and new:
            array.fill(0)
        return array

    def empty_like(self, a: np.ndarray, dtype=None) -> np.ndarray:
        """:meth:`empty` of ``a``'s shape, in ``a``'s dtype unless given."""
        return self.empty(a.shape, a.dtype if dtype is None else dtype)

    def _free_indices(self) -> list[int]:
        """The free buffers' places in the list, least recently used first (the lock held)."""
        return [i for i in range(len(self._buffers)) if self._free(i)]

    def _drop_free(self, limit: int | None = None) -> int:
        """Let free buffers go, the least recently used first, until at most ``limit`` bytes of
        them are held (``None``: the bound, ``keep_bytes`` while some buffer is in use, an
        eighth of it while none is); returns the bytes let go (the lock held)."""
        free = self._free_indices()
        if limit is None:
            in_use = len(free) < len(self._buffers)
            limit = self.keep_bytes if in_use else self.keep_bytes // 8
        held = sum(self._buffers[i].nbytes for i in free)
        drop = set()
        for i in free:
            if held <= limit:
                break
            held -= self._buffers[i].nbytes
            drop.add(i)
        dropped = sum(self._buffers[i].nbytes for i in drop)
        if drop:
            self._buffers = [b for i, b in enumerate(self._buffers) if i not in drop]
        return dropped

    def trim(self) -> None:
        """Let the free buffers beyond the bound go (see :meth:`_drop_free`), unless the pool is
        busy: a plan's finalizer calls this, and the garbage collector may run one while this
        thread holds the lock (the pool's next call trims then)."""
        if self._lock.acquire(blocking=False):
            try:
                self._drop_free()
            finally:
                self._lock.release()

    def release(self) -> int:
        """Let every free buffer go; returns the bytes let go."""
        with self._lock:
            return self._drop_free(0)

    def held_bytes(self) -> tuple[int, int]:
        """``(in_use, free)``: the bytes of the buffers held, in use and free."""
        with self._lock:
            free = sum(self._buffers[i].nbytes for i in self._free_indices())
            return sum(b.nbytes for b in self._buffers) - free, free


def _after_fork() -> None:
    """In a forked child, every pool gets a new lock: another thread may have held the parent's
    at the fork, and that thread does not exist in the child."""
    for pool in list(_POOLS):
        pool._lock = threading.Lock()


_POOLS: weakref.WeakSet[BufferPool] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

#: the CPU backend's pool
POOL = BufferPool(_keep_bytes_from_environment())


def release_memory() -> int:
    """Hand back to the operating system the memory the CPU backend keeps for reuse.

    The CPU backend keeps the memory of its plans' and scratch arrays (each of a megabyte or
    more) after they die, so that the next plan of a training loop writes to pages already
    mapped instead of faulting on new ones. Of memory no array uses it keeps at most
    ``LAPLEXOPS_KEEP_BYTES`` (an environment variable read at import; 512 MiB by default, 0 to
    keep nothing) while some of its arrays are in use (an operator is alive), and an eighth of
    that once none is; the rest goes as plans die. This lets go of all of it now; the arrays in
    use (those of live operators, and anchors or results held) stay.

    Returns
    -------
    int
        The bytes let go.

    Examples
    --------
    >>> op = lx.LaplexOperator(np.arange(400_000.0), np.arange(400_000.0)[::-1])
    >>> y = op @ np.ones(400_000)
    >>> del op
    >>> lx.release_memory() > 0
    True
    >>> lx.release_memory()
    0
    """
    return POOL.release()
