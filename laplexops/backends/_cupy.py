"""GPU backend: CuPy arrays, the kernels of ``laplex_scan.cu`` (see there for the scan itself).

A plan (:class:`CudaPlan`) holds the sorted anchors of both sides and their permutations (int32
while m + n < 2^31, ``None`` for anchors that are already sorted), from the kernels' radix sort or
from the previous plan's order repaired by window sorts (``with_anchors``; both in
``_cupy_sort``); each orientation of it adds, on first use, the merge-path splits of its tiles. A
product (:meth:`CupyBackend.apply`) is three launches over the merged order: ``laplex_tiles``
reduces every tile to its maps, ``laplex_carries`` scans them into the states entering the tiles,
``laplex_tiles`` rescans every tile from its state and writes the rows; O(N k) work and two reads
of the tile data. ``docs/gpu-validation.md`` describes the kernels, the byte model
(``laplexops._gpu_bench.matvec_bytes``) and the sorts.

The modules of the backend:

* this one: the kernel loader (:class:`RawModuleKernels`), the plan, the products and the
  out-of-memory handling;
* ``_cupy_sort``: the radix sort and the window repair of a plan's anchors;
* ``_cuda_kernels``: the kernels' template instances, their launch geometry and the sizes the host
  shares with them (standard library only, for CI's nvcc check);
* ``laplex_scan.cu``: the kernels.

The host code is written against an array module ``xp`` and a kernel loader, so that the test
suite runs it on the CPU with NumPy arrays and the same ``.cu`` source compiled for the host
(``tests/cuda_host``); with CuPy, ``xp`` is ``cupy`` and kernels come from ``cupy.RawModule``.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from . import _cuda_kernels as cuda
from . import _cupy_gram, _cupy_sort
from ._base import Side, SortedPlan, scan_ends_with, snapshot_with

__all__ = [
    "CupyBackend",
    "CudaPlan",
    "RawModuleKernels",
    "laplex_carries_args",
    "laplex_tiles_args",
]

#: a CUDA launch's limit on grid.y: right-hand sides of one product launch (more run in chunks)
MAX_GRID_Y = 65535
#: blocks of 256 threads of a snapshot launch at most (a grid-stride loop beyond)
SNAPSHOT_BLOCKS = 8192
_CARRY_ITEMS = 8  # tile maps per thread of a carry block
_NULL = np.uintp(0)  # a kernel's null pointer argument


class RawModuleKernels:
    """Kernels compiled by NVRTC through ``cupy.RawModule``, one module per template instance,
    built on first use (CuPy caches the binaries on disk)."""

    def __init__(self, geometry: dict | None = None):
        import cupy

        self._cupy = cupy
        self._code = {}
        for path in cuda.SOURCES:
            with open(path) as fh:
                self._code[path] = fh.read()
        self.geometry = dict(geometry or cuda.GEOMETRY)
        self._options = ("-std=c++17",) + cuda.options(self.geometry)
        self._functions: dict = {}

    def get(self, name: str):
        """The kernel ``name`` (a template instance of ``_cuda_kernels``), callable as
        ``kernel(grid, block, args)``."""
        fn = self._functions.get(name)
        if fn is None:
            module = self._cupy.RawModule(
                code=self._code[cuda.source_of(name)],
                options=self._options,
                name_expressions=[name],
            )
            fn = self._functions[name] = module.get_function(name)
        return fn


class _Side:
    """One orientation of a plan: sorted rows against sorted columns, merged in tiles.

    ``rz``, ``cz``, ``rperm``, ``cperm`` and ``square`` as in the Numba backend's ``_Side``: the
    sorted row and column anchors, their permutations (``None``: already sorted), and whether the
    rows are the columns with distinct anchors (one merged item per anchor). Beyond those: ``m``
    and ``n`` (rows, columns), ``tiles`` (tiles of the merged order, one scan block each),
    ``splits`` (the rows before each tile boundary; ``None`` in square mode), ``thread_rows``
    (each scan thread's first row in its tile) and ``rows_written`` (the mark of the product that
    wrote them).
    """

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
                cuda.splits_name(real),
                (-(-count // 256),),
                (256,),
                (rz, cz, np.int64(self.m), np.int64(self.n), np.int64(self.tiles), self.splits),
            )


class CudaPlan(SortedPlan):
    """Sorted anchors of both sides (see :class:`SortedPlan`: a permutation is ``None`` when the
    anchors were already sorted) and, built on first use, each orientation's tiles.

    ``index`` is the permutations' dtype (int32 while m + n < 2^31), ``device`` the CuPy device of
    the anchors (``None`` on the host). ``hint``, a previous plan of anchors of the same shape,
    gives each side's previous order to repair; ``ordered`` is what the anchors' snapshots found
    of their order (``None``: not known).
    """

    def __init__(self, backend, x, y, hint: CudaPlan | None = None, ordered=(None, None)):
        shape, shared = (x.shape[0], y.shape[0]), y is x
        self.index = np.dtype(np.int32 if shape[0] + shape[1] < 2**31 else np.int64)
        self.device = backend.device_of(x)
        self._backend = backend
        previous = None  # the previous plan's orders, for anchors of the same shapes
        if hint is not None and hint.shape == shape and hint.index == self.index:
            previous = hint.sorted
        anchors = (x,) if shared else (x, y)
        found = [
            _cupy_sort.sort(
                backend,
                a,
                self.index,
                ordered=ordered[i],
                hinted=previous is not None,
                previous=None if previous is None else previous[i][1],
            )
            for i, a in enumerate(anchors)
        ]
        super().__init__(shape, shared, tuple(found * 2 if shared else found))
        self.gram_mirrored = _cupy_gram.Mirrored()  # the Gram's order at ties (_cupy_gram)

    def _orient(self, rz, cz, rperm, cperm) -> _Side:
        return _Side(self._backend, rz, cz, rperm, cperm, self.shared)


class CupyBackend:
    """Backend for CUDA data (CuPy arrays, and torch CUDA tensors through DLPack).

    Every parameter is keyword-only; the defaults run on a CUDA device with CuPy. The tests pass
    other ones to run this same host code without a GPU.

    Parameters
    ----------
    xp : module, optional
        The array module (``cupy`` by default); NumPy for the host build of the kernels, whose
        backend then serves host data (``device`` ``"cpu"``).
    kernels : optional
        The kernel loader, with a ``geometry`` dict (``_cuda_kernels.GEOMETRY``'s keys) and
        ``get(name)`` returning ``kernel(grid, block, args)``: :class:`RawModuleKernels` by
        default, ``tests/cuda_host``'s host build in the tests.
    out_of_memory : tuple of exception types, optional
        The errors of a failed device allocation, turned into ``MemoryError`` naming the sizes
        (CuPy's ``OutOfMemoryError`` by default).
    streams : optional
        The stream and event layer (``cupy.cuda`` by default with CuPy): ``Event(disable_timing=
        True)`` with ``record(stream)`` and ``done``, and ``get_current_stream()`` with
        ``wait_event(event)``. ``None`` without CuPy: every launch has finished when it returns.
    max_grid_y : int, optional
        Device limit: the right-hand sides of one product launch (grid.y, ``MAX_GRID_Y``); more
        run in chunks. The tests shrink it.
    snapshot_blocks : int, optional
        Device limit: the blocks of a snapshot launch (``SNAPSHOT_BLOCKS``); longer anchors take
        grid-stride rounds. The tests shrink it.
    """

    name = "cupy"

    def __init__(
        self,
        *,
        xp=None,
        kernels=None,
        out_of_memory=None,
        streams=None,
        max_grid_y: int = MAX_GRID_Y,
        snapshot_blocks: int = SNAPSHOT_BLOCKS,
    ):
        if xp is None:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy sees no CUDA device")
            xp = cupy
            kernels = kernels or RawModuleKernels()
            out_of_memory = (cupy.cuda.memory.OutOfMemoryError,)
        self.xp = xp
        self.kernels = kernels
        self._out_of_memory = tuple(out_of_memory or ())
        self._cupy = xp if xp.__name__ == "cupy" else None
        if streams is None and self._cupy is not None:
            streams = self._cupy.cuda
        self._streams = streams
        # the device kind of the data it serves: the host build (NumPy arrays) serves host data
        self.device = "cuda" if self._cupy is not None else "cpu"
        self.geometry = self.kernels.geometry
        self.tile = self.geometry["LAPLEX_BLOCK"] * self.geometry["LAPLEX_ITEMS"]
        self.max_grid_y = max_grid_y
        self.snapshot_blocks = snapshot_blocks

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
        """The CuPy device of array ``a`` (``None`` on the host)."""
        return getattr(a, "device", None) if self._cupy is not None else None

    def _on(self, device):
        """A context making ``device`` current (nothing for ``None``)."""
        return (
            device
            if device is not None and hasattr(device, "__enter__")
            else contextlib.nullcontext()
        )

    def launch(self, name, grid, block, args):
        """Launch the kernel instance ``name`` (a name of ``_cuda_kernels``) on the current
        stream."""
        self.kernels.get(name)(tuple(grid), tuple(block), tuple(args))

    def _mark(self):
        """A mark of the work launched so far: an event recorded on the current stream (``True``
        without a stream layer, where every launch has finished when it returns)."""
        if self._streams is None:
            return True
        event = self._streams.Event(disable_timing=True)
        event.record(self._streams.get_current_stream())
        return event

    def _after(self, mark):
        """Make the work launched from now on wait for ``mark``; the mark to keep: ``True`` once
        the marked work has finished."""
        if mark is True or mark.done:
            return True
        self._streams.get_current_stream().wait_event(mark)
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
        float32/float64 through the array module, order not checked)."""
        xp = self.xp
        dtype, source = np.dtype(dtype), np.dtype(a.dtype)
        n = a.shape[0]
        with (
            self._on(self.device_of(a)),
            self._memory(f"a snapshot of {n} anchors ({dtype})", n * dtype.itemsize),
        ):
            if (source.name, dtype.name) not in cuda.SNAPSHOT_PAIRS:
                return snapshot_with(xp, a, dtype)
            out = xp.empty(n, dtype=dtype)
            counts = xp.zeros(2, dtype=np.uint64)  # non-finite values, descents
            if n:
                block = 256
                self.launch(
                    cuda.snapshot_name(source.name, dtype.name),
                    (min(-(-n // (4 * block)), self.snapshot_blocks),),
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
        tile = cuda.radix_tile(self.geometry, np.dtype(x.dtype).name, f"int{8 * index}")
        estimate = (
            (m + n) * (item + index)
            + max(m, n) * (item + index)
            + 2 * _cupy_sort.RADIX_DIGITS * index * -(-max(m, n) // tile)
        )
        with (
            self._on(self.device_of(x)),
            self._memory(f"the plan of {m} x {n} anchors ({x.dtype})", estimate),
        ):
            return CudaPlan(self, x, y, hint, ordered)

    # ---------------------------------------------------------------------- apply
    def scan_ends(self, plan, side, rate, b, start, want_moment=False):
        """The end states of the scans of ``b`` (shape (n, k)) over the sorted columns ``start ..
        start + n - 1`` of ``side``'s orientation: shape (4, k), as ``NumbaBackend.scan_ends``
        (what a distributed product carries between ranges of the anchors), by direct sums
        (``scan_ends_with``). O(n k)."""
        cols = plan.sorted[1 if side == Side.ROWS_X and not plan.shared else 0][0]
        with self._on(plan.device):
            return scan_ends_with(self.xp, cols[start : start + b.shape[0]], rate, b, want_moment)

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
        agg = cuda.map_bytes(real.name, decay.name, value.name)
        chunk = min(k, self.max_grid_y)  # columns per launch
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
            tiles_kernel = cuda.tiles_name(
                operand=np.dtype(b.dtype).name, index=plan.index.name, **names
            )
            carries_kernel = cuda.carries_name(**names)
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
            block = (self.geometry["LAPLEX_BLOCK"],)
            for j0 in range(0, k, self.max_grid_y):
                kc = min(k, j0 + self.max_grid_y) - j0
                known = s.rows_written is not None
                if known:
                    s.rows_written = self._after(s.rows_written)
                # both launches of laplex_tiles take the same arguments but the phase
                tile_args = functools.partial(
                    laplex_tiles_args,
                    rz=rz,
                    cz=cz,
                    rperm=s.rperm,
                    cperm=s.cperm,
                    splits=s.splits,
                    thread_rows=s.thread_rows,
                    rows_known=known,
                    m=m,
                    n=n,
                    square=s.square,
                    s_re=rate.real,
                    s_im=rate.imag,
                    b=b[:, j0:],
                    k=k,
                    stage=stage,
                    out_sum=_columns(outs[0], j0),
                    out_signed=_columns(outs[1], j0),
                    out_moment=_columns(outs[2], j0),
                    fwd=fwd,
                    bwd=bwd,
                )
                self.launch(tiles_kernel, (s.tiles, kc), block, tile_args(cuda.PHASE_REDUCE))
                self._carries(carries_kernel, s.tiles, kc, span, fwd, bwd, totals)
                self.launch(tiles_kernel, (s.tiles, kc), block, tile_args(cuda.PHASE_WRITE))
                if s.thread_rows is not None and s.rows_written is None:
                    s.rows_written = self._mark()  # written by that launch
            return tuple(outs)

    # ---------------------------------------------------------------------- the Gram's filter
    # (see GramBackend and _cupy_gram)
    def gram_factor(self, plan, rate, weights, noise):
        if isinstance(rate, complex):
            raise NotImplementedError(
                "the phased LaplexGram (complex rate) has no CUDA kernels yet; use a real rate "
                "or host arrays (the Numba backend)"
            )
        z, perm = plan.sorted[0]
        with self._on(plan.device):
            return _cupy_gram.GramFactor(self, z, perm, rate, weights, noise, plan.gram_mirrored)

    def _gram(self, factor, what: str, k: int):
        """The device and the out-of-memory handling of a pass of the Gram's filter over k
        columns (some ten float64 arrays of shape (k, n) in flight)."""
        n = factor.n
        stack = contextlib.ExitStack()
        stack.enter_context(self._on(self.device_of(factor.z)))
        stack.enter_context(
            self._memory(f"LaplexGram.{what} (n = {n}, {k} columns)", 80 * n * (k + 1))
        )
        return stack

    def gram_quadratic(self, factor, r, mean):
        with self._gram(factor, "nll", r.shape[1]):
            return factor.innovations(factor.rows(r, mean))[2]

    def gram_solve(self, factor, b):
        with self._gram(factor, "solve", b.shape[1]):
            return factor.solve(b)

    def gram_color(self, factor, z):
        with self._gram(factor, "sample", z.shape[1]):
            return factor.color(z)

    def gram_nll_gradient(self, factor, r, mean, summed=(False, False)):
        with self._gram(factor, "nll_gradient", r.shape[1]):
            return _cupy_gram.nll_gradient(factor, r, mean, summed)

    def _carries(self, name, tiles, k, span, fwd, bwd, totals):
        """Phase 2 for ``k`` columns: the tile maps become the states entering the tiles. One
        block per (column, direction) up to ``span`` tiles; beyond, the totals of spans of
        ``span`` tiles (``totals``, one buffer per direction), a scan of those, then every span's
        scan from its entering state."""
        block = (self.geometry["LAPLEX_CARRY_BLOCK"],)
        maps = dict(fwd=fwd, bwd=bwd)
        if totals is None:
            args = laplex_carries_args(tiles, tiles, reverse=True, scan=True, **maps)
            self.launch(name, (1, k, 2), block, args)
            return
        spans = -(-tiles // span)
        fwd_totals, bwd_totals = totals
        with_totals = dict(maps, fwd_totals=fwd_totals, bwd_totals=bwd_totals)
        # each span's total; the totals scanned into the states entering the spans (they are
        # stored in each direction's own order, so that scan does not reverse); each span scanned
        # from its entering state
        args = laplex_carries_args(tiles, span, reverse=True, scan=False, **with_totals)
        self.launch(name, (spans, k, 2), block, args)
        args = laplex_carries_args(
            spans, spans, reverse=False, scan=True, fwd=fwd_totals, bwd=bwd_totals
        )
        self.launch(name, (1, k, 2), block, args)
        args = laplex_carries_args(tiles, span, reverse=True, scan=True, **with_totals)
        self.launch(name, (spans, k, 2), block, args)


def laplex_tiles_args(
    phase,
    rz,
    cz,
    rperm,
    cperm,
    splits,
    thread_rows,
    rows_known,
    m,
    n,
    square,
    s_re,
    s_im,
    b,
    k,
    stage,
    out_sum,
    out_signed,
    out_moment,
    fwd,
    bwd,
) -> tuple:
    """The arguments of ``laplex_tiles`` (``laplex_scan.cu``), one per C parameter in its order,
    as its C types (``R`` the anchors' real type; an optional array ``None``: a null pointer).

    ``phase`` (int)
        ``PHASE_REDUCE`` (each tile to its forward and backward map) or ``PHASE_WRITE`` (each
        tile rescanned from the state entering it, its rows' reductions written).
    ``rz``, ``cz`` (const R*)
        The side's sorted row and column anchors.
    ``rperm``, ``cperm`` (const I*, optional)
        Their permutations (``None``: in order already).
    ``splits`` (const long long*, optional)
        The rows before each tile boundary (``None`` in square mode).
    ``thread_rows`` (unsigned short*, optional)
        Each scan thread's first row in its tile.
    ``rows_known`` (int)
        Whether ``thread_rows`` holds them already (else the launch searches and writes them).
    ``m``, ``n`` (long long)
        Rows and columns.
    ``square`` (int)
        Whether the rows are the columns, with distinct anchors (one item per anchor).
    ``s_re``, ``s_im`` (R)
        The rate.
    ``b`` (const B*)
        The operand, row-major with ``k`` columns, from the launch's first column (grid.y).
    ``k`` (int)
        The operand's and the results' row stride.
    ``stage`` (B*, optional)
        The column values in sorted order, ``n`` per launch column: written in phase 1, read in
        phase 3 (when the columns have a permutation).
    ``out_sum``, ``out_signed``, ``out_moment`` (V*, optional)
        The wanted results, row-major with ``k`` columns, from the launch's first column.
    ``fwd``, ``bwd`` (Agg*)
        The tile maps of each (launch column, tile): written in phase 1, turned into the states
        entering the tiles by ``laplex_carries``, read in phase 3.
    """
    real = np.dtype(rz.dtype).type
    return (
        np.int32(phase),
        rz,
        cz,
        _ptr(rperm),
        _ptr(cperm),
        _ptr(splits),
        _ptr(thread_rows),
        np.int32(rows_known),
        np.int64(m),
        np.int64(n),
        np.int32(square),
        real(s_re),
        real(s_im),
        b,
        np.int32(k),
        _ptr(stage),
        _ptr(out_sum),
        _ptr(out_signed),
        _ptr(out_moment),
        fwd,
        bwd,
    )


def laplex_carries_args(
    count, span, reverse, scan, fwd, bwd, fwd_totals=None, bwd_totals=None
) -> tuple:
    """The arguments of ``laplex_carries`` (``laplex_scan.cu``, phase 2), one per C parameter in
    its order, as its C types (an optional array ``None``: a null pointer).

    ``count`` (long long)
        Maps per (column, direction).
    ``span`` (long long)
        Maps per block (grid.x blocks cover ``count``).
    ``reverse`` (int)
        Whether the backward direction composes its maps from the last one.
    ``scan`` (int)
        0: each block writes the composition of its maps to its total; 1: each block replaces its
        maps by the states entering them, from its total (when given) or from zero.
    ``fwd``, ``bwd`` (Agg*)
        The maps of both directions, in place.
    ``fwd_totals``, ``bwd_totals`` (Agg*, optional)
        Each block's total per direction.
    """
    return (
        np.int64(count),
        np.int64(span),
        np.int32(reverse),
        np.int32(scan),
        fwd,
        bwd,
        _ptr(fwd_totals),
        _ptr(bwd_totals),
    )


def _columns(out, j0):
    """The columns of result ``out`` from ``j0`` on (``None`` for a result not wanted)."""
    return None if out is None else out[:, j0:]


def _ptr(a):
    """A kernel argument for an optional array: the array, or a null pointer."""
    return _NULL if a is None else a
