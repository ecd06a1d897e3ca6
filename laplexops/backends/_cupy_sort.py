"""The GPU backend's sorts of a plan's anchors: the kernels' LSD radix sort of fresh anchors, and
the window repair of a previous plan's order (``with_anchors``).

Both give the order of NumPy's stable argsort (by value, ties by index), so a repaired plan is a
fresh plan's to the bit. Each function takes the :class:`~laplexops.backends._cupy.CupyBackend`
that launches the kernels (its ``xp``, ``geometry`` and ``launch``); ``docs/gpu-validation.md``
describes the kernels and their bytes.
"""

from __future__ import annotations

import numpy as np

from . import _cuda_kernels as cuda

__all__ = [
    "RADIX_DIGITS",
    "REPAIR_PASSES",
    "radix_counts",
    "radix_sort",
    "radix_tiles",
    "repair",
    "sort",
]

#: buckets of a radix sort pass (8 bits a pass)
RADIX_DIGITS = 256
#: window-sort passes a repair may take before the plan falls back to a radix sort
REPAIR_PASSES = 4
_NULL = np.uintp(0)  # a kernel's null pointer argument


def sort(backend, a, index, ordered=None, hinted=False, previous=None):
    """``(a[perm], perm)`` for the stable permutation ``perm`` (``index`` dtype) sorting ``a``;
    ``perm`` is ``None`` when ``a`` is already sorted (then ``a`` itself comes back).

    Parameters
    ----------
    backend : CupyBackend
        Launches the kernels.
    a : 1-D float array (the backend's ``xp``)
        The anchors.
    index : numpy.dtype
        ``int32`` or ``int64``, the permutation's dtype.
    ordered : bool or None
        Whether ``a`` is in ascending order, as its snapshot found (``None``: not known; the first
        radix pass's counts then tell, from the same read).
    hinted : bool
        Whether a previous plan's order of anchors of this length is known (``with_anchors``);
        it is repaired by window sorts when the anchors moved little, before a full sort.
    previous : array or None
        That previous order (``index`` dtype); ``None`` when it was the identity (those anchors
        were sorted). Read only when ``hinted``.
    """
    if a.shape[0] < 2 or ordered:
        return a, None
    counts = None
    if ordered is None:
        counts, unsorted = radix_counts(backend, a, 0, index, check_order=True)
        if not unsorted:
            return a, None
    if hinted:
        repaired = repair(backend, a, previous, index)
        if repaired is not None:
            return repaired
    return radix_sort(backend, a, index, counts)


def radix_tiles(backend, keys, index) -> int:
    """Radix tiles over ``keys`` (one block each)."""
    tile = cuda.radix_tile(backend.geometry, np.dtype(keys.dtype).name, index.name)
    return -(-keys.shape[0] // tile)


def radix_counts(backend, keys, shift, index, check_order=False, counts=None):
    """The digit counts of every radix tile of ``keys`` at bit ``shift`` (digit-major, into
    ``counts`` when given), and with ``check_order`` whether ``keys`` is out of order (from the
    same read; ``False`` without it)."""
    xp = backend.xp
    n = keys.shape[0]
    tiles = radix_tiles(backend, keys, index)
    if counts is None:
        counts = xp.empty(RADIX_DIGITS * tiles, dtype=index)
    flag = xp.zeros(1, dtype=np.int32) if check_order else None
    backend.launch(
        cuda.radix_counts_name(np.dtype(keys.dtype).name, index.name),
        (tiles,),
        (backend.geometry["LAPLEX_RADIX_BLOCK"],),
        (keys, np.int64(n), np.int32(shift), counts, _ptr(flag)),
    )
    return counts, check_order and bool(flag[0])


def radix_sort(backend, a, index, counts=None):
    """``(a[perm], perm)`` for the stable ``perm`` (``index`` dtype) sorting ``a``: LSD radix
    sort, 8 bits a pass, the keys sorted with their permutation (no gather afterwards). A pass
    whose digit is the same for every key moves nothing and is skipped (as on the CPU); that takes
    one look at the 256 digit totals per pass. ``counts``: those of the first pass, when already
    counted. ``perm`` is ``None`` when no pass moved anything (the keys were in order)."""
    xp = backend.xp
    n = a.shape[0]
    if n < 2:
        return a, None
    tiles = radix_tiles(backend, a, index)
    scatter = cuda.radix_scatter_name(np.dtype(a.dtype).name, index.name)
    if counts is None:
        counts, _ = radix_counts(backend, a, 0, index)
    keys, perm = a, None
    spare = []  # output buffers of a pass: the input of the one before it
    for shift in range(0, 8 * a.dtype.itemsize, 8):
        if shift:
            radix_counts(backend, keys, shift, index, counts=counts)
        ends = xp.cumsum(counts, dtype=index)
        digit_ends = ends[tiles - 1 :: tiles]  # where each digit's keys end in the output
        sizes = xp.concatenate((digit_ends[:1], digit_ends[1:] - digit_ends[:-1]))
        if bool(xp.any(sizes == n)):
            continue  # one digit holds every key
        out_keys, out_perm = spare.pop() if spare else (xp.empty_like(a), xp.empty(n, dtype=index))
        backend.launch(
            scatter,
            (tiles,),
            (backend.geometry["LAPLEX_RADIX_BLOCK"],),
            (
                keys,
                _ptr(perm),
                out_keys,
                out_perm,
                np.int64(n),
                np.int32(shift),
                ends,
            ),
        )
        if perm is not None:
            spare.append((keys, perm))
        keys, perm = out_keys, out_perm
    return keys, perm


def repair(backend, a, previous, index):
    """Sort ``a`` by fixing up the order ``previous`` (``None``: the identity): O(n) per pass, a
    few passes for anchors that moved by much less than their spacing; ``None`` when that does
    not finish within ``REPAIR_PASSES``. The first pass gathers ``a`` in that order as it loads
    its windows; later passes load only the windows with a broken seam."""
    xp = backend.xp
    n = a.shape[0]
    values = xp.empty_like(a)
    perm = xp.empty(n, dtype=index)
    source = (a, _ptr(previous))
    window = backend.geometry["LAPLEX_SORT_BLOCK"] * backend.geometry["LAPLEX_SORT_ITEMS"]
    real = np.dtype(a.dtype).name
    sort_windows = cuda.sort_windows_name(real, index.name)
    seams = cuda.window_seams_name(real, index.name)
    unsorted = xp.zeros(1, dtype=np.int32)
    for step in range(REPAIR_PASSES):
        offset = 0 if step % 2 == 0 else window // 2
        blocks = -(-(n - offset) // window)
        backend.launch(
            sort_windows,
            (blocks,),
            (backend.geometry["LAPLEX_SORT_BLOCK"],),
            (
                values,
                perm,
                *(source if step == 0 else (_NULL, _NULL)),
                np.int64(n),
                np.int64(offset),
            ),
        )
        unsorted[...] = 0
        backend.launch(
            seams,
            (-(-blocks // 256),),
            (256,),
            (values, perm, np.int64(n), np.int64(offset), unsorted),
        )
        if not int(unsorted[0]):  # every window is in order: the seams decide
            return values, perm
    return None


def _ptr(a):
    """A kernel argument for an optional array: the array, or a null pointer."""
    return _NULL if a is None else a
