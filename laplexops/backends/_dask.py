"""The Dask backend: the exact operator on Dask arrays, range-partitioned over the merged anchors.

**Plan.** Splitters (quantiles of a seeded sample of every chunk of both sides, made unique)
cut the real line into P ranges ``[div_p, div_{p+1})``; a run of tied anchors never straddles
two of them. One pass over the chunks finds each range's count and least and greatest anchor
per side (``_numba_ranges``), so each partition knows its neighbours before it is built. One
shuffle (a counting sort in a single task up to ``GATHER_BYTES``, else ``dask.dataframe``'s
``set_index`` with those divisions, peer to peer on a ``distributed`` cluster) brings each
range's anchors to one task, which sorts them (ties by original index), extends them by the
neighbours (``_Part.extend``) and builds a single-machine plan of its rows and columns (the
*local* backend: Numba for NumPy chunks, CuPy for CuPy chunks; the bookkeeping before it runs on
the host). The partitions stay on the workers (persisted).

**Products.** Partition ``p``'s rows see every column of the partitions left of it at
distances ``x - c > 0``, so those columns reach them through one *carry*: with ``z`` the
rightmost such column,

    A = sum_c exp(-s (z - c)) b_c,        M = sum_c (z - c) exp(-s (z - c)) b_c

give the left sums ``exp(-s (x - z)) A`` and first moments ``exp(-s (x - z)) (M + (x - z) A)``.
Carries compose left to right as ``(z, A, M) + (z', A', M') = (z', e A + A', e (M + (z' - z) A)
+ M')``, ``e = exp(-s (z' - z))`` (every factor of modulus at most 1: no overflow), and mirrored
from the right. A product is one task per partition for its summary (the end states of its
columns' scans, ``scan_ends``), one task folding the P summaries both ways, and one task per
partition for the local scan, in which the incoming carries enter as values of virtual columns
at the neighbouring partitions' nearest columns: 2 P + 1 tasks, O(N k) work, O(P k) data between
partitions.

**Layouts.** Operands arrive in the caller's order; routing them into plan order (partition by
partition) and the results back moves each value once each way: one task through a cache-blocked
route of the plan's permutation (``_numba_route``, built once per plan and side) up to
``GATHER_BYTES``, else a shuffle (``set_index`` on the destination position, found once per plan
and side). :func:`laplexops.dask.to_plan_order` and its inverse let an iterative method pay those
moves once.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from typing import Any

import numpy as np

from ._base import Side

__all__ = ["DaskBackend", "DaskPlan"]

#: data moved by one routing or plan (values and indices, bytes) up to which it goes through one
#: task (gathered, moved, split again: O(chunks + partitions) small tasks; that task's worker
#: holds about four times this much at its peak); larger data goes through ``dask.dataframe``'s
#: shuffle (peer to peer on a ``distributed`` cluster), which moves rows at about a microsecond
#: each on two workers, twenty times as long
GATHER_BYTES = 1 << 29

#: the most anchors (both sides) in a partition by default: with its local plan and a product's
#: blocks about 70 bytes each, about a gigabyte
PART_ANCHORS = 1 << 24

#: the least sample of anchors from which the splitters are drawn (a few per cent of balance
#: between partitions when they are few)
MIN_SAMPLE = 4096


def _local_backend(local, kind: str):
    """The single-machine backend of the partitions: ``local`` (a registered name or a backend
    instance) for chunks of device kind ``kind`` (``"cpu"``: NumPy, ``"cuda"``: CuPy)."""
    from . import get_backend

    return get_backend(local, kind)


def _chunk_kind(a) -> str:
    """``"cpu"`` for a Dask array of NumPy chunks, ``"cuda"`` for CuPy chunks (TypeError else)."""
    meta = getattr(a, "_meta", None)
    if type(meta) is np.ndarray:
        return "cpu"
    if type(meta).__module__.split(".")[0] == "cupy":
        return "cuda"
    raise TypeError(
        "the dask backend runs Dask arrays of NumPy or CuPy chunks; got chunks of "
        f"{type(meta).__name__}"
    )


def _to_host(block) -> np.ndarray:
    """A chunk as a NumPy array (CuPy chunks copied from the device; NumPy ones as they are)."""
    return block if isinstance(block, np.ndarray) else block.get()


class _Part:
    """One range of the merged anchors: its rows' and columns' sorted values with their original
    indices (``xs = x[xi]``, ``ys = y[yi]``; one set when the operator is square), and the
    local single-machine plan, built on the worker on first use (never shipped).

    The local plan runs on each side's anchors *extended* by a few virtual ones (see
    :meth:`extend`): the nearest anchors of that side in the partitions left and right of this
    one, the columns through which a product's carries enter its local scan (``_local``)."""

    def __init__(self, xs, xi, ys, yi, shared, local=("numba", "cpu")):
        self.xs, self.xi, self.ys, self.yi = xs, xi, ys, yi
        self.shared = shared
        self.local = local  # (name or backend instance, device kind) of the local backend
        self._plan = None
        self._scratch = None
        self.ext: dict[Side, Any] = {}
        self.index = -1  # the partition's place in the plan, set with ``ext``
        self.token = uuid.uuid4().hex

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plan"] = state["_scratch"] = None
        return state

    def backend(self):
        """The local single-machine backend (Numba for NumPy chunks, CuPy for CuPy chunks)."""
        return _local_backend(*self.local)

    def anchors(self, side: Side):
        """The sorted values and original indices of ``side``'s anchors."""
        return (self.xs, self.xi) if side == Side.ROWS_X else (self.ys, self.yi)

    def extend(self, neighbours: np.ndarray) -> None:
        """Add the virtual anchors: ``neighbours`` is ``[xl, xr, yl, yr]``, each side's nearest
        anchor left and right of this partition (nan: none), which lie outside its range. For
        each side ``ext[side]`` is ``(values, offset, (left, right))``: the sorted values with
        the neighbours at their ends, where the real ones start, and the positions of the left
        and right neighbour (-1: none)."""
        for side in (Side.ROWS_X, Side.ROWS_Y):
            values = self.anchors(side)[0]
            low, high = neighbours[0:2] if side == Side.ROWS_X else neighbours[2:4]
            left, right = not math.isnan(low), not math.isnan(high)
            merged = np.concatenate(
                [[low] if left else [], values, [high] if right else []]
            ).astype(values.dtype)
            offset = int(left)
            slots = (0 if left else -1, offset + values.shape[0] if right else -1)
            self.ext[side] = (merged, offset, slots)
        self._plan = None

    def plan(self):
        if self._plan is None:
            local = self.backend()
            xe, ye = (local.asarray(self.ext[side][0]) for side in (Side.ROWS_X, Side.ROWS_Y))
            self._plan = local.plan(xe, ye, None, (True, True))
        return self._plan

    def scratch(self, shape, dtype):
        """An array of ``shape`` and ``dtype`` kept between calls (as the local plan keeps its
        scans' scratch): on a Dask worker, whose allocator hands large arrays back to the
        system when freed, a fresh one costs page faults that take as long as the scan."""
        if self._scratch is None:
            from ._numba import _Scratch

            self._scratch = _Scratch()
        return self._scratch(((tuple(shape), np.dtype(dtype)),))


def _build_part(z, i, m: int, neighbours, shared: bool, dtype: str, by_index: bool, local):
    """One range's anchors as a ``_Part`` in a one-element object array (a block of the plan's
    array of partitions): ``z``, ``i`` its values and original indices, the first ``m`` of
    them rows (x), the rest columns (y); each side sorted, ties by original index (``by_index``:
    each side's anchors already come in that order), extended by ``neighbours`` (a row of
    :func:`_neighbours` with the partition's place last), and its local plan built by the
    backend ``local`` (``(name or instance, device kind)``)."""
    from . import _numba_sort

    i = i.astype(np.int64)
    sides = [(z[:m], i[:m])] if shared else [(z[:m], i[:m]), (z[m:], i[m:])]
    ordered = []
    for values, index in sides:
        if not by_index:
            first = np.argsort(index, kind="stable")
            values, index = values[first], index[first]
        values = values.astype(dtype)
        if values.shape[0] > 1:
            perm, values = _numba_sort.argsort(values, with_values=True)
            index = index[perm]
        ordered.append((values, index))
    if shared:
        ordered.append(ordered[0])
    (xs, xi), (ys, yi) = ordered
    part = _Part(xs, xi, ys, yi, shared, local)
    part.extend(np.asarray(neighbours[0, :4], dtype=np.float64))
    part.index = int(neighbours[0, 4])
    part.plan()
    out = np.empty(1, dtype=object).view(_PartBlock)
    out[0] = part
    return out


class _PartBlock(np.ndarray):
    """A block of the plan's array of partitions: a one-element object array holding a
    ``_Part``, whose size Dask's scheduler sees (``sizeof``), so that it moves the operands to
    the partitions rather than the partitions, with their local plans, to the operands."""


#: bytes per anchor of a built local plan (sorted copies, merge counts, decays), as the
#: scheduler should weigh a partition
_LOCAL_PLAN_BYTES = 40


def _part_size(block) -> int:
    part = block[0]
    arrays = (part.xs, part.xi) if part.shared else (part.xs, part.xi, part.ys, part.yi)
    anchors = part.xs.shape[0] + (0 if part.shared else part.ys.shape[0])
    return int(sum(a.nbytes for a in arrays) + _LOCAL_PLAN_BYTES * anchors)


def _block_token(block) -> str:
    """A partition's token for Dask's graph hashing: the one the partition was given when made
    (a persisted block sits in the graph as a value under a local scheduler, and
    ``dask.dataframe`` hashes graphs deterministically)."""
    return block[0].token


try:  # on the workers too, which import this module to unpickle the partitions
    from dask.base import normalize_token as _normalize_token
    from dask.sizeof import sizeof as _sizeof
except ImportError:  # pragma: no cover - the backend then cannot be built
    pass
else:
    _sizeof.register(_PartBlock)(_part_size)
    _normalize_token.register(_PartBlock)(_block_token)


def _part_from_frame(frame, neighbours, shared: bool, dtype: str, local) -> np.ndarray:
    """:func:`_build_part` of a partition of the anchors' shuffle (index ``z``, columns ``i``
    and ``s``: 0 for x, 1 for y)."""
    z = frame.index.to_numpy(dtype=np.float64)
    i = frame["i"].to_numpy(dtype=np.float64)
    rows = frame["s"].to_numpy() == 0
    m = int(rows.sum())
    z = np.concatenate([z[rows], z[~rows]])
    i = np.concatenate([i[rows], i[~rows]])
    return _build_part(z, i, m, neighbours, shared, dtype, False, local)


def _build_parts(blocks: list, counts, neighbours, shared: bool, dtype: str, local) -> list:
    """:func:`_part_from_rows` of a run of partitions (rows ``i`` of ``counts`` and
    ``neighbours`` for ``blocks[i]``), in one task."""
    return [
        _part_from_rows(zi, counts[i : i + 1], neighbours[i : i + 1], shared, dtype, local)
        for i, zi in enumerate(blocks)
    ]


def _pick(built: list, j: int, rows) -> np.ndarray:
    """Partition ``j`` of a run that :func:`_build_parts` built. ``rows`` (the partition's
    rows, already on that worker) is a dependency only: without it Dask would take these tasks
    for root tasks (many tasks on few dependencies) and place them wherever a thread is free,
    moving the whole run there."""
    return built[j]


def _part_from_rows(zi, counts, neighbours, shared: bool, dtype: str, local) -> np.ndarray:
    """:func:`_build_part` of one range's rows ``[z, i]`` of the single-task shuffle
    (:func:`_bucketed`), its x anchors first, each side in original order."""
    m = int(counts[0, 0])
    return _build_part(zi[:, 0], zi[:, 1], m, neighbours, shared, dtype, True, local)


def _range_of(z: np.ndarray, splitters: np.ndarray) -> np.ndarray:
    """The range ``p`` with ``div_p <= z < div_{p+1}`` of each value (``set_index``'s rule)."""
    return np.searchsorted(splitters, z, side="right")


def _chunk_stats(z: np.ndarray, splitters: np.ndarray) -> np.ndarray:
    """Per range, the number of ``z``'s values in it, their least and greatest (``inf``,
    ``-inf``: none), in one row: ``[counts (P), least (P), greatest (P)]``. O(n log P)."""
    from ._numba_ranges import range_stats

    z = np.ascontiguousarray(z, dtype=np.float64)
    P = splitters.shape[0] + 1
    counts = np.zeros(P, dtype=np.int64)
    least, greatest = np.full(P, np.inf), np.full(P, -np.inf)
    range_stats(z, splitters, np.empty(z.shape[0], np.int32), counts, least, greatest)
    return np.concatenate([counts, least, greatest])[None, :]


def _combine_stats(parts: list) -> np.ndarray:
    """Rows of :func:`_chunk_stats` (or of this) combined: counts added, least and greatest
    taken."""
    rows = np.concatenate(parts)
    P = rows.shape[1] // 3
    out = np.empty((1, 3 * P))
    out[0, :P] = rows[:, :P].sum(0)
    out[0, P : 2 * P] = rows[:, P : 2 * P].min(0)
    out[0, 2 * P :] = rows[:, 2 * P :].max(0)
    return out


#: rows a task of the statistics' tree combines
_TREE_WIDTH = 32


def _combined(da, per):
    """:func:`_combine_stats` of all rows of ``per`` (one row per block) as a one-block Dask
    array: a tree of tasks, each on up to ``_TREE_WIDTH`` rows (no slicing or concatenation
    tasks)."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    token = tokenize(per.name)
    keys = [(per.name, i, 0) for i in range(per.numblocks[0])]
    layer: dict[Any, Any] = {}
    level = 0
    while True:
        name = f"laplex-stats-{level}-{token}"
        groups = [keys[j : j + _TREE_WIDTH] for j in range(0, len(keys), _TREE_WIDTH)]
        keys = [(name, g, 0) for g in range(len(groups))]
        layer.update({key: (_combine_stats, group) for key, group in zip(keys, groups)})
        if len(keys) == 1:
            break
        level += 1
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[per])
    return da.Array(graph, name, ((1,), (per.shape[1],)), dtype=np.float64)


def _bucketed(splitters: np.ndarray, xs: list, ys: list) -> np.ndarray:
    """All anchors' rows ``[z, i]`` (value, original index) grouped by range, in each range the
    x anchors before the y ones and each side in original order (a stable counting sort on
    range and side): the single-task shuffle. ``xs``, ``ys``: the chunks of each side (``ys``
    empty when shared). O(N log P)."""
    from ._numba_ranges import range_stats, scatter_by_range

    P = splitters.shape[0] + 1
    counts = np.zeros((2, P), dtype=np.int64)
    sides = []
    for flag, chunks in enumerate((xs, ys)):
        found = []
        for c in chunks:
            c = np.ascontiguousarray(c, dtype=np.float64)
            ranges = np.empty(c.shape[0], np.int32)
            range_stats(c, splitters, ranges, counts[flag], np.full(P, np.inf), np.full(P, -np.inf))
            found.append((c, ranges))
        sides.append(found)
    # range-major, x before y within a range
    starts = (np.cumsum(counts.T.reshape(-1)) - counts.T.reshape(-1)).reshape(P, 2)
    out = np.empty((int(counts.sum()), 2))
    for flag, found in enumerate(sides):
        next_slot, first = starts[:, flag].copy(), 0
        for c, ranges in found:
            scatter_by_range(c, ranges, first, next_slot, out)
            first += c.shape[0]
    return out


def _neighbours(bounds: np.ndarray) -> np.ndarray:
    """Per partition ``[xl, xr, yl, yr]``: each side's greatest anchor in the partitions left of
    it and least anchor in those right of it (nan: none), from the ranges' bounds (rows ``[m_p,
    n_p, least x, greatest x, least y, greatest y]``)."""
    out = np.full((bounds.shape[0], 4), np.nan)
    for j, (least, greatest) in enumerate(((2, 3), (4, 5))):
        out[1:, 2 * j] = np.fmax.accumulate(bounds[:-1, greatest])
        out[:-1, 2 * j + 1] = np.fmin.accumulate(bounds[:0:-1, least])[::-1]
    return out


def _part_indices(block: np.ndarray, side: Side) -> np.ndarray:
    return block[0].anchors(side)[1]


def _sample(block: np.ndarray, size: int, seed: int, block_id=None) -> np.ndarray:
    """Up to ``size`` values of an anchors' chunk, drawn without replacement from a generator
    seeded by ``seed`` and the chunk's position (the same sample on every run)."""
    rng = np.random.default_rng([seed, block_id[0]])
    take = min(size, block.shape[0])
    return rng.choice(np.asarray(block, dtype=np.float64), take, replace=False)


def _scan(part, side: Side, rate, b_ext, wants):
    """The local plan's reductions ``wants`` of ``b_ext`` (the extended columns) onto the
    extended rows of ``side``."""
    want_sum, want_signed, want_moment = wants
    return part.backend().apply(
        part.plan(),
        side,
        rate,
        b_ext,
        want_sum=want_sum,
        want_signed=want_signed,
        want_moment=want_moment,
    )


def _summary(parts, b, side: Side, rate, k: int, want_moment: bool) -> np.ndarray:
    """A partition's carry summaries for the columns of ``side``'s plan (row ``[zmax, zmin, A,
    M, B, N]``, each of the four ``k`` wide; ``nan`` z where the partition has no columns):
    ``A``, ``M`` the left carry at its rightmost column, ``B``, ``N`` the right one at its
    leftmost (module docstring): the end states of the scans of its columns. Complex128 or
    float64."""
    part, b = parts[0], _whole(b)
    cols = part.anchors(side.other)[0]
    dtype = np.result_type(b.dtype, np.float64, np.complex128 if isinstance(rate, complex) else 0.0)
    out = np.zeros((1, 2 + 4 * k), dtype=dtype)
    if cols.shape[0] == 0:
        out[0, :2] = np.nan
        return out
    offset = part.ext[side.other][1]
    ends = part.backend().scan_ends(part.plan(), side, rate, b, offset, want_moment)
    out[0, 0], out[0, 1] = cols[-1], cols[0]
    out[0, 2:] = _to_host(ends).reshape(-1)  # A, M, B, N
    return out


def _fold(rows: list, rate, k: int) -> np.ndarray:
    """The carries entering each partition, from all partitions' summaries (one row each): row
    ``p`` is
    ``[zl, zr, A, M, B, N]``, the left state (``zl``; nan: none) from the partitions before
    ``p`` and the right one (``zr``) from those after it. O(P k), serial."""
    summaries = np.concatenate(rows)
    P = summaries.shape[0]
    out = np.zeros_like(summaries)
    for flank, order in ((0, range(P)), (1, range(P - 1, -1, -1))):
        at = 2 + 2 * k * flank
        z, a, mom = math.nan, np.zeros(k, summaries.dtype), np.zeros(k, summaries.dtype)
        for p in order:
            out[p, flank], out[p, at : at + k], out[p, at + k : at + 2 * k] = z, a, mom
            zp = summaries[p, flank].real
            if math.isnan(zp):
                continue
            own, own_moment = summaries[p, at : at + k], summaries[p, at + k : at + 2 * k]
            if math.isnan(z):
                a, mom = own.copy(), own_moment.copy()
            else:  # (z, a, mom) moved to zp (|zp - z| either way), plus the partition's own
                gap = abs(zp - z)
                e = np.exp(-rate * gap)
                a, mom = e * a + own, e * (mom + gap * a) + own_moment
            z = zp
    return out


def _local(parts, b, carries, side: Side, rate, k: int, wants: tuple, dtype) -> np.ndarray:
    """A partition's reductions (``wants``: sum, signed, moment) onto its rows, side by side in
    one block of shape ``(m_p, k * sum(wants))``: one scan of its own columns plus the incoming
    carries (its row of ``carries``, from :func:`_fold`), which enter as the virtual columns at
    the neighbours. A carry's first moment ``M`` at ``z`` adds ``exp(-s |x - z|) M`` to a row's
    moment, which is added row by row after the scan (:func:`_carried_moments`). O(m_p k)."""
    part, b, carries = parts[0], _whole(b), _whole(carries)
    m = part.anchors(side)[0].shape[0]
    want_sum, want_signed, want_moment = wants
    row_offset = part.ext[side][1]
    columns, offset, flanks = part.ext[side.other]
    carry = carries[part.index]
    local = part.backend()
    xp = local.xp
    if not (columns.shape[0] and m):
        return xp.zeros((m, k * sum(wants)), dtype=dtype)
    real = np.finfo(dtype).dtype
    operand = np.result_type(b.dtype, carry.dtype, real)
    with _operand(part, local, (columns.shape[0], k), operand) as b_ext:
        b_ext[offset : offset + b.shape[0]] = b
        for flank, slot in enumerate(flanks):
            if slot >= 0:
                at = 2 + 2 * k * flank
                known = not math.isnan(carry[flank].real)
                b_ext[slot] = xp.asarray(carry[at : at + k]) if known else 0
        sums, signed, moments = _scan(part, side, rate, b_ext, wants)
    rows = slice(row_offset, row_offset + m)
    results = []
    if want_sum:
        results.append(sums[rows])
    if want_signed:
        results.append(signed[rows])
    if want_moment:
        x = part.plan().sorted[0 if side == Side.ROWS_X else 1][0][rows]
        results.append(moments[rows] + _carried_moments(xp, x, rate, carry, k))
    if len(results) == 1:
        return results[0].astype(dtype, copy=False)
    return xp.concatenate(results, axis=1).astype(dtype, copy=False)


def _local_frame(parts, b, carries, side: Side, rate, k: int, wants: tuple, dtype):
    """:func:`_local`'s block (one reduction) as a frame partition keyed by its rows' original
    indices (:func:`_frame`): a result routed out of plan order through the shuffle then costs
    one task per partition here, where a separate frame would cost two (Dask fuses a task with
    two dependencies into the shuffle's first task or not, depending on the graph's order)."""
    return _frame(parts[0].anchors(side)[1], _local(parts, b, carries, side, rate, k, wants, dtype))


def _carried_moments(xp, rows, rate, carry, k: int):
    """What the incoming carries' first moments add to the moments of the sorted ``rows``:
    ``exp(-s (x - zl)) M + exp(-s (zr - x)) N`` (``carry`` is ``[zl, zr, A, M, B, N]``, nan z:
    none), each distance non-negative (the neighbours lie outside the partition's range), shape
    (m, k). O(m k)."""
    real = rows.dtype if rows.dtype.kind == "f" else np.dtype(np.float64)
    out = 0
    for flank in (0, 1):
        z = carry[flank].real
        if math.isnan(z):
            continue
        at = 2 + 2 * k * flank + k
        distance = rows - real.type(z) if flank == 0 else real.type(z) - rows
        moment = xp.asarray(carry[at : at + k])
        out = out + xp.exp(-rate * distance)[:, None] * moment[None, :]
    return out


@contextlib.contextmanager
def _operand(part, local, shape, dtype):
    """The local scan's operand of ``shape`` and ``dtype``: the partition's kept scratch for the
    Numba backend (see :meth:`_Part.scratch`), else a new array of the local backend's."""
    if local.name == "numba":
        with part.scratch(shape, dtype) as (b_ext,):
            yield b_ext
    else:
        yield local.xp.empty(shape, dtype=dtype)


def _folded(da, summaries, rate, k: int):
    """:func:`_fold` of all partitions' summaries (a Dask array of P one-row blocks) as a
    one-block Dask array: a single task on the P summaries, no concatenation tasks."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "laplex-fold-" + tokenize(summaries.name, rate, k)
    keys = [(summaries.name, p, 0) for p in range(summaries.numblocks[0])]
    layer: dict[Any, Any] = {(name, 0, 0): (_fold, keys, rate, k)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[summaries])
    chunks = ((summaries.shape[0],), (summaries.shape[1],))
    return da.Array(graph, name, chunks, dtype=summaries.dtype, meta=summaries._meta)


def _route(da, dd, frames, k: int, dtype, lengths):
    """The rows of ``frames`` (a Dask array of one block per chunk, each a frame partition made
    by :func:`_frame`: column ``key``, a permutation of ``0 .. N-1`` over all blocks, beside the
    values) ordered by their keys and cut into blocks of ``lengths``: one shuffle (smaller moves
    go through the plan's route instead). The partitions go into ``dask.dataframe`` as they are
    (no conversion from an array, whose tasks Dask fuses or not depending on the graph's order),
    so each chunk costs its own task and the shuffle's. Returns a Dask array of ``k`` columns
    of ``dtype`` (complex: from its real and imaginary columns) with row chunks ``lengths``
    (zero-length chunks allowed)."""
    lengths = [int(n) for n in lengths]
    full = [i for i, n in enumerate(lengths) if n]
    if not full:
        return da.zeros((0, k), dtype=dtype, chunks=(tuple(lengths), (k,)))
    complex_ = np.dtype(dtype).kind == "c"
    frame = _as_frame(dd, [frames], _frame(np.empty(0, np.int64), np.empty((0, k), dtype)))
    starts = np.cumsum([0, *lengths])
    cuts = [int(starts[i]) for i in full] + [int(starts[-1] - 1)]
    moved = frame.set_index("key", divisions=cuts, sorted=False)
    dense = _holding(da, moved.to_dask_array(lengths=[lengths[i] for i in full]), frames)
    if complex_:
        dense = dense.map_blocks(
            lambda b: b[:, :k] + 1j * b[:, k:], chunks=(dense.chunks[0], (k,)), dtype=np.complex128
        )
    dense = dense.astype(dtype)
    if len(full) == len(lengths):
        return dense
    return _with_empty_blocks(da, dense, lengths)


#: the ``meta`` of Dask arrays of object blocks
_OBJECTS = np.empty(0, object)


def _as_frame(dd, arrays: list, meta):
    """One ``dask.dataframe`` frame of the blocks of ``arrays`` (Dask arrays of object blocks,
    each block's task making a frame partition like ``meta``), in order, divisions unknown: the
    tasks as they are, with no conversion task per partition."""
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import ensure_dict

    graph = ensure_dict(HighLevelGraph.merge(*(a.__dask_graph__() for a in arrays)))
    keys = [key for a in arrays for key in flatten(a.__dask_keys__())]
    return dd.from_graph(graph, meta, (None,) * (len(keys) + 1), keys, "laplex-frame")


def _anchor_frame(block, starts, side: int, block_id=None):
    """A frame partition of the plan's shuffle: a chunk of one side's anchors (column ``z``),
    their original indices (``i``) and the side (``s``: 0 for x, 1 for y), in float64."""
    import pandas as pd

    j = 0 if block_id is None else block_id[0]
    index = np.arange(starts[j], starts[j + 1], dtype=np.float64)
    z = np.asarray(_to_host(block), dtype=np.float64)
    return pd.DataFrame({"z": z, "i": index, "s": np.full(z.shape[0], float(side))})


def _frame(keys, values):
    """A frame partition for :func:`_route`: ``keys`` (integers: each row's place in the
    shuffle's output) as column ``key`` beside the columns of ``values`` (a 2-D block, copied to
    the host; complex values as their real parts, then their imaginary parts: the shuffle's
    frames have no complex dtype; as a blockwise task's argument, the blocks Dask passes, see
    :func:`_whole`), in float64 or float32."""
    import pandas as pd

    values = _to_host(_whole(values))
    parts = [values.real, values.imag] if values.dtype.kind == "c" else [values]
    columns = {"key": _to_host(keys).astype(np.int64, copy=False)}
    for part in parts:
        for j in range(part.shape[1]):
            columns[f"c{len(columns) - 1}"] = part[:, j]
    return pd.DataFrame(columns)


def _frames(da, keys, values):
    """:func:`_frame` of each chunk of ``keys`` (1-D) and ``values`` (rows chunked alike), as a
    Dask array of one object block per chunk (its graph is what :func:`_route` takes; each
    block's value is the frame)."""
    if values.numblocks[1] != 1:
        values = values.rechunk({1: -1})
    return da.blockwise(
        _frame,
        "i",
        keys,
        "i",
        values,
        "ij",
        dtype=object,
        meta=_OBJECTS,
    )


def _whole(blocks):
    """The block of a blockwise argument along an index that the output lacks: Dask passes the
    blocks along such an index as a list (one level per index); a single block comes as it is
    (``concatenate=True`` would copy it, a copy of every operand block in every task), several
    are joined."""
    inner = blocks
    while isinstance(inner, list) and len(inner) == 1:
        inner = inner[0]
    if not isinstance(inner, list):
        return inner
    from dask.array.core import concatenate3

    return concatenate3(blocks)


class _RouterBlock(np.ndarray):
    """A one-element object array holding a ``Route``; its size (``sizeof``) makes Dask run
    the routing tasks where it is rather than move it. ``token``: its name in Dask's graph
    hashing (see :func:`_block_token`)."""

    token: str = ""
    scratch: Any = None  # the moves' scratch (``_move``), made on the route's worker


class _IndexRoute:
    """A permutation ``perm`` (plan position -> caller position) held by a local backend other
    than Numba (CuPy: on the device), applied by indexing."""

    def __init__(self, xp, perm):
        self.xp, self.perm = xp, perm
        self.nbytes = int(perm.nbytes)

    def moved(self, a, inward: bool):
        """``a[perm]`` (``inward``), else ``out`` with ``out[perm] = a``. O(m k)."""
        if inward:
            return a[self.perm]
        out = self.xp.empty_like(a)
        out[self.perm] = a
        return out


def _route_bytes(block) -> int:
    return int(block[0].nbytes)  # a Route's or an _IndexRoute's


try:
    _sizeof.register(_RouterBlock)(_route_bytes)
    _normalize_token.register(_RouterBlock)(lambda block: block.token or str(id(block)))
except NameError:  # pragma: no cover - no dask.sizeof: the backend cannot be built
    pass


def _make_router(origin: list, local, length: int | None = None) -> np.ndarray:
    """The map ``origin`` (plan position -> caller position; the partitions' in turn) ready to
    move operands of the local backend ``local`` (``(name or instance, device kind)``), as a
    block of a Dask array: a cache-blocked ``Route`` for the Numba backend, else the indices in
    the local backend's arrays (:class:`_IndexRoute`). With ``length`` (the operand's rows),
    ``origin`` may be one worker's part of the plan's permutation: the route then gathers that
    worker's rows only. O(N)."""
    perm = np.concatenate(origin) if origin else np.empty(0, np.int64)
    backend = _local_backend(*local)
    out = np.empty(1, dtype=object).view(_RouterBlock)
    out.token = uuid.uuid4().hex
    if backend.name == "numba":
        from ._numba_route import Route

        out[0] = Route(perm, length)
    else:
        out[0] = _IndexRoute(backend.xp, backend.asarray(perm))
    return out


#: the most groups of partitions (workers) for which an operand moves into plan order through
#: one gather per group (each worker receiving the whole operand) rather than one route
GROUP_GATHERS = 3


def _gathers(a) -> bool:
    """Whether routing ``a`` goes through one task (up to ``GATHER_BYTES`` with its keys)."""
    return _gathers_rows(a.shape[0], a.shape[1], a.dtype)


def _gathers_rows(rows: int, k: int, dtype) -> bool:
    """:func:`_gathers` of an array of ``rows`` rows of ``k`` values of ``dtype``."""
    return (np.dtype(dtype).itemsize + 8) * rows * max(k, 1) <= GATHER_BYTES


def _routed(da, router, a, inward: bool):
    """``a`` (rows chunked any way) moved through ``router``'s route as one block: into plan
    order (``inward``: ``out[r] = a[origin[r]]``), else back out (``out[origin[r]] = a[r]``).
    One task, on the route's worker."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    a = a.rechunk({1: -1})
    name = "laplex-routed-" + tokenize(router.name, a.name, inward)
    keys = [(a.name, j, 0) for j in range(a.numblocks[0])]
    layer: dict[Any, Any] = {(name, 0, 0): (_move, (router.name, 0), keys, inward)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[router, a])
    chunks = ((a.shape[0],), (a.shape[1],))
    return da.Array(graph, name, chunks, dtype=a.dtype, meta=a._meta)


def _move(router, blocks: list, inward: bool) -> np.ndarray:
    """The rows of ``blocks`` (in turn, not joined first) moved through the route: see
    :func:`_routed` (and :meth:`DaskBackend._gathered_by_groups`: a worker's gather moves only
    its rows)."""
    route = router[0]
    if isinstance(route, _IndexRoute):
        xp = route.xp
        return route.moved(xp.concatenate(blocks) if len(blocks) != 1 else blocks[0], inward)
    from ._numba import _movable, _Scratch

    # the staging array kept with the route between calls: on a worker, fresh arrays of this
    # size cost page faults that take as long as the move
    if getattr(router, "scratch", None) is None:
        router.scratch = _Scratch()
    moved = int(route.slot.shape[0])  # fewer than the rows for a group's gather
    k, dtype = int(blocks[0].shape[1]), np.result_type(*blocks)
    with router.scratch([((moved, k), dtype)]) as (stage,):
        out = np.empty((moved, k), dtype)
        if moved and k:
            # the blocks' rows in turn, not joined first
            rows = [_movable(np.ascontiguousarray(b, dtype=dtype)) for b in blocks]
            if inward:
                route.gather(rows, _movable(out), _movable(stage))
            else:
                route.put(rows, _movable(out), _movable(stage))
    return out


def _split(da, whole, lengths):
    """A one-block 2-D Dask array cut into row blocks of ``lengths`` (zeros included): one task
    per block, each a view of ``whole``'s rows (no copy; ``rechunk`` would copy every block
    through split and merge tasks)."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    lengths = [int(n) for n in lengths]
    name = "laplex-split-" + tokenize(whole.name, tuple(lengths))
    starts = np.cumsum([0, *lengths])
    layer = {
        (name, i, 0): (_rows, (whole.name, 0, 0), int(starts[i]), int(starts[i + 1]))
        for i in range(len(lengths))
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[whole])
    chunks = (tuple(lengths), (whole.shape[1],))
    return da.Array(graph, name, chunks, dtype=whole.dtype, meta=whole._meta)


def _beside_parts(da, a, parts):
    """``a`` (row blocks aligned with the plan's partitions) with each block moved to its
    partition's worker: one task per block that returns it unchanged and also takes the
    partition, so that Dask runs it where the partition is (its size outweighs the block's).
    A single route leaves every block on its worker, and the shuffle wherever its output
    partitions are; an operand kept in plan order (:func:`laplexops.dask.to_plan_order`) would
    move half of its blocks on every use."""
    return da.blockwise(
        _first_of,
        "ij",
        a,
        "ij",
        parts,
        "i",
        dtype=a.dtype,
        meta=a._meta,
        align_arrays=False,
        concatenate=True,
    )


def _first_of(block, part):
    """``block`` (``part`` only places the task)."""
    return block


def _rows_beside(a, start: int, stop: int, part):
    """Rows ``start:stop`` of ``a`` (a view). ``part`` (the partition they belong to, on the
    same worker) is a dependency only: without it Dask takes a group's views for root tasks
    (many tasks on few dependencies) and runs them wherever a thread is free."""
    return a[start:stop]


def _rows(a, start: int, stop: int):
    """Rows ``start:stop`` of ``a`` (a view)."""
    return a[start:stop]


def _with_empty_blocks(da, dense, lengths):
    """``dense`` (2-D, one block per non-zero entry of ``lengths``) with zero-length blocks
    where ``lengths`` has zeros (``concatenate`` and indexing drop such blocks)."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    k = dense.shape[1]
    name = "laplex-blocks-" + tokenize(dense.name, tuple(lengths))
    layer, j = {}, 0
    for i, n in enumerate(lengths):
        if n:
            layer[(name, i, 0)] = (dense.name, j, 0)
            j += 1
        else:
            layer[(name, i, 0)] = np.empty_like(dense._meta, shape=(0, k), dtype=dense.dtype)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[dense])
    return da.Array(graph, name, (tuple(lengths), (k,)), dtype=dense.dtype, meta=dense._meta)


def _columns(a, start: int, stop: int):
    """Columns ``start:stop`` of a 2-D Dask array, block by block (indexing would drop its
    zero-length blocks, and with them the alignment with the plan's partitions)."""
    return a.map_blocks(
        lambda b: b[:, start:stop], chunks=(a.chunks[0], (stop - start,)), dtype=a.dtype
    )


def _holding(da, out, source):
    """``out`` with ``source``'s graph merged into its own: a frame made from an array loses the
    persisted data (futures) that array's graph holds, and with it what keeps them on the
    cluster once their owner (the plan) is gone; the merged graph holds them again."""
    from dask.highlevelgraph import HighLevelGraph

    graph = HighLevelGraph.merge(out.__dask_graph__(), source.__dask_graph__())
    return da.Array(graph, out.name, out.chunks, dtype=out.dtype, meta=out._meta)


class DaskPlan:
    """The Dask backend's plan: the anchors range-partitioned (see the module docstring).

    ``parts`` is a Dask array of P objects (one block each, persisted), ``lengths[side]`` the
    anchors of ``side`` per partition, ``chunks[side]`` the caller's chunks of those anchors,
    ``origin[side]`` their original indices in plan order (a Dask array of NumPy chunks, chunked
    by partition), ``destination[side]`` (made on first use) each anchor's position in plan
    order, in the caller's order and chunks, and ``local`` the partitions' backend, ``(name or
    instance, device kind)``.
    """

    def __init__(self, shape, shared, parts, lengths, chunks, origin, local=("numba", "cpu")):
        self.shape = shape
        self.local = local
        self.shared = shared
        self.parts = parts
        self.lengths = lengths
        self.chunks = chunks
        self.origin = origin
        self.destination: dict[Side, Any] = {}
        self.routers: dict[Side, Any] = {}
        self.gathers: dict[Side, Any] = {}
        # the partitions by the worker that holds them (``where``: its address; None: one group,
        # not on a distributed cluster)
        self.groups: list[list[int]] = [list(range(self.npartitions))]
        self.where: list[str | None] = [None]

    @property
    def npartitions(self) -> int:
        return int(self.parts.shape[0])


class DaskBackend:
    """Backend for Dask arrays of NumPy or CuPy chunks: products and gradients as Dask arrays.

    Each partition's anchors and products run on a single-machine backend, the *local* one:
    Numba for NumPy chunks, CuPy for CuPy chunks (on the worker's GPU). The plan's bookkeeping
    (splitters, the ranges' statistics, the anchors' shuffle) runs on the host either way.

    Parameters
    ----------
    partitions : int, optional
        The number of ranges the merged anchors are cut into; by default one per thread that runs
        Dask's tasks (the workers' threads on a ``distributed`` cluster), or a multiple of that
        so that none holds more than ``PART_ANCHORS`` (2**24) anchors: a product is 2 P + 1
        tasks, and each costs the scheduler and the workers milliseconds.
    samples : int, optional
        Anchors sampled per partition to place the splitters (64; at least ``MIN_SAMPLE``,
        4096, in all).
    seed : int, optional
        The sample's seed: the same plan on every run (0).
    local : str or Backend, optional
        The local backend: ``"auto"`` (the default backend for the chunks' device kind), a
        registered name, or an instance (which the tasks then carry: for a scheduler in one
        process, as the tests use with the host build of the CUDA kernels).

    Examples
    --------
    >>> import dask.array as da
    >>> import laplexops as lx
    >>> from laplexops.dask import DaskBackend
    >>> x = da.linspace(0.0, 1.0, 6, chunks=3)
    >>> op = lx.LaplexOperator(x, x, 2.0, backend=DaskBackend(partitions=2))
    >>> u = op @ da.ones(6, chunks=3)
    >>> bool(abs(float(u[0].compute()) - sum(2.718281828459045 ** (-0.4 * j) for j in range(6)))
    ...      < 1e-12)
    True
    """

    name = "dask"
    device = "dask"

    def __init__(
        self, partitions: int | None = None, samples: int = 64, seed: int = 0, local="auto"
    ):
        import dask.array as da
        import dask.dataframe as dd

        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(f"partitions must be a positive integer or None; got {partitions!r}")
        self.xp = da
        self._da, self._dd = da, dd
        self.partitions = partitions
        self.samples = samples
        self.seed = seed
        self.local = local

    def asarray(self, a):
        if not isinstance(a, self._da.Array):
            raise TypeError(f"the dask backend takes Dask arrays; got {type(a).__name__}")
        _chunk_kind(a)
        return a

    def snapshot(self, a, dtype):
        copy = a.astype(dtype).persist()
        if copy.dtype.kind != "f" or copy.shape[0] == 0:
            return copy, 0, None
        bad = int((~self._da.isfinite(copy)).sum().compute())
        return copy, bad, None

    # ------------------------------------------------------------------ plan
    def plan(self, x, y, hint=None, ordered=(None, None)):
        shared = y is x
        m, n = int(x.shape[0]), int(y.shape[0])
        sides = _host_sides([x] if shared else [x, y])
        count = self.partitions or _default_partitions(m + (0 if shared else n))
        splitters = self._splitters(sides, count, m + (0 if shared else n))
        bounds = self._bounds(sides, splitters, shared)
        return self._planned(x, y, splitters, bounds)

    def _planned(self, x, y, splitters, bounds, persist: bool = True) -> DaskPlan:
        """The plan of ``x`` and ``y`` (``y is x``: one set) on the ranges cut by ``splitters``,
        whose bounds (:meth:`_bounds`) are given; with ``persist=False`` its partitions and
        positions stay task graphs (not computed: how the graph of a plan at any scale is
        counted)."""
        da = self._da
        shared = y is x
        m, n = int(x.shape[0]), int(y.shape[0])
        kind = _chunk_kind(x)
        if _chunk_kind(y) != kind:
            raise TypeError("the dask backend needs x and y chunked alike: both NumPy or both CuPy")
        local = self._local_spec(kind)
        sides = _host_sides([x] if shared else [x, y])
        P = bounds.shape[0]
        neighbours = np.concatenate([_neighbours(bounds), np.arange(P)[:, None]], axis=1)
        dtype = np.dtype(x.dtype).name
        lengths_all = bounds[:, :2].astype(np.int64)
        if 16 * (m + (0 if shared else n)) <= GATHER_BYTES:
            parts = self._parts_gathered(
                sides, splitters, lengths_all, neighbours, shared, dtype, local
            )
        else:
            parts = self._parts_shuffled(sides, splitters, neighbours, shared, dtype, local)
        if persist:
            parts = _persisted(parts, optimize=False)
        lengths = {Side.ROWS_X: lengths_all[:, 0], Side.ROWS_Y: lengths_all[:, 1]}
        chunks = {Side.ROWS_X: x.chunks[0], Side.ROWS_Y: y.chunks[0]}
        origin = {}
        for side in (Side.ROWS_X,) if shared else (Side.ROWS_X, Side.ROWS_Y):
            origin[side] = da.map_blocks(
                _part_indices,
                parts,
                side,
                chunks=(tuple(int(v) for v in lengths[side]),),
                dtype=np.int64,
            )
            origin[side] = origin[side].persist() if persist else origin[side]
        if shared:
            origin[Side.ROWS_Y] = origin[Side.ROWS_X]
        plan = DaskPlan((m, n), shared, parts, lengths, chunks, origin, local)
        if persist:
            plan.groups, plan.where = _groups_of(parts)
        return plan

    def _local_spec(self, kind: str):
        """``(name or instance, kind)`` of the local backend for chunks of device kind ``kind``:
        resolved here (so that a missing backend fails at the plan), carried by name to the
        workers."""
        backend = _local_backend(self.local, kind)
        if not hasattr(backend, "scan_ends"):
            raise TypeError(
                f"the dask backend's local backend needs scan_ends (the carries' end states); "
                f"{backend.name!r} has none"
            )
        return (backend.name if isinstance(self.local, str) else backend), kind

    def _bounds(self, sides, splitters: np.ndarray, shared: bool) -> np.ndarray:
        """Per range ``[m_p, n_p, least x, greatest x, least y, greatest y]`` (nan: none), from
        every chunk's :func:`_chunk_stats` (a tree of :func:`_combine_stats`): O(N) work, O(P)
        data out."""
        da = self._da
        P = splitters.shape[0] + 1
        stats = []
        for a in sides:
            per = a.map_blocks(
                _chunk_stats,
                splitters,
                chunks=((1,) * a.numblocks[0], (3 * P,)),
                new_axis=1,
                dtype=np.float64,
            )
            stats.append(_combined(da, per))
        found = []
        for v in da.compute(*stats):
            found += [v[0, :P], v[0, P : 2 * P], v[0, 2 * P :]]
        if shared:
            found *= 2
        out = np.stack([found[0], found[3], found[1], found[2], found[4], found[5]], axis=1)
        out[:, 2:][np.isinf(out[:, 2:])] = np.nan
        return out

    def _parts_gathered(self, sides, splitters, lengths, neighbours, shared, dtype, local):
        """The partitions through one task that groups all anchors by range (a counting sort,
        :func:`_bucketed`), cut into P blocks, each then sorted and planned."""
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        da = self._da
        name = "laplex-bucketed-" + tokenize(*(a.name for a in sides), splitters)
        keys = [[(a.name, j) for j in range(a.numblocks[0])] for a in sides]
        layer = {(name, 0, 0): (_bucketed, splitters, keys[0], keys[1] if len(keys) > 1 else [])}
        per_range = lengths[:, 0] if shared else lengths.sum(axis=1)
        graph = HighLevelGraph.from_collections(name, layer, dependencies=sides)
        whole = da.Array(graph, name, ((int(per_range.sum()),), (2,)), dtype=np.float64)
        ranged = _split(da, whole, [int(c) for c in per_range])
        P = len(per_range)
        token = tokenize(ranged.name, lengths, neighbours, shared, dtype, local)
        parts, builds = "laplex-parts-" + token, "laplex-build-" + token
        # one building task per worker thread, each on its worker and for a contiguous run of
        # partitions (its counts and neighbours go in as values): the workers start with none
        # queued, so Dask's work stealing, which would move a building task to the worker that
        # holds the ranges (and with it the partition), finds nothing to move
        slots = _worker_slots()
        S = min(len(slots), P) or P
        runs = [[p for p in range(P) if p * S // P == t] for t in range(S)]
        layer: dict[Any, Any] = {
            (builds, t): (
                _build_parts,
                [(ranged.name, p, 0) for p in run],
                lengths[run],
                neighbours[run],
                shared,
                dtype,
                local,
            )
            for t, run in enumerate(runs)
        }
        where = [slots[t * len(slots) // S] for t in range(S)] if slots else []
        with _placed(where):
            graph = HighLevelGraph.from_collections(builds, layer, dependencies=[ranged])
        built = da.Array(graph, builds, ((1,) * S,), dtype=object, meta=np.empty(0, object))
        layer = {
            (parts, p): (_pick, (builds, t), j, (ranged.name, p, 0))
            for t, run in enumerate(runs)
            for j, p in enumerate(run)
        }
        # each partition picked where its run was built: by the data alone, a partition of a
        # few kilobytes would be moved to a worker that is free sooner
        with _placed([where[t] for t, run in enumerate(runs) for _ in run] if where else []):
            graph = HighLevelGraph.from_collections(parts, layer, dependencies=[built, ranged])
        return da.Array(graph, parts, ((1,) * P,), dtype=object, meta=np.empty(0, object))

    def _parts_shuffled(self, sides, splitters, neighbours, shared, dtype, local):
        """The partitions through ``dask.dataframe``'s shuffle (``set_index`` with the
        splitters as divisions; peer to peer on a ``distributed`` cluster), each then sorted
        and planned."""
        da, dd = self._da, self._dd
        frames = [
            a.map_blocks(
                _anchor_frame, np.cumsum([0, *a.chunks[0]]), flag, dtype=object, meta=_OBJECTS
            )
            for flag, a in enumerate(sides)
            if a.shape[0]
        ]
        frame = _as_frame(dd, frames, _anchor_frame(np.empty(0), np.zeros(2, np.int64), 0))
        divisions = [-math.inf, *splitters.tolist(), math.inf]
        moved = frame.set_index("z", divisions=divisions, sorted=False)
        blocks = [
            da.from_delayed(
                _delayed_part(piece, neighbours[p : p + 1], shared, dtype, local),
                shape=(1,),
                dtype=object,
                meta=np.empty(0, object),
            )
            for p, piece in enumerate(moved.to_delayed())
        ]
        return da.concatenate(blocks)

    def _splitters(self, sides, count: int, total: int) -> np.ndarray:
        """Up to ``count - 1`` unique cut points: quantiles of a seeded sample of every chunk
        (about ``samples`` anchors per partition in all)."""
        da = self._da
        if count == 1 or total == 0:
            return np.empty(0)
        pieces = []
        for flag, a in enumerate(sides):
            if a.shape[0] == 0:
                continue
            wanted = max(self.samples * count, MIN_SAMPLE)
            per = [max(1, math.ceil(wanted * c / total)) for c in a.chunks[0]]
            size = max(per)
            pieces.append(
                da.map_blocks(
                    _sample,
                    a,
                    size,
                    self.seed + 7919 * flag,
                    chunks=(tuple(min(size, c) for c in a.chunks[0]),),
                    dtype=np.float64,
                )
            )
        sample = np.sort(np.concatenate(da.compute(*pieces)))
        cuts = np.quantile(sample, np.arange(1, count) / count, method="inverted_cdf")
        return np.unique(cuts)

    # ------------------------------------------------------------------ layouts
    def to_plan(self, plan: DaskPlan, side: Side, b, beside: bool = False):
        """``b`` (rows: ``side``'s anchors in the caller's order) in plan order. ``beside``:
        each block moved to its partition's worker (:func:`_beside_parts`), for an operand kept
        in plan order; a product's own operand moves there with its first use anyway."""
        if _gathers(b) and 2 <= len(plan.groups) <= GROUP_GATHERS:
            return self._gathered_by_groups(plan, side, b)
        moved = self._moved(plan, side, b, inward=True)
        return _beside_parts(self._da, moved, plan.parts) if beside else moved

    def from_plan(self, plan: DaskPlan, side: Side, u):
        """``u`` (rows: ``side``'s anchors in plan order) in the caller's order."""
        return self._moved(plan, side, u, inward=False)

    def _moved(self, plan: DaskPlan, side: Side, a, inward: bool):
        """``a`` moved into plan order (``inward``) or back out: one task through the plan's
        route up to ``GATHER_BYTES``, else one shuffle (:func:`_route`)."""
        da = self._da
        lengths = plan.lengths[side] if inward else plan.chunks[side]
        if _gathers(a):
            return _split(da, _routed(da, self._router(plan, side), a, inward), lengths)
        if inward:
            keys = self._destination(plan, side)
            a = a.rechunk({0: keys.chunks[0]})
        else:
            keys = plan.origin[side]
        return self._routed_frames(plan, _frames(da, keys, a), a.shape[1], a.dtype, lengths)

    def _routed_frames(self, plan: DaskPlan, frames, k: int, dtype, lengths):
        """:func:`_route` of ``frames``, as arrays of the local backend's kind."""
        out = _route(self._da, self._dd, frames, k, dtype, lengths)
        if plan.local[1] == "cuda":
            import cupy

            out = out.map_blocks(cupy.asarray, dtype=out.dtype, meta=cupy.empty((0, 0), out.dtype))
        return out

    def _gathered_by_groups(self, plan: DaskPlan, side: Side, a):
        """``a`` in plan order through one gather per group of partitions (those on one
        worker), on that worker: each group's task takes all of ``a``'s chunks and gathers its
        own rows (:func:`_make_router` of its part; the chunks read where they are, not
        joined), and its partitions' blocks are views of them (the gather itself for a group of
        one). Every worker receives the chunks it lacks (G - 1 copies of ``a`` in all, no more
        than one route moves for G <= 3) and no block moves after, where the single route moves
        each block twice, one after the other. O(N k)."""
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        da = self._da
        gathers = self._group_gathers(plan, side)
        a = a.rechunk({1: -1})
        token = tokenize(gathers.name, a.name)
        move, out = "laplex-gathered-" + token, "laplex-in-plan-" + token
        chunks = [(a.name, c, 0) for c in range(a.numblocks[0])]
        layer: dict[Any, Any] = {}
        for g, group in enumerate(plan.groups):
            gather = (_move, (gathers.name, g), chunks, True)
            if len(group) == 1:  # the gather is the partition's block (no view, one hop less)
                layer[(out, group[0], 0)] = gather
                continue
            whole = (move, group[0])  # keyed by its first partition (see below)
            layer[whole] = gather
            start = 0
            for p in group:
                stop = start + int(plan.lengths[side][p])
                layer[(out, p, 0)] = (_rows_beside, whole, start, stop, (plan.parts.name, p))
                start = stop
        # every task placed on its group's worker (a gather by its first partition): by the data
        # alone, blocks of a few kilobytes would go to a worker that is free sooner
        by_part = {p: plan.where[g] for g, group in enumerate(plan.groups) for p in group}
        with _placed([by_part[p] for p in range(plan.npartitions)]):
            graph = HighLevelGraph.from_collections(out, layer, [gathers, a, plan.parts])
        lengths = tuple(int(n) for n in plan.lengths[side])
        return da.Array(graph, out, (lengths, (a.shape[1],)), dtype=a.dtype, meta=a._meta)

    def _group_gathers(self, plan: DaskPlan, side: Side):
        """Per group of partitions, the gather of its rows from the caller's order
        (:func:`_make_router` of its part), built once in one task on the group's worker and
        persisted."""
        if side not in plan.gathers:
            from dask.base import tokenize
            from dask.highlevelgraph import HighLevelGraph

            origin = plan.origin[side]
            n = plan.shape[0] if side == Side.ROWS_X else plan.shape[1]
            name = "laplex-gather-" + tokenize(origin.name, plan.local, plan.groups)
            layer: dict[Any, Any] = {
                (name, g): (_make_router, [(origin.name, p) for p in group], plan.local, n)
                for g, group in enumerate(plan.groups)
            }
            with _placed(plan.where):
                graph = HighLevelGraph.from_collections(name, layer, dependencies=[origin])
            chunks = ((1,) * len(plan.groups),)
            gathers = self._da.Array(graph, name, chunks, dtype=object, meta=np.empty(0, object))
            plan.gathers[side] = _persisted(gathers, optimize=False)
            if plan.shared:
                plan.gathers[side.other] = plan.gathers[side]
        return plan.gathers[side]

    def _router(self, plan: DaskPlan, side: Side):
        """The route between ``side``'s caller order and plan order (a ``Route`` of
        ``plan.origin[side]``, see ``_numba_route``), built once in one task and persisted."""
        if side not in plan.routers:
            from dask.base import tokenize
            from dask.highlevelgraph import HighLevelGraph

            origin = plan.origin[side]
            name = "laplex-router-" + tokenize(origin.name, plan.local)
            keys = [(origin.name, j) for j in range(origin.numblocks[0])]
            graph = HighLevelGraph.from_collections(
                name, {(name, 0): (_make_router, keys, plan.local)}, dependencies=[origin]
            )
            router = self._da.Array(graph, name, ((1,),), dtype=object, meta=np.empty(0, object))
            plan.routers[side] = _persisted(router)
            if plan.shared:
                plan.routers[side.other] = plan.routers[side]
        return plan.routers[side]

    def _destination(self, plan: DaskPlan, side: Side, persist: bool = True):
        """Each of ``side``'s anchors' position in plan order, in the caller's order: the
        inverse of ``plan.origin[side]``, made once (one shuffle) and persisted (with
        ``persist=False``: its task graph, not kept)."""
        if side not in plan.destination:
            origin = plan.origin[side]
            starts = np.cumsum([0, *origin.chunks[0]])
            frames = origin.map_blocks(
                lambda b, block_id=None: _frame(
                    b, np.arange(starts[block_id[0]], starts[block_id[0] + 1])[:, None]
                ),
                dtype=object,
                meta=_OBJECTS,
            )
            dest = _route(self._da, self._dd, frames, 1, np.int64, plan.chunks[side])
            dest = dest.map_blocks(lambda b: b[:, 0], drop_axis=1, dtype=np.int64)
            if not persist:
                return dest
            plan.destination[side] = dest.persist()
            if plan.shared:
                plan.destination[side.other] = plan.destination[side]
        return plan.destination[side]

    # ------------------------------------------------------------------ products
    def apply_planned(
        self, plan: DaskPlan, side: Side, rate, b, *, wants=(True, False, False), frames=False
    ) -> list:
        """The reductions ``wants`` (sum, signed, moment) of ``b`` (columns: ``side.other``'s
        anchors in plan order, shape (n, k)) onto ``side``'s anchors, in plan order. With
        ``frames`` (one reduction wanted), its blocks come as frame partitions keyed by their
        rows' original indices (:func:`_local_frame`), ready for :func:`_route`."""
        da = self._da
        k = b.shape[1]
        real = np.finfo(b.dtype).dtype
        dtype = np.result_type(b.dtype, np.complex64 if isinstance(rate, complex) else real)
        summary_dtype = np.result_type(dtype, np.float64)
        summaries = da.blockwise(
            _summary,
            "ij",
            plan.parts,
            "i",
            b,
            "ik",
            side,
            None,
            rate,
            None,
            k,
            None,
            wants[2],
            None,
            new_axes={"j": 2 + 4 * k},
            dtype=summary_dtype,
            meta=np.empty((0, 0), summary_dtype),
            align_arrays=False,
        )
        carries = _folded(da, summaries, rate, k)
        width = k * sum(wants)
        rows = tuple(int(v) for v in plan.lengths[side])
        if frames:
            framed = da.blockwise(
                *(_local_frame, "i", plan.parts, "i", b, "ik", carries, "lm"),
                *(side, None, rate, None, k, None, tuple(wants), None, dtype, None),
                dtype=object,
                meta=_OBJECTS,
                align_arrays=False,
            )
            return [framed if want else None for want in wants]
        out = da.blockwise(
            _local,
            "ij",
            plan.parts,
            "i",
            b,
            "ik",
            carries,
            "lm",
            side,
            None,
            rate,
            None,
            k,
            None,
            tuple(wants),
            None,
            dtype,
            None,
            new_axes={"j": width},
            adjust_chunks={"i": rows},
            dtype=dtype,
            meta=_local_backend(*plan.local).xp.empty((0, 0), dtype),
            align_arrays=False,
        )
        results, at = [], 0
        for want in wants:
            if want:
                results.append(out if width == k else _columns(out, at, at + k))
                at += k
            else:
                results.append(None)
        return results

    def apply(self, plan, side, rate, b, *, want_sum=True, want_signed=False, want_moment=False):
        m = plan.shape[0] if side == Side.ROWS_X else plan.shape[1]
        wants = (want_sum, want_signed, want_moment)
        real = np.finfo(b.dtype).dtype
        dtype = np.result_type(b.dtype, np.complex64 if isinstance(rate, complex) else real)
        k = b.shape[1]
        if b.shape[0] == 0 or m == 0:
            zeros = self._da.zeros((m, k), dtype=dtype, chunks=(plan.chunks[side], (k,)))
            if plan.local[1] == "cuda":
                xp = _local_backend(*plan.local).xp
                zeros = zeros.map_blocks(xp.asarray, dtype=dtype, meta=xp.empty((0, 0), dtype))
            return tuple(zeros if w else None for w in wants)
        b = self.to_plan(plan, side.other, b)
        if sum(wants) == 1 and not _gathers_rows(m, k, dtype):
            planned = self.apply_planned(plan, side, rate, b, wants=wants, frames=True)
            out = [
                self._routed_frames(plan, f, k, dtype, plan.chunks[side])
                for f in planned
                if f is not None
            ]
            return tuple(out[0] if want else None for want in wants)
        planned = self.apply_planned(plan, side, rate, b, wants=wants)
        return tuple(r if r is None else self.from_plan(plan, side, r) for r in planned)


def _persisted(a, optimize: bool = True):
    """``a`` persisted, once its blocks exist (on a ``distributed`` cluster ``persist`` returns
    at once: a plan should be built when it returns, its failures raised there). ``optimize=
    False``: the graph as built (fusing its tasks would drop their placement, see
    :func:`_placed`)."""
    a = a.persist(optimize_graph=optimize)
    try:
        from distributed import futures_of, wait
    except ImportError:  # pragma: no cover - the dask extra installs distributed
        return a
    futures = futures_of(a)
    if futures:
        wait(futures)
        for future in futures:
            if future.status == "error":
                future.result()  # raises the task's error
    return a


def _default_partitions(anchors: int) -> int:
    """The partitions of a plan of ``anchors`` (both sides) unless the caller sets them: one per
    thread that runs Dask's tasks (a ``distributed`` cluster's worker threads, else the local
    scheduler's), so that a product is two tasks per thread, and more, a multiple of that,
    where partitions would hold more than ``PART_ANCHORS`` anchors."""
    import dask
    from dask.base import get_scheduler
    from dask.local import get_sync
    from dask.system import CPU_COUNT

    threads = len(_worker_slots())
    if not threads:
        threads = (
            1 if get_scheduler() is get_sync else dask.config.get("num_workers", None) or CPU_COUNT
        )
    rounds = max(1, math.ceil(anchors / (PART_ANCHORS * threads)))
    return threads * rounds


def _worker_slots() -> list:
    """One entry per thread of each worker of the ``distributed`` client that runs Dask's
    graphs now, its address (sorted), or ``[]`` under any other scheduler."""
    from dask.base import get_scheduler

    client: Any = getattr(get_scheduler(), "__self__", None)
    if type(client).__name__ != "Client":
        return []
    threads = client.ncores()
    return [address for address in sorted(threads) for _ in range(max(1, threads[address]))]


@contextlib.contextmanager
def _placed(where: list):
    """Graph layers made inside this context place block ``i`` (key ``(name, i, ...)``) on the
    worker ``where[i]`` (a preference, not a restriction; an empty ``where``, or one with an
    unknown worker: no preference). The plan's building tasks and the per-worker gathers are
    placed this way; the tasks that use what they make go where it is."""
    import dask

    if not where or not all(where):
        yield
        return

    def worker(key):
        return [where[key[1]]]

    with dask.annotate(workers=worker, allow_other_workers=True):
        yield


def _groups_of(parts) -> tuple[list[list[int]], list]:
    """The persisted partitions grouped by the worker that holds them (groups in the order of
    their first partition; a partition held by several goes with the first address) and those
    workers' addresses; one group and ``[None]`` off a ``distributed`` cluster."""
    P = int(parts.numblocks[0])
    try:
        from distributed import futures_of
    except ImportError:  # pragma: no cover - the dask extra installs distributed
        return [list(range(P))], [None]
    futures = futures_of(parts)
    if not futures:
        return [list(range(P))], [None]
    held = futures[0].client.who_has(futures)
    groups: dict[Any, list[int]] = {}
    for p, key in enumerate(parts.__dask_keys__()):
        addresses = sorted(held.get(key) or ())
        if not addresses:
            return [list(range(P))], [None]
        groups.setdefault(addresses[0], []).append(p)
    return list(groups.values()), list(groups.keys())


def _delayed_part(piece, neighbours, shared, dtype, local):
    import dask

    return dask.delayed(_part_from_frame, pure=True)(piece, neighbours, shared, dtype, local)


def _host_sides(sides: list) -> list:
    """The anchors' Dask arrays with NumPy chunks (CuPy chunks copied to the host): the plan's
    bookkeeping runs on the host."""
    return [a if _chunk_kind(a) == "cpu" else _on_host(a) for a in sides]


def _on_host(a):
    """``a`` with every chunk a NumPy array (:func:`_to_host`), whatever its ``meta`` says."""
    return a.map_blocks(_to_host, dtype=a.dtype, meta=np.empty((0,) * a.ndim, a.dtype))
