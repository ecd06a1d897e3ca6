"""GPU backend: CuPy arrays, the kernels of ``laplex_scan.cu`` (see there for the scan itself).

A plan holds the sorted anchors of both sides and their permutations (int32 while m + n < 2^31,
none for anchors that are already sorted), from the kernels' LSD radix sort, or from the previous
plan's order repaired by window sorts (``with_anchors``); each side of it adds, on first use, the
merge-path splits of its tiles. A product is three launches over the merged order (tile maps,
carries, tile outputs), O(N k) work and two reads of the tile data; see ``docs/gpu-validation.md``
for the byte model and the sort.

The host code here is written against an array module ``xp`` and a kernel loader, so that the
test suite can run it on the CPU with NumPy arrays and the same ``.cu`` source compiled for the
host (``tests/cuda_host``); with CuPy, ``xp`` is ``cupy`` and kernels come from
``cupy.RawModule``.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import _cuda_kernels as kernels
from ._base import Side, snapshot_with

__all__ = ["CupyBackend", "CudaPlan", "RawModuleKernels"]

_MAX_GRID_Y = 65535
_REPAIR_PASSES = 4  # window-sort passes a plan repair may take before it falls back to a sort
_CARRY_ITEMS = 8  # tile maps per thread of a carry block
_RADIX_DIGITS = 256  # buckets of a radix sort pass (8 bits)
_NULL = np.uintp(0)
_IDENTITY = "identity"  # a previous order that was the identity (its anchors were sorted)
_SNAPSHOT_BLOCKS = 8192  # blocks of 256 threads of a snapshot at most (a grid-stride loop beyond)


class RawModuleKernels:
    """Kernels compiled by NVRTC through ``cupy.RawModule``, one module per template instance,
    built on first use (CuPy caches the binaries on disk)."""

    def __init__(self, geometry: dict | None = None):
        import cupy

        self._cupy = cupy
        with open(kernels.SOURCE) as fh:
            self._code = fh.read()
        self.geometry = dict(geometry or kernels.GEOMETRY)
        self._options = ("-std=c++17",) + kernels.options(self.geometry)
        self._functions: dict = {}

    def get(self, name: str):
        """The kernel ``name`` (a template instance of ``_cuda_kernels``), callable as
        ``kernel(grid, block, args)``."""
        fn = self._functions.get(name)
        if fn is None:
            module = self._cupy.RawModule(
                code=self._code, options=self._options, name_expressions=[name]
            )
            fn = self._functions[name] = module.get_function(name)
        return fn


class _Side:
    """One orientation of a plan: sorted rows against sorted columns, merged in tiles."""

    __slots__ = (
        "rz",
        "cz",
        "rperm",
        "cperm",
        "square",
        "splits",
        "tiles",
        "m",
        "n",
        "thread_rows",
        "rows_written",
    )

    def __init__(self, backend, rz, cz, rperm, cperm, shared):
        xp = backend.xp
        self.rz, self.cz, self.rperm, self.cperm = rz, cz, rperm, cperm
        self.m, self.n = rz.shape[0], cz.shape[0]
        # rows are the columns, all distinct: every merged item is both (one item per anchor)
        self.square = shared and not bool(xp.any(cz[1:] == cz[:-1]))
        total = self.n if self.square else self.m + self.n
        self.tiles = -(-total // backend.tile)
        self.splits = self.thread_rows = None
        # each scan thread's first row in its tile (uint16), found by the first product's merge-path
        # searches and read instead of searching by every later product; ``rows_written`` marks
        # the end of that first product (an event on its stream: a later product on another
        # stream waits for it before reading)
        self.rows_written = None
        if not self.square and self.tiles:
            self.thread_rows = xp.empty(
                self.tiles * backend.geometry["LAPLEX_BLOCK"], dtype=np.uint16
            )
            self.splits = xp.empty(self.tiles + 1, dtype=np.int64)
            count = self.tiles + 1
            real = np.dtype(rz.dtype).name
            backend.launch(
                kernels.splits_name(real),
                (-(-count // 256),),
                (256,),
                (rz, cz, np.int64(self.m), np.int64(self.n), np.int64(self.tiles), self.splits),
            )


class CudaPlan:
    """Sorted anchors of both sides (with their permutations, ``None`` when already sorted) and
    the sides built from them on first use."""

    def __init__(self, backend, x, y, hint: CudaPlan | None = None, ordered=(None, None)):
        self.shape = (x.shape[0], y.shape[0])
        self.shared = y is x
        self.index = np.dtype(np.int32 if x.shape[0] + y.shape[0] < 2**31 else np.int64)
        self.device = backend.device_of(x)
        usable = hint is not None and hint.shape == self.shape and hint.index == self.index
        # the previous orders; anchors that were sorted then had the identity order
        hx, hy = (
            (_IDENTITY if perm is None else perm for _, perm in hint._sorted)
            if usable
            else (None, None)
        )
        xs, xperm = backend.sort(x, hx, self.index, ordered[0])
        ys, yperm = (xs, xperm) if self.shared else backend.sort(y, hy, self.index, ordered[1])
        self._sorted = ((xs, xperm), (ys, yperm))
        self._sides: list = [None, None]
        self._backend = backend

    def side(self, side: int) -> _Side:
        if self.shared:
            side = Side.ROWS_X
        if self._sides[side] is None:
            (rz, rperm), (cz, cperm) = self._sorted[::-1] if side != Side.ROWS_X else self._sorted
            self._sides[side] = _Side(self._backend, rz, cz, rperm, cperm, self.shared)
        return self._sides[side]


class CupyBackend:
    """Backend for CUDA data (CuPy arrays, and torch CUDA tensors through DLPack).

    ``xp`` and ``kernels`` default to CuPy and ``RawModuleKernels``; the tests pass NumPy and
    host-compiled kernels to run this same host code without a GPU.
    """

    name = "cupy"

    def __init__(self, xp=None, kernels_=None, out_of_memory=None):
        if xp is None:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy sees no CUDA device")
            xp = cupy
            kernels_ = kernels_ or RawModuleKernels()
            out_of_memory = (cupy.cuda.memory.OutOfMemoryError,)
        self.xp = xp
        self.kernels = kernels_
        self._out_of_memory = tuple(out_of_memory or ())
        self._cupy = xp if xp.__name__ == "cupy" else None
        # the device kind of the data it serves: the host build (NumPy arrays) serves host data
        self.device = "cuda" if self._cupy is not None else "cpu"
        self.geometry = self.kernels.geometry
        self.tile = self.geometry["LAPLEX_BLOCK"] * self.geometry["LAPLEX_ITEMS"]

    # ---------------------------------------------------------------------- arrays and devices
    def asarray(self, a):
        xp = self.xp
        if isinstance(a, xp.ndarray):
            return a
        try:
            return xp.from_dlpack(a)
        except (TypeError, AttributeError, BufferError, RuntimeError, ValueError):
            return xp.asarray(a)

    def device_of(self, a):
        return getattr(a, "device", None) if self._cupy is not None else None

    def _on(self, device):
        return (
            device
            if device is not None and hasattr(device, "__enter__")
            else contextlib.nullcontext()
        )

    def launch(self, name, grid, block, args):
        self.kernels.get(name)(tuple(grid), tuple(block), tuple(args))

    def _mark(self):
        """A mark of the work launched so far: an event recorded on CuPy's current stream
        (``True`` without CuPy, where every launch has finished when it returns)."""
        if self._cupy is None:
            return True
        event = self._cupy.cuda.Event(disable_timing=True)
        event.record(self._cupy.cuda.get_current_stream())
        return event

    def _after(self, mark):
        """Make the work launched from now on wait for ``mark``; the mark to keep: ``True`` once
        the marked work has finished."""
        if mark is True or mark.done:
            return True
        self._cupy.cuda.get_current_stream().wait_event(mark)
        return mark

    @contextlib.contextmanager
    def _memory(self, what: str, estimate: int):
        """Turn a failed device allocation into ``MemoryError`` naming the sizes and the need."""
        try:
            yield
        except self._out_of_memory as exc:
            free = ""
            if self._cupy is not None:
                try:
                    free_b, total_b = self._cupy.cuda.runtime.memGetInfo()
                    free = f"; the device has {free_b / 1e9:.2f} of {total_b / 1e9:.2f} GB free"
                except Exception:  # pragma: no cover - informational only
                    pass
            raise MemoryError(
                f"GPU out of memory in {what}: it needs about {estimate / 1e9:.2f} GB{free} ({exc})"
            ) from None

    def snapshot(self, a, dtype):
        """``a`` copied as ``dtype``, its count of non-finite values and whether it is in
        ascending order, from one read of ``a`` (``laplex_snapshot``; other types than
        float32/float64 through CuPy, order not checked)."""
        xp = self.xp
        dtype, source = np.dtype(dtype), np.dtype(a.dtype)
        n = a.shape[0]
        with (
            self._on(self.device_of(a)),
            self._memory(f"a snapshot of {n} anchors ({dtype})", n * dtype.itemsize),
        ):
            if (source.name, dtype.name) not in kernels.SNAPSHOT_PAIRS:
                return snapshot_with(xp, a, dtype)
            out = xp.empty(n, dtype=dtype)
            counts = xp.zeros(2, dtype=np.uint64)  # non-finite values, descents
            if n:
                block = 256
                self.launch(
                    kernels.snapshot_name(source.name, dtype.name),
                    (min(-(-n // (4 * block)), _SNAPSHOT_BLOCKS),),
                    (block,),
                    (xp.ascontiguousarray(a), out, np.int64(n), counts),
                )
            bad, descents = counts.tolist()
            return out, bad, descents == 0

    # ---------------------------------------------------------------------- plan
    def plan(self, x, y, hint=None, ordered=(None, None)):
        m, n = x.shape[0], y.shape[0]
        item = np.dtype(x.dtype).itemsize
        # sorted copies and permutations; a radix sort's second key and index buffers and its
        # digit counts and their scan (256 each per tile of keys) in flight
        index = 4 if m + n < 2**31 else 8
        tile = kernels.radix_tile(self.geometry, np.dtype(x.dtype).name, f"int{8 * index}")
        estimate = (
            (m + n) * (item + index)
            + max(m, n) * (item + index)
            + 2 * _RADIX_DIGITS * index * -(-max(m, n) // tile)
        )
        with (
            self._on(self.device_of(x)),
            self._memory(f"the plan of {m} x {n} anchors ({x.dtype})", estimate),
        ):
            return CudaPlan(self, x, y, hint, ordered)

    def sort(self, a, hint_perm, index, ordered=None):
        """``(a[perm], perm)`` with ``perm = None`` when ``a`` is already sorted; from a previous
        order ``hint_perm`` (``_IDENTITY`` when that was the identity) repaired by window sorts
        when it is close. ``ordered``: whether ``a`` is in ascending order, when its snapshot
        found out (``None``: the first radix pass's counts tell, from the same read)."""
        if a.shape[0] < 2 or ordered:
            return a, None
        counts = None
        if ordered is None:
            counts, unsorted = self._radix_counts(a, 0, index, check_order=True)
            if not unsorted:
                return a, None
        if hint_perm is not None:
            repaired = self._repair(a, hint_perm, index)
            if repaired is not None:
                return repaired
        return self._radix_sort(a, index, counts)

    def _radix_tiles(self, keys, index) -> int:
        """Radix tiles over ``keys`` (one block each)."""
        tile = kernels.radix_tile(self.geometry, np.dtype(keys.dtype).name, index.name)
        return -(-keys.shape[0] // tile)

    def _radix_counts(self, keys, shift, index, check_order=False, counts=None):
        """The digit counts of every radix tile of ``keys`` at bit ``shift`` (digit-major), and
        with ``check_order`` whether ``keys`` is out of order (from the same read)."""
        xp = self.xp
        n = keys.shape[0]
        tiles = self._radix_tiles(keys, index)
        if counts is None:
            counts = xp.empty(_RADIX_DIGITS * tiles, dtype=index)
        flag = xp.zeros(1, dtype=np.int32) if check_order else None
        self.launch(
            kernels.radix_counts_name(np.dtype(keys.dtype).name, index.name),
            (tiles,),
            (self.geometry["LAPLEX_RADIX_BLOCK"],),
            (keys, np.int64(n), np.int32(shift), counts, _ptr(flag)),
        )
        return counts, check_order and bool(flag[0])

    def _radix_sort(self, a, index, counts=None):
        """``(a[perm], perm)`` for the stable ``perm`` (``index`` dtype) sorting ``a``: LSD radix
        sort, 8 bits a pass, the keys sorted with their permutation (no gather afterwards). A
        pass whose digit is the same for every key moves nothing and is skipped (as on the CPU);
        that takes one look at the 256 digit totals per pass. ``counts``: those of the first
        pass, when already counted."""
        xp = self.xp
        n = a.shape[0]
        if n < 2:
            return a, None
        tiles = self._radix_tiles(a, index)
        scatter = kernels.radix_scatter_name(np.dtype(a.dtype).name, index.name)
        if counts is None:
            counts, _ = self._radix_counts(a, 0, index)
        keys, perm = a, None
        spare = []  # output buffers of a pass: the input of the one before it
        for shift in range(0, 8 * a.dtype.itemsize, 8):
            if shift:
                self._radix_counts(keys, shift, index, counts=counts)
            ends = xp.cumsum(counts, dtype=index)
            digit_ends = ends[tiles - 1 :: tiles]  # where each digit's keys end in the output
            sizes = xp.concatenate((digit_ends[:1], digit_ends[1:] - digit_ends[:-1]))
            if bool(xp.any(sizes == n)):
                continue  # one digit holds every key
            out_keys, out_perm = (
                spare.pop() if spare else (xp.empty_like(a), xp.empty(n, dtype=index))
            )
            self.launch(
                scatter,
                (tiles,),
                (self.geometry["LAPLEX_RADIX_BLOCK"],),
                (keys, _ptr(perm), out_keys, out_perm, np.int64(n), np.int32(shift), ends),
            )
            if perm is not None:
                spare.append((keys, perm))
            keys, perm = out_keys, out_perm
        return keys, perm  # perm None: every key had the same digits (already in order)

    def _repair(self, a, hint_perm, index):
        """Sort ``a`` by fixing up its order ``hint_perm``: O(n) per pass, a few passes for
        anchors that moved by much less than their spacing; ``None`` when that does not finish.
        The first pass gathers ``a`` in that order as it loads its windows."""
        xp = self.xp
        n = a.shape[0]
        values = xp.empty_like(a)
        perm = xp.empty(n, dtype=index)
        source = (a, _NULL if isinstance(hint_perm, str) else hint_perm)  # str: _IDENTITY
        window = self.geometry["LAPLEX_SORT_BLOCK"] * self.geometry["LAPLEX_SORT_ITEMS"]
        real = np.dtype(a.dtype).name
        sort_windows = kernels.sort_windows_name(real, index.name)
        seams = kernels.window_seams_name(real, index.name)
        unsorted = xp.zeros(1, dtype=np.int32)
        for step in range(_REPAIR_PASSES):  # later passes load only windows with a broken seam
            offset = 0 if step % 2 == 0 else window // 2
            blocks = -(-(n - offset) // window)
            self.launch(
                sort_windows,
                (blocks,),
                (self.geometry["LAPLEX_SORT_BLOCK"],),
                (
                    values,
                    perm,
                    *(source if step == 0 else (_NULL, _NULL)),
                    np.int64(n),
                    np.int64(offset),
                ),
            )
            unsorted[...] = 0
            self.launch(
                seams,
                (-(-blocks // 256),),
                (256,),
                (values, perm, np.int64(n), np.int64(offset), unsorted),
            )
            if not int(unsorted[0]):  # every window is in order: the seams decide
                return values, perm
        return None

    # ---------------------------------------------------------------------- apply
    def apply(self, plan, side, rate, b, *, want_sum=True, want_signed=False, want_moment=False):
        xp = self.xp
        rows, cols = plan.shape if side == Side.ROWS_X or plan.shared else plan.shape[::-1]
        tiles = -(-(rows + cols) // self.tile)
        with (
            self._on(plan.device),
            self._memory(
                f"the merge splits of a {rows} x {cols} plan",
                cols + tiles * (8 + 2 * self.geometry["LAPLEX_BLOCK"]),
            ),
        ):
            s = plan.side(side)  # built on first use
        m, n, k = s.m, s.n, b.shape[1]
        real = np.dtype(np.finfo(b.dtype).dtype)
        cplx = np.result_type(real, np.complex64)
        decay = cplx if isinstance(rate, complex) else real
        value = np.result_type(b.dtype, decay)
        wants = (want_sum, want_signed, want_moment)
        agg = _map_bytes(real, decay, value)
        chunk = min(k, _MAX_GRID_Y)  # columns per launch
        staged = s.cperm is not None  # phase 1 gathers the column values once, for phase 3
        estimate = (
            sum(wants) * m * k * value.itemsize
            + 2 * s.tiles * chunk * agg
            + (m + n) * real.itemsize
            + staged * n * chunk * np.dtype(b.dtype).itemsize
        )
        with (
            self._on(plan.device),
            self._memory(
                f"a product of a {m} x {n} operator with {k} column(s) ({value.name})", estimate
            ),
        ):
            outs = [xp.empty((m, k), dtype=value) if want else None for want in wants]
            if m == 0 or k == 0:
                return tuple(outs)
            if n == 0:
                for out in outs:
                    if out is not None:
                        out[...] = 0
                return tuple(outs)
            b = xp.ascontiguousarray(b)
            rz = s.rz.astype(real, copy=False)
            cz = s.cz.astype(real, copy=False)
            rate = complex(rate)
            names = dict(real=real.name, decay=decay.name, value=value.name, moment=want_moment)
            tiles_kernel = kernels.tiles_name(
                operand=np.dtype(b.dtype).name, index=plan.index.name, **names
            )
            carries_kernel = kernels.carries_name(**names)
            fwd = xp.empty(s.tiles * chunk * agg, dtype=np.uint8)
            bwd = xp.empty_like(fwd)
            stage = xp.empty(n * chunk, dtype=b.dtype) if staged else None
            span = self.geometry["LAPLEX_CARRY_BLOCK"] * _CARRY_ITEMS  # tile maps per block
            spans = -(-s.tiles // span)
            totals = (
                (
                    xp.empty(spans * chunk * agg, dtype=np.uint8),
                    xp.empty(spans * chunk * agg, dtype=np.uint8),
                )
                if spans > 1
                else None
            )
            for j0 in range(0, k, _MAX_GRID_Y):
                kc = min(k, j0 + _MAX_GRID_Y) - j0
                known = s.rows_written is not None
                if known:
                    s.rows_written = self._after(s.rows_written)
                args = [
                    rz,
                    cz,
                    _ptr(s.rperm),
                    _ptr(s.cperm),
                    _ptr(s.splits),
                    _ptr(s.thread_rows),
                    np.int32(known),
                    np.int64(m),
                    np.int64(n),
                    np.int32(s.square),
                    real.type(rate.real),
                    real.type(rate.imag),
                    b[:, j0:],
                    np.int32(k),
                    _ptr(stage),
                    *(_ptr(None if o is None else o[:, j0:]) for o in outs),
                    fwd,
                    bwd,
                ]
                self.launch(
                    tiles_kernel,
                    (s.tiles, kc),
                    (self.geometry["LAPLEX_BLOCK"],),
                    [np.int32(1)] + args,
                )
                self._carries(carries_kernel, s.tiles, kc, span, fwd, bwd, totals)
                self.launch(
                    tiles_kernel,
                    (s.tiles, kc),
                    (self.geometry["LAPLEX_BLOCK"],),
                    [np.int32(3)] + args,
                )
                if s.thread_rows is not None and s.rows_written is None:
                    s.rows_written = self._mark()  # written by that launch
            return tuple(outs)

    def _carries(self, name, tiles, k, span, fwd, bwd, totals):
        """Phase 2 for ``k`` columns: the tile maps become the states entering the tiles. One
        block per (column, direction) up to ``span`` tiles; beyond, the totals of spans of
        ``span`` tiles, a scan of those, then every span's scan from its entering state."""
        block = (self.geometry["LAPLEX_CARRY_BLOCK"],)
        if totals is None:
            self.launch(
                name,
                (1, k, 2),
                block,
                (
                    np.int64(tiles),
                    np.int64(tiles),
                    np.int32(1),
                    np.int32(1),
                    fwd,
                    bwd,
                    _NULL,
                    _NULL,
                ),
            )
            return
        spans = -(-tiles // span)
        self.launch(
            name,
            (spans, k, 2),
            block,
            (np.int64(tiles), np.int64(span), np.int32(1), np.int32(0), fwd, bwd, *totals),
        )
        self.launch(
            name,
            (1, k, 2),
            block,
            (np.int64(spans), np.int64(spans), np.int32(0), np.int32(1), *totals, _NULL, _NULL),
        )
        self.launch(
            name,
            (spans, k, 2),
            block,
            (np.int64(tiles), np.int64(span), np.int32(1), np.int32(1), fwd, bwd, *totals),
        )


def _map_bytes(real: np.dtype, decay: np.dtype, value: np.dtype) -> int:
    """``sizeof(Agg<D, R, V>)`` of the kernels (a static_assert there holds it to this)."""
    return decay.itemsize + 3 * value.itemsize + 2 * real.itemsize


def _ptr(a):
    """A kernel argument for an optional array: the array, or a null pointer."""
    return _NULL if a is None else a


def matvec_bytes(
    m: int,
    n: int,
    k: int = 1,
    real=np.float32,
    operand=None,
    value=None,
    square: bool = False,
    row_perm: bool = False,
    col_perm: bool = False,
    outputs: int = 1,
    index=np.int32,
    tile: int | None = None,
    lean: bool | None = None,
) -> int:
    """The byte model of one ``apply`` on a built plan: bytes read and written in device memory.

    Per right-hand side, phases 1 and 3 each read the tile's anchors (``m + n`` values, ``n`` in
    square mode; a lean phase 1, ``LAPLEX_LEAN_PHASE1``, reads only the ``n`` column anchors), its
    column values (``n``) and the tile splits (phase 3 also each scan thread's first row, 2 bytes,
    found by the plan's first product); when the columns were not sorted,
    phase 1 gathers the values through ``n`` column indices and stores them in sorted order, which
    phase 3 reads. Phase 3 writes ``outputs`` results per row (scattered through ``m`` row indices,
    read once per result, when the rows were not sorted). The tile maps cost 10 passes over
    ``tiles`` maps (phase 1 writes both directions, phase 2 reads them twice and rewrites them,
    phase 3 reads them). Per-kernel halos, span totals and launch constants are left out (under
    0.1%).
    """
    real = np.dtype(real)
    operand = np.dtype(operand or real)
    value = np.dtype(value or np.result_type(operand, real))
    decay = value if value.kind == "c" else real
    index = np.dtype(index)
    block = kernels.GEOMETRY["LAPLEX_BLOCK"]
    tile = tile or block * kernels.GEOMETRY["LAPLEX_ITEMS"]
    lean = kernels.GEOMETRY["LAPLEX_LEAN_PHASE1"] if lean is None else lean
    total = n if square else m + n
    tiles = -(-total // tile)
    agg = _map_bytes(real, decay, value)
    anchors = total + (n if lean and not square else total)  # phases 1 and 3
    read = (
        anchors * real.itemsize
        + 2 * (n * operand.itemsize + (0 if square else (tiles + 1) * 8))
        + col_perm * n * index.itemsize
        + (0 if square else 2 * tiles * block)
    )
    write = (
        outputs * m * (value.itemsize + row_perm * index.itemsize) + col_perm * n * operand.itemsize
    )
    return k * (read + write + 10 * tiles * agg)
