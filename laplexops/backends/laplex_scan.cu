// LAPLEX on CUDA: the decayed scan over a merged, sorted plan, as a blocked three-phase scan.
//
// One *side* of a plan: sorted row anchors rz (m), sorted column anchors cz (n). Merged in sorted
// order (a row before a column of equal value) they form the items t = 0 .. N-1 with values z_t.
// Moving from item t-1 to item t multiplies by the decay e_t = exp(-s (z_t - z_{t-1})) — only
// differences of neighbouring sorted anchors enter exp. Column items carry the operand b_c.
//
//   forward   F_t = e_t F_{t-1} (+ b_t)          F1_t = e_t (F1_{t-1} + dz_t F_{t-1})
//   backward  G_t = e_{t+1} G_{t+1} (+ b_t)      G1_t likewise, right to left
//   ties      T_t = [dz_{t+1} == 0] T_{t+1} (+ b_t)  (columns equal to the row, after it)
//
// At a row item (F read before its own column value is added, G after):
//   sum    = F + G                 (W b)_r
//   signed = F - G + T             sum_c sign(r - c) W_rc b_c      (sign(0) = 0)
//   moment = F1 + G1               sum_c |r - c| W_rc b_c
//
// Each step is an affine map of the state (F, F1, T); maps compose associatively (Agg below), so
// the recurrences run as a parallel scan:
//   phase 1  laplex_tiles(phase=1; PHASE_REDUCE on the host): each block reduces its tile of TILE
//            items to one map per direction (both directions from one read of the tile; with
//            LAPLEX_LEAN_PHASE1, from its columns alone: lean_tile_maps)
//   phase 2  laplex_carries: scans the tile maps of each (column, direction) into the state
//            entering each tile (one block each, or chunk totals first for many tiles)
//   phase 3  laplex_tiles(phase=3; PHASE_WRITE on the host): each block rescans its tile from those
//            states and writes the three reductions for its rows, in original row order.
// A tile is merged on the fly (merge path) from the global splits (laplex_splits). In "square"
// mode the rows are the columns (x = y, distinct): every item is both. k right-hand sides run in one
// launch (grid.y). Work O(N k); bytes per pass: the tile's anchors and column values, once.
//
// Types: R real (float/double), D decay (R or cx<R>), B operand (R or cx<R>), V result (cx<R> when
// D or B is complex, else R), I permutation index (int or long long).
// Launch geometry comes from the host as -D options (laplexops/backends/_cuda_kernels.py).

#ifndef LAPLEX_BLOCK
#define LAPLEX_BLOCK 128
#endif
#ifndef LAPLEX_ITEMS
#define LAPLEX_ITEMS 9
#endif
#ifndef LAPLEX_TILE_MIN_BLOCKS     // scan blocks that must fit on a multiprocessor (caps registers)
#define LAPLEX_TILE_MIN_BLOCKS -1  // 0: the compiler's choice; -1: tile_min_blocks() below
#endif
#ifndef LAPLEX_CARRY_BLOCK
#define LAPLEX_CARRY_BLOCK 256
#endif
#ifndef LAPLEX_SORT_BLOCK
#define LAPLEX_SORT_BLOCK 128
#endif
#ifndef LAPLEX_SORT_ITEMS  // a sort thread's run of a window
#define LAPLEX_SORT_ITEMS 8
#endif
#ifndef LAPLEX_SORT_ROUNDS
#define LAPLEX_SORT_ROUNDS 64
#endif
#ifndef LAPLEX_RADIX_BLOCK
#define LAPLEX_RADIX_BLOCK 256
#endif
#ifndef LAPLEX_RADIX_ITEMS
#define LAPLEX_RADIX_ITEMS 16
#endif
#define LAPLEX_TILE (LAPLEX_BLOCK * LAPLEX_ITEMS)
static_assert(LAPLEX_TILE < 65536, "a thread's first row in its tile fits 16 bits (thread_rows)");
static_assert(LAPLEX_ITEMS < 31, "a thread's slots are bits of one word (and one more gap)");
#define LAPLEX_SORT_WINDOW (LAPLEX_SORT_BLOCK * LAPLEX_SORT_ITEMS)

namespace laplex {

// ------------------------------------------------------------------------------------ scalars
template <class R> struct cx {
    R re, im;
};

template <class R> __device__ __forceinline__ cx<R> operator+(cx<R> a, cx<R> b) {
    cx<R> o;
    o.re = a.re + b.re;
    o.im = a.im + b.im;
    return o;
}
template <class R> __device__ __forceinline__ cx<R> operator-(cx<R> a, cx<R> b) {
    cx<R> o;
    o.re = a.re - b.re;
    o.im = a.im - b.im;
    return o;
}
template <class R> __device__ __forceinline__ cx<R> operator*(cx<R> a, cx<R> b) {
    cx<R> o;
    o.re = a.re * b.re - a.im * b.im;
    o.im = a.re * b.im + a.im * b.re;
    return o;
}
template <class R> __device__ __forceinline__ cx<R> operator*(R a, cx<R> b) {
    cx<R> o;
    o.re = a * b.re;
    o.im = a * b.im;
    return o;
}

#ifndef LAPLEX_FAST_EXP
#define LAPLEX_FAST_EXP 0
#endif
// float decays through the hardware exp2 (__expf: a relative error of about (2 + 1.2 |a|) 2^-24,
// on terms weighted by exp(a)) when LAPLEX_FAST_EXP is 1
__device__ __forceinline__ float exp_of(float a) { return LAPLEX_FAST_EXP ? __expf(a) : expf(a); }
__device__ __forceinline__ double exp_of(double a) { return exp(a); }
__device__ __forceinline__ void sincos_of(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sincos_of(double a, double* s, double* c) { sincos(a, s, c); }

template <class R> __device__ __forceinline__ R infinity();
template <> __device__ __forceinline__ float infinity<float>() {
    return __int_as_float(0x7f800000);
}
template <> __device__ __forceinline__ double infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

template <class R> __device__ __forceinline__ void set_zero(R& a) { a = R(0); }
template <class R> __device__ __forceinline__ void set_zero(cx<R>& a) {
    a.re = R(0);
    a.im = R(0);
}
template <class R> __device__ __forceinline__ void set_one(R& a) { a = R(1); }
template <class R> __device__ __forceinline__ void set_one(cx<R>& a) {
    a.re = R(1);
    a.im = R(0);
}

// operand into result type
template <class R> __device__ __forceinline__ void assign(R& v, R b) { v = b; }
template <class R> __device__ __forceinline__ void assign(cx<R>& v, R b) {
    v.re = b;
    v.im = R(0);
}
template <class R> __device__ __forceinline__ void assign(cx<R>& v, cx<R> b) { v = b; }

// the decay exp(-s dz) for dz >= 0; s = s_re + i s_im
template <class R> __device__ __forceinline__ void decay(R& e, R dz, R s_re, R) {
    e = exp_of(-s_re * dz);
}
template <class R> __device__ __forceinline__ void decay(cx<R>& e, R dz, R s_re, R s_im) {
    R mag = exp_of(-s_re * dz), sn, cs;
    sincos_of(-s_im * dz, &sn, &cs);
    e.re = mag * cs;
    e.im = mag * sn;
}

// ------------------------------------------------------------------------------------ the map
// The affine map of a segment of items: state (F, F1, T) -> (e F + p, e (F1 + dz F) + q, et T + t).
// A state is the map applied to zero: its p, q, t.
template <class D, class R, class V> struct Agg {
    D e;   // decay across the segment
    V p;   // sum
    V q;   // first moment
    V t;   // tie run (backward direction only)
    R dz;  // length of the segment
    R et;  // 1 when the segment has length 0, else 0
};

template <class D, class R, class V> __device__ __forceinline__ void set_identity(Agg<D, R, V>& a) {
    set_one(a.e);
    set_zero(a.p);
    set_zero(a.q);
    set_zero(a.t);
    a.dz = R(0);
    a.et = R(1);
}

// the map of `first` followed by `second`; without TIES (forward maps, whose tie run is always
// empty) the tie fields are left as identity
template <bool MOMENT, bool TIES = true, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> compose(const Agg<D, R, V>& first,
                                                const Agg<D, R, V>& second) {
    Agg<D, R, V> o;
    o.e = first.e * second.e;
    o.p = second.e * first.p + second.p;
    if (MOMENT) {
        o.q = second.e * (first.q + second.dz * first.p) + second.q;
        o.dz = first.dz + second.dz;
    } else {
        set_zero(o.q);
        o.dz = R(0);
    }
    if (TIES) {
        o.et = first.et * second.et;
        o.t = second.et * first.t + second.t;
    } else {
        o.et = R(1);
        set_zero(o.t);
    }
    return o;
}

// The map of one step onto an item: the decay e over dz from the item before (forward) or after
// (backward), then the item's value (zero for a row); backward steps carry the tie run too.
template <class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> step_map(const D e, const R dz, const V value,
                                                 const bool backward) {
    Agg<D, R, V> a;
    a.e = e;
    a.dz = dz;
    a.et = backward && dz != R(0) ? R(0) : R(1);
    a.p = value;
    set_zero(a.q);
    if (backward) a.t = value;
    else set_zero(a.t);
    return a;
}

// Warp shuffles of the fields of a map (a complex value as its two parts).
template <class T> __device__ __forceinline__ T shuffle(T a, int delta, bool down) {
    return down ? __shfl_down_sync(0xffffffffu, a, delta) : __shfl_up_sync(0xffffffffu, a, delta);
}
template <class R> __device__ __forceinline__ cx<R> shuffle(cx<R> a, int delta, bool down) {
    a.re = shuffle(a.re, delta, down);
    a.im = shuffle(a.im, delta, down);
    return a;
}
template <bool MOMENT, bool TIES, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> shuffle(const Agg<D, R, V>& a, int delta, bool down) {
    Agg<D, R, V> o;
    o.e = shuffle(a.e, delta, down);
    o.p = shuffle(a.p, delta, down);
    if (TIES) {
        o.t = shuffle(a.t, delta, down);
        o.et = shuffle(a.et, delta, down);
    } else {
        set_zero(o.t);
        o.et = R(1);
    }
    if (MOMENT) {
        o.q = shuffle(a.q, delta, down);
        o.dz = shuffle(a.dz, delta, down);
    } else {  // compose() keeps these zero without moments
        set_zero(o.q);
        o.dz = R(0);
    }
    return o;
}

// Block scans of one map per thread of a block of THREADS threads (whole warps, or one warp of
// fewer), composed in thread order (REVERSE: from the last thread to the first). A warp scans by
// shuffles (log2(32) steps); then each thread composes the totals of the warps before its own from
// shared memory (at most THREADS / 32 of them).
template <int THREADS> struct ScanShape {
    static_assert(THREADS <= 32 || THREADS % 32 == 0, "a scan block is whole warps");
    static constexpr int WIDTH = THREADS < 32 ? THREADS : 32;
    static constexpr int WARPS = (THREADS + 31) / 32;
};

// The warp's part: the composition of its maps up to this lane's (inclusive, the result) and before
// it (exclusive, `before`).
template <int THREADS, bool MOMENT, bool REVERSE, bool TIES, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> warp_scan(Agg<D, R, V> inclusive, Agg<D, R, V>& before) {
    constexpr int WIDTH = ScanShape<THREADS>::WIDTH;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int delta = 1; delta < WIDTH; delta *= 2) {
        const Agg<D, R, V> other = shuffle<MOMENT, TIES>(inclusive, delta, REVERSE);
        if (REVERSE ? lane + delta < WIDTH : lane >= delta)
            inclusive = compose<MOMENT, TIES>(other, inclusive);
    }
    before = shuffle<MOMENT, TIES>(inclusive, 1, REVERSE);
    if (lane == (REVERSE ? WIDTH - 1 : 0)) set_identity(before);
    return inclusive;
}

// The block's part, once the warps' totals are in s_warp: the composition of all (total) and of
// the warps before this thread's, composed with the thread's `before` (the result).
template <int THREADS, bool MOMENT, bool REVERSE, bool TIES, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> block_part(const Agg<D, R, V>* s_warp,
                                                   const Agg<D, R, V>& before,
                                                   Agg<D, R, V>& total) {
    constexpr int WARPS = ScanShape<THREADS>::WARPS;
    const int warp = threadIdx.x / 32;
    Agg<D, R, V> prefix, all;
    set_identity(prefix);
    set_identity(all);
#pragma unroll
    for (int i = 0; i < WARPS; ++i) {
        const int w = REVERSE ? WARPS - 1 - i : i;
        if (w == warp) prefix = all;
        all = compose<MOMENT, TIES>(all, s_warp[w]);
    }
    total = all;
    return compose<MOMENT, TIES>(prefix, before);
}

// One block scan: returns the composition of the maps before this thread's (exclusive) and sets
// `total` to the composition of all. One block barrier; with FREE a second one frees s_warp for a
// next call of the same instance (without, each instance may run once per block).
template <int THREADS, bool MOMENT, bool REVERSE, bool TIES, bool FREE = true, class D, class R,
          class V>
__device__ Agg<D, R, V> block_scan(const Agg<D, R, V> value, Agg<D, R, V>& total) {
    typedef Agg<D, R, V> A;
    __shared__ A s_warp[ScanShape<THREADS>::WARPS];
    A before;
    const A inclusive = warp_scan<THREADS, MOMENT, REVERSE, TIES>(value, before);
    // the warp's total: in its last lane (first, REVERSE)
    if (threadIdx.x % 32 == (REVERSE ? 0 : ScanShape<THREADS>::WIDTH - 1))
        s_warp[threadIdx.x / 32] = inclusive;
    __syncthreads();
    const A result = block_part<THREADS, MOMENT, REVERSE, TIES>(s_warp, before, total);
    if (FREE) __syncthreads();  // s_warp is free again
    return result;
}

// ------------------------------------------------------------------------------------ kernels
// Rows before each tile boundary of the merged order (merge path), boundaries 0 .. tiles.
template <class R>
__global__ void laplex_splits(const R* __restrict__ rz, const R* __restrict__ cz, long long m,
                              long long n, long long tiles, long long* __restrict__ splits) {
    long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (u > tiles) return;
    long long diag = u * LAPLEX_TILE;
    if (diag > m + n) diag = m + n;
    long long lo = diag > n ? diag - n : 0, hi = diag < m ? diag : m;
    while (lo < hi) {  // the first rows `lo` and columns `diag - lo` are the first diag items
        long long mid = (lo + hi) / 2;
        if (rz[mid] <= cz[diag - 1 - mid]) lo = mid + 1;
        else hi = mid;
    }
    splits[u] = lo;
}

// Shared memory of a tile is indexed through pad(): a thread's items are consecutive, so the
// threads of a warp read words LAPLEX_ITEMS apart, which fall into a few banks for an even
// LAPLEX_ITEMS (into all 32 for an odd one). With LAPLEX_PAD 1, one spare word after every 32
// spreads them over all 32 banks for any LAPLEX_ITEMS; it costs registers and is off by default
// (see docs/gpu-validation.md).
#ifndef LAPLEX_PAD
#define LAPLEX_PAD 0
#endif
#ifndef LAPLEX_LEAN_PHASE1
#define LAPLEX_LEAN_PHASE1 0
#endif
// one spare word after every 32 words (a shared-memory layout against bank conflicts): the size
// of n words, and where word i lies
__host__ __device__ constexpr int skewed(int n) { return n + n / 32; }
__device__ __forceinline__ int skew(int i) { return i + (i >> 5); }
__host__ __device__ constexpr int padded(int n) { return LAPLEX_PAD ? skewed(n) : n; }
__device__ __forceinline__ int pad(int i) { return LAPLEX_PAD ? skew(i) : i; }

// Merged items from global memory, by value (the two sorted sides, rows i_lo .. i_hi - 1 and
// columns j_lo .. j_hi - 1; at least one side not empty): the first item at or after rows i and
// columns j, and the last item before them.
template <class R>
__device__ __forceinline__ R item_after(const R* rz, long long i, long long i_hi, const R* cz,
                                        long long j, long long j_hi) {
    if (i >= i_hi) return cz[j];
    if (j >= j_hi) return rz[i];
    return rz[i] <= cz[j] ? rz[i] : cz[j];
}
template <class R>
__device__ __forceinline__ R item_before(const R* rz, long long i_lo, long long i, const R* cz,
                                         long long j_lo, long long j) {
    if (i <= i_lo) return cz[j - 1];
    if (j <= j_lo) return rz[i - 1];
    return rz[i - 1] >= cz[j - 1] ? rz[i - 1] : cz[j - 1];
}

// One result of a tile's rows: each thread puts its rows' values in shared memory (its slots u
// with bit u of `rows` set hold its rows first_row, first_row + 1, ..., numbered 0 .. nr-1 within
// the tile), then the block writes them in sorted row order, to the original row through rperm.
// `out` is a kernel argument, the same for the whole block. Without rperm, thread tid writes rows
// tid + q LAPLEX_BLOCK: one base pointer, a fixed stride, no loop bound.
template <class V, class I>
__device__ __forceinline__ void write_rows(V* __restrict__ out, const V (&value)[LAPLEX_ITEMS],
                                           const unsigned rows, const int first_row, V* s_out,
                                           const int nr, const long long i0,
                                           const I* __restrict__ rperm, const int k, const int col,
                                           const int tid) {
    if (!out) return;
    __syncthreads();  // s_out is free: every thread has read what it held before
    int r = first_row;
#pragma unroll
    for (int u = 0; u < LAPLEX_ITEMS; ++u) {
        if ((rows >> u) & 1u) {
            s_out[pad(r)] = value[u];
            ++r;
        }
    }
    __syncthreads();
    const int rows_left = nr - tid;  // slot q holds a row while q LAPLEX_BLOCK < rows_left
    if (rperm) {
        const I* __restrict__ pt = rperm + (i0 + tid);
#pragma unroll
        for (int q = 0; q < LAPLEX_ITEMS; ++q)
            if (q * LAPLEX_BLOCK < rows_left)
                out[(long long)pt[q * LAPLEX_BLOCK] * k + col] = s_out[pad(tid + q * LAPLEX_BLOCK)];
    } else {
        V* __restrict__ o = out + ((i0 + tid) * k + col);
        const long long stride = (long long)LAPLEX_BLOCK * k;
#pragma unroll
        for (int q = 0; q < LAPLEX_ITEMS; ++q)
            if (q * LAPLEX_BLOCK < rows_left) o[q * stride] = s_out[pad(tid + q * LAPLEX_BLOCK)];
    }
}

// The decays into N consecutive slots z[0..N-1] of one thread (prev: the item before the first;
// next: the item after the last; dz[N], e[N] step into the next thread's first item). Spare slots
// repeat the last item's value with a zero value: identity steps.
template <int N, class D, class R>
__device__ __forceinline__ void slot_decays(const R prev, const R (&z)[N], const R next,
                                            const R s_re, const R s_im, D (&e)[N + 1],
                                            R (&dz)[N + 1]) {
#pragma unroll
    for (int u = 0; u <= N; ++u) {
        dz[u] = (u < N ? z[u] : next) - (u == 0 ? prev : z[u - 1]);
        decay(e[u], dz[u], s_re, s_im);
    }
}

// The thread's maps over its slots: forward (left to right) and backward (right to left; with
// TIES, the tie run too).
template <int N, bool MOMENT, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> forward_map(const D (&e)[N + 1], const R (&dz)[N + 1],
                                                    const V (&val)[N]) {
    Agg<D, R, V> f;
    set_identity(f);
#pragma unroll
    for (int u = 0; u < N; ++u) f = compose<MOMENT, false>(f, step_map(e[u], dz[u], val[u], false));
    return f;
}
template <int N, bool MOMENT, bool TIES, class D, class R, class V>
__device__ __forceinline__ Agg<D, R, V> backward_map(const D (&e)[N + 1], const R (&dz)[N + 1],
                                                     const V (&val)[N]) {
    Agg<D, R, V> g;
    set_identity(g);
#pragma unroll
    for (int u = N - 1; u >= 0; --u)
        g = compose<MOMENT, TIES>(g, step_map(e[u + 1], dz[u + 1], val[u], true));
    return g;
}

// The items just before and just after a tile (the first item itself before the first tile, the
// last one after the last tile). Square: the tile is anchors t0 .. t0 + len - 1 of cz.
template <class R>
__device__ __forceinline__ R tile_halo(const bool after, const R* rz, const R* cz,
                                       const long long m, const long long n, const bool square,
                                       const long long i0, const long long j0, const int nr,
                                       const int nc) {
    if (square) {
        if (after) return j0 + nc < n ? cz[j0 + nc] : cz[n - 1];
        return j0 > 0 ? cz[j0 - 1] : cz[0];
    }
    if (after) {
        const long long i1 = i0 + nr, j1 = j0 + nc;
        return i1 == m && j1 == n ? item_before(rz, 0, m, cz, 0, n)
                                  : item_after(rz, i1, m, cz, j1, n);
    }
    return i0 + j0 == 0 ? item_after(rz, 0, m, cz, 0, n) : item_before(rz, 0, i0, cz, 0, j0);
}

// Compositions of one map per thread of a block of THREADS threads, in thread order: f forward,
// g backward (from the last thread to the first); the results are thread 0's (undefined in the
// others). Warps reduce by shuffles (log2(32) steps), thread 0 composes the warps' totals. One
// block barrier.
template <int THREADS, bool MOMENT, class D, class R, class V>
__device__ __forceinline__ void block_reduce(Agg<D, R, V>& f, Agg<D, R, V>& g) {
    typedef Agg<D, R, V> A;
    constexpr int WIDTH = ScanShape<THREADS>::WIDTH, WARPS = ScanShape<THREADS>::WARPS;
    __shared__ A s_f[WARPS], s_g[WARPS];
    // lane l then holds the composition of lanes l .. l + 2 delta - 1 where l is a multiple of
    // 2 delta (lane 0 at the end: the whole warp); the other lanes' values are not used
#pragma unroll
    for (int delta = 1; delta < WIDTH; delta *= 2) {
        const A fo = shuffle<MOMENT, false>(f, delta, true);
        const A go = shuffle<MOMENT, true>(g, delta, true);
        f = compose<MOMENT, false>(f, fo);
        g = compose<MOMENT>(go, g);
    }
    if (threadIdx.x % 32 == 0) {
        s_f[threadIdx.x / 32] = f;
        s_g[threadIdx.x / 32] = g;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
#pragma unroll
        for (int i = 1; i < WARPS; ++i) {
            f = compose<MOMENT, false>(f, s_f[i]);
            g = compose<MOMENT>(s_g[i], g);
        }
    }
}

// Lean phase 1 (LAPLEX_LEAN_PHASE1): a tile's two maps need only its columns. A row adds nothing,
// and the decays across it multiply to the decay across the gap between the columns around it
// (maps compose dz additively and the tie flag as "every gap zero"). So each thread composes a
// contiguous run of the tile's nc columns (ceil(nc / LAPLEX_BLOCK) of them, read straight from
// global memory: no shared memory, no merge), and the block reduces the runs' maps in order. The
// runs start at the item before the tile and end at the item after it; thread 0 composes on the
// gaps between the outer columns and the tile's own first and last items and writes the tile's
// maps. Per column: one decay and a step of each map; per tile: one block reduction of both.
template <bool MOMENT, class R, class D, class B, class V, class I>
__device__ __forceinline__ void lean_tile_maps(
    const R* __restrict__ rz, const R* __restrict__ cz, const I* __restrict__ cperm,
    const B* __restrict__ b, const int k, const int col, const long long m, const long long n,
    const bool square, const long long i0, const long long j0, const int nr, const int nc,
    B* __restrict__ stage_col, const R s_re, const R s_im, const int tid,
    Agg<D, R, V>* __restrict__ fwd, Agg<D, R, V>* __restrict__ bwd) {
    typedef Agg<D, R, V> A;
    const int run = (nc + LAPLEX_BLOCK - 1) / LAPLEX_BLOCK;  // at most LAPLEX_ITEMS
    const int a = tid * run < nc ? tid * run : nc;
    const int cnt = nc - a < run ? nc - a : run;
    const long long c0 = j0 + a;
    R z[LAPLEX_ITEMS];
    B bv[LAPLEX_ITEMS];
#pragma unroll
    for (int u = 0; u < LAPLEX_ITEMS; ++u) {  // every load before the first use
        if (u < cnt) {
            z[u] = cz[c0 + u];
            bv[u] = b[(cperm ? (long long)cperm[c0 + u] : c0 + u) * k + col];
        }
    }
    R prev = R(0), next = R(0);  // the items before and after the run
    if (cnt > 0) {
        prev = a > 0 ? cz[c0 - 1] : tile_halo(false, rz, cz, m, n, square, i0, j0, nr, nc);
        next = a + cnt < nc ? cz[c0 + cnt] : tile_halo(true, rz, cz, m, n, square, i0, j0, nr, nc);
    }
    if (stage_col) {  // gathered values in sorted order, for phase 3
#pragma unroll
        for (int u = 0; u < LAPLEX_ITEMS; ++u)
            if (u < cnt) stage_col[a + u] = bv[u];
    }
    // the run's maps: forward from prev through its columns, backward from next through them
    A f, g;
    set_identity(f);
    set_identity(g);
    D e[LAPLEX_ITEMS + 1];
    R dz[LAPLEX_ITEMS + 1];
    V val[LAPLEX_ITEMS];
    R last = prev;
#pragma unroll
    for (int u = 0; u < LAPLEX_ITEMS; ++u) {
        if (u < cnt) {
            dz[u] = z[u] - last;
            decay(e[u], dz[u], s_re, s_im);
            assign(val[u], bv[u]);
            f = compose<MOMENT, false>(f, step_map(e[u], dz[u], val[u], false));
            last = z[u];
        }
    }
    // the gap after the run's last column (slot indices stay compile-time: no local memory)
    D e_next;
    const R dz_next = next - last;
    if (cnt > 0) decay(e_next, dz_next, s_re, s_im);
#pragma unroll
    for (int u = LAPLEX_ITEMS - 1; u >= 0; --u) {
        if (u < cnt) {
            const bool end = u + 1 == cnt;
            g = compose<MOMENT>(
                g, step_map(end ? e_next : e[u + 1], end ? dz_next : dz[u + 1], val[u], true));
        }
    }
    block_reduce<LAPLEX_BLOCK, MOMENT>(f, g);
    if (tid != 0) return;
    // the gaps from the last column to the tile's last item and from the first column to its
    // first item (without columns: from the items around the tile)
    const R end0 = square ? cz[j0] : item_after(rz, i0, i0 + nr, cz, j0, j0 + nc);
    const R end1 = square ? cz[j0 + nc - 1] : item_before(rz, i0, i0 + nr, cz, j0, j0 + nc);
    const R first = nc > 0 ? z[0] : tile_halo(true, rz, cz, m, n, square, i0, j0, nr, nc);
    const R final =
        nc > 0 ? cz[j0 + nc - 1] : tile_halo(false, rz, cz, m, n, square, i0, j0, nr, nc);
    V zero;
    set_zero(zero);
    D gap;
    decay(gap, end1 - final, s_re, s_im);
    f = compose<MOMENT, false>(f, step_map(gap, end1 - final, zero, false));
    decay(gap, first - end0, s_re, s_im);
    g = compose<MOMENT>(g, step_map(gap, first - end0, zero, true));
    *fwd = f;
    *bwd = g;
}

// A thread's items of a tile, merged without branches from its rows ii.. (values in s_z) and its
// columns jj.. (values at s_z[cb + jj], operands at s_b[jj]), a row first on ties; each side ends
// with +inf in s_z. Each slot compares the next row and the next column, takes the smaller, and
// reads the next of both sides. FULL (a whole tile): every slot holds an item. Otherwise slots
// past the thread's cnt items repeat the last item's value with no operand and no row, so their
// steps are identity maps. Bit u of `rows` is set when slot u is a row (rows ii, ii + 1, ...);
// `next` is the value of the item after the last slot (+inf past the tile's end).
template <bool FULL, class R, class V>
__device__ __forceinline__ void merge_items(const R* s_z, const V* s_b, const int cb, int ii,
                                            int jj, const int cnt, const R prev,
                                            R (&z)[LAPLEX_ITEMS], V (&val)[LAPLEX_ITEMS],
                                            unsigned& rows, R& next) {
    R zr = s_z[pad(ii)], zc = s_z[pad(cb + jj)];
    V vc = s_b[pad(jj)];  // past the columns: a spare word, never taken (+inf in zc)
    R last = prev;
    rows = 0;
#pragma unroll
    for (int u = 0; u < LAPLEX_ITEMS; ++u) {
        const bool live = FULL || u < cnt;
        const bool take_row = zr <= zc;
        const bool is_row = live && take_row, is_col = live && !take_row;
        z[u] = is_row ? zr : is_col ? zc : last;
        set_zero(val[u]);
        if (is_col) val[u] = vc;
        rows |= (unsigned)is_row << u;
        ii += is_row;
        jj += is_col;
        zr = s_z[pad(ii)];
        zc = s_z[pad(cb + jj)];
        vc = s_b[pad(jj)];
        if (!FULL) last = z[u];
    }
    next = zr <= zc ? zr : zc;
}

// The scan kernel's minimum of resident blocks per multiprocessor (0: the compiler's choice).
// By default 8 for the real float32 product without moments (64 registers, which that instance fits
// without spilling; docs/gpu-validation.md), the compiler's choice for the others, which would
// spill at 64.
template <class R, class D, class V, bool MOMENT>
__host__ __device__ constexpr int tile_min_blocks() {
    return LAPLEX_TILE_MIN_BLOCKS >= 0                                     ? LAPLEX_TILE_MIN_BLOCKS
           : sizeof(R) == 4 && sizeof(D) == 4 && sizeof(V) == 4 && !MOMENT ? 8
                                                                           : 0;
}

template <class R, class D, class B, class V, class I, bool MOMENT>
__global__ void __launch_bounds__(LAPLEX_BLOCK, (tile_min_blocks<R, D, V, MOMENT>()))
    laplex_tiles(const int phase, const R* __restrict__ rz, const R* __restrict__ cz,
                 const I* __restrict__ rperm, const I* __restrict__ cperm,
                 const long long* __restrict__ splits, unsigned short* __restrict__ thread_rows,
                 const int rows_known, const long long m, const long long n, const int square,
                 const R s_re, const R s_im, const B* __restrict__ b, const int k,
                 B* __restrict__ stage, V* __restrict__ out_sum, V* __restrict__ out_signed,
                 V* __restrict__ out_moment, Agg<D, R, V>* __restrict__ fwd,
                 Agg<D, R, V>* __restrict__ bwd) {
    typedef Agg<D, R, V> A;
    static_assert(sizeof(A) == sizeof(D) + 3 * sizeof(V) + 2 * sizeof(R),
                  "the host sizes the tile maps as sizeof(D) + 3 sizeof(V) + 2 sizeof(R)");
    // rows of the tile, +inf, its columns, +inf (square: its anchors); the infinities end each
    // side for the merge (anchors are finite)
    __shared__ R s_z[padded(LAPLEX_TILE + 2)];
    __shared__ V s_b[padded(LAPLEX_TILE + 1)];  // the tile's column values (+ a spare word)
    __shared__ R s_halo[2];  // the values of the items just before and just after the tile

    const long long tiles = gridDim.x;
    const long long tile = blockIdx.x;
    const int col = blockIdx.y;
    const int tid = threadIdx.x;
    const long long total = square ? n : m + n;
    const long long t0 = tile * LAPLEX_TILE;
    const int len = (int)(total - t0 < LAPLEX_TILE ? total - t0 : LAPLEX_TILE);
    long long i0, j0;
    int nr, nc;
    if (square) {
        i0 = j0 = t0;
        nr = nc = len;
    } else {
        i0 = splits[tile];
        j0 = t0 - i0;
        nr = (int)(splits[tile + 1] - i0);
        nc = len - nr;
    }
    const long long slot = (long long)col * tiles + tile;
    if (LAPLEX_LEAN_PHASE1 && phase == 1) {
        lean_tile_maps<MOMENT>(rz, cz, cperm, b, k, col, m, n, square, i0, j0, nr, nc,
                               cperm && stage ? stage + (long long)col * n + j0 : nullptr, s_re,
                               s_im, tid, fwd + slot, bwd + slot);
        return;
    }
    const int cb = nr + 1;  // where the columns start in s_z (not square)

    // phase 3: the states entering this tile (phase 2's output), loaded now so that their latency
    // overlaps the tile's loads below instead of adding to it
    A carry_f, carry_g;
    if (phase == 3) {
        carry_f = fwd[slot];
        carry_g = bwd[slot];
    }

    // The tile's anchors into s_z (its rows, then its columns from cb on; square: its anchors)
    // and its column values into s_b. Rows and columns take separate slots (slot q of thread tid:
    // row or column tid + q LAPLEX_BLOCK, from one base pointer each), and every thread issues all
    // of its loads before its first store, so a tile waits for one memory latency, not one per
    // item of a thread.
    {  // (the loads' temporaries end with this block)
        const long long c0 = j0 + tid;
        const bool staged = cperm && stage && phase == 3;  // gathered by phase 1, read in order
        const bool stage_now = cperm && stage && phase == 1;
        B* __restrict__ stage_col = stage ? stage + ((long long)col * n + c0) : nullptr;
        const R* __restrict__ rzt = rz + (i0 + tid);
        const R* __restrict__ czt = cz + c0;
        const int rows_left = square ? 0 : nr - tid;  // square: the anchors are the columns
        const int cols_left = nc - tid;
        const int cbt = (square ? 0 : cb) + tid;  // the thread's first column in s_z
        R zr[LAPLEX_ITEMS], zc[LAPLEX_ITEMS];
        B bv[LAPLEX_ITEMS];
#pragma unroll
        for (int q = 0; q < LAPLEX_ITEMS; ++q) {
            if (q * LAPLEX_BLOCK < rows_left) zr[q] = rzt[q * LAPLEX_BLOCK];
            if (q * LAPLEX_BLOCK < cols_left) zc[q] = czt[q * LAPLEX_BLOCK];
        }
        // the column values: in order, staged by phase 1, or gathered (one branch per tile)
        if (staged) {
#pragma unroll
            for (int q = 0; q < LAPLEX_ITEMS; ++q)
                if (q * LAPLEX_BLOCK < cols_left) bv[q] = stage_col[q * LAPLEX_BLOCK];
        } else if (cperm) {
            const I* __restrict__ cpt = cperm + c0;
#pragma unroll
            for (int q = 0; q < LAPLEX_ITEMS; ++q)
                if (q * LAPLEX_BLOCK < cols_left)
                    bv[q] = b[(long long)cpt[q * LAPLEX_BLOCK] * k + col];
        } else {
            const B* __restrict__ bt = b + (c0 * k + col);
            const long long stride = (long long)LAPLEX_BLOCK * k;
#pragma unroll
            for (int q = 0; q < LAPLEX_ITEMS; ++q)
                if (q * LAPLEX_BLOCK < cols_left) bv[q] = bt[q * stride];
        }
#pragma unroll
        for (int q = 0; q < LAPLEX_ITEMS; ++q) {
            if (q * LAPLEX_BLOCK < rows_left) s_z[pad(tid + q * LAPLEX_BLOCK)] = zr[q];
            if (q * LAPLEX_BLOCK < cols_left) {
                s_z[pad(cbt + q * LAPLEX_BLOCK)] = zc[q];
                assign(s_b[pad(tid + q * LAPLEX_BLOCK)], bv[q]);
                if (stage_now) stage_col[q * LAPLEX_BLOCK] = bv[q];
            }
        }
    }
    // the thread's first row when an earlier product found it (loaded after the tile's loads, at
    // their register peak, and before the barrier, which hides its latency)
    const long long thread_slot = tile * LAPLEX_BLOCK + tid;
    const int known_row = rows_known && !square ? (int)thread_rows[thread_slot] : 0;
    if (tid == 0) {
        s_halo[0] = tile_halo(false, rz, cz, m, n, square, i0, j0, nr, nc);
        s_halo[1] = tile_halo(true, rz, cz, m, n, square, i0, j0, nr, nc);
        if (!square) {
            s_z[pad(nr)] = infinity<R>();
            s_z[pad(cb + nc)] = infinity<R>();
        }
    }
    __syncthreads();

    // this thread's items: d0 .. d0 + cnt - 1 of the tile, merged from rows ii.. and columns jj..
    const int d0 = tid * LAPLEX_ITEMS < len ? tid * LAPLEX_ITEMS : len;
    const int cnt = len - d0 < LAPLEX_ITEMS ? len - d0 : LAPLEX_ITEMS;
    // (merge path: the first d0 items of the tile are its first ii rows and jj columns; the plan
    // keeps each thread's ii from the first product on, thread_rows, so later ones skip the search)
    int ii, jj;
    if (square) {
        ii = jj = d0;
    } else if (rows_known) {
        ii = known_row;
        jj = d0 - ii;
    } else {
        int lo = d0 > nc ? d0 - nc : 0, hi = d0 < nr ? d0 : nr;
        while (lo < hi) {
            const int mid = (int)((unsigned)(lo + hi) >> 1);
            if (s_z[pad(mid)] <= s_z[pad(cb + d0 - 1 - mid)]) lo = mid + 1;
            else hi = mid;
        }
        ii = lo;
        jj = d0 - lo;
        if (thread_rows && col == 0) thread_rows[thread_slot] = (unsigned short)ii;
    }
    R prev;  // value of the item before this thread's first
    if (d0 == 0) {
        prev = s_halo[0];
    } else if (square) {
        prev = s_z[pad(d0 - 1)];
    } else {
        prev = ii > 0 ? s_z[pad(ii - 1)] : s_z[pad(cb + jj - 1)];
        if (ii > 0 && jj > 0 && s_z[pad(cb + jj - 1)] > prev) prev = s_z[pad(cb + jj - 1)];
    }

    // The thread's items (merge_items; square: its anchors, each a row and a column), and the
    // value of the item after its last (none for a thread without items)
    R z[LAPLEX_ITEMS];
    V val[LAPLEX_ITEMS];  // the operand of each column item, zero for a row or a spare slot
    unsigned rows;        // bit u: slot u is a row (rows ii, ii + 1, ... relative to i0)
    R next;
    if (square) {
        R last = prev;
        rows = (1u << cnt) - 1u;
#pragma unroll
        for (int u = 0; u < LAPLEX_ITEMS; ++u) {
            const bool live = u < cnt;
            z[u] = live ? s_z[pad(d0 + u)] : last;
            set_zero(val[u]);
            if (live) val[u] = s_b[pad(d0 + u)];
            last = z[u];
        }
        next = cnt == 0 ? prev : d0 + cnt < len ? s_z[pad(d0 + cnt)] : s_halo[1];
    } else {
        if (len == LAPLEX_TILE)
            merge_items<true>(s_z, s_b, cb, ii, jj, cnt, prev, z, val, rows, next);
        else merge_items<false>(s_z, s_b, cb, ii, jj, cnt, prev, z, val, rows, next);
        if (d0 + cnt >= len) next = cnt == 0 ? prev : s_halo[1];
    }

    // decays into each slot from the one before it, the thread's maps and their block scans. The
    // tie run of the backward maps serves the signed sum only (and the tile maps of a full phase 1,
    // which a later phase 3 may use for it).
    D e[LAPLEX_ITEMS + 1];
    R dz[LAPLEX_ITEMS + 1];
    slot_decays<LAPLEX_ITEMS>(prev, z, next, s_re, s_im, e, dz);
    unsigned gaps = 0;  // bit u: dz[u] != 0 (the signed walk's tie test, in one register)
#pragma unroll
    for (int u = 0; u <= LAPLEX_ITEMS; ++u) gaps |= (unsigned)(dz[u] != R(0)) << u;
    const bool ties = phase == 1 || out_signed != nullptr;
    A f_total, g_total, g_before;  // (each scan instance runs once: no barrier to free its words)
    const A f_before = block_scan<LAPLEX_BLOCK, MOMENT, false, false, false>(
        forward_map<LAPLEX_ITEMS, MOMENT>(e, dz, val), f_total);
    if (ties)
        g_before = block_scan<LAPLEX_BLOCK, MOMENT, true, true, false>(
            backward_map<LAPLEX_ITEMS, MOMENT, true>(e, dz, val), g_total);
    else
        g_before = block_scan<LAPLEX_BLOCK, MOMENT, true, false, false>(
            backward_map<LAPLEX_ITEMS, MOMENT, false>(e, dz, val), g_total);
    if (phase == 1) {
        if (tid == 0) {
            fwd[slot] = f_total;
            bwd[slot] = g_total;
        }
        return;
    }

    // phase 3: the states entering this thread's items from each side, then the two walks (a
    // row's operand is zero, so every slot adds its value)
    const A fs = compose<MOMENT, false>(carry_f, f_before);
    const A gs =
        ties ? compose<MOMENT>(carry_g, g_before) : compose<MOMENT, false>(carry_g, g_before);
    V F = fs.p, F1 = fs.q;
    V left[LAPLEX_ITEMS], left1[LAPLEX_ITEMS];
#pragma unroll
    for (int u = 0; u < LAPLEX_ITEMS; ++u) {
        if (MOMENT) F1 = e[u] * (F1 + dz[u] * F);
        F = e[u] * F;
        left[u] = F;
        left1[u] = F1;
        F = F + val[u];
    }
    const bool want_signed = out_signed != nullptr;  // the tie run T serves the signed sum only
    V G = gs.p, G1 = gs.q, T = gs.t;
    V signed_[LAPLEX_ITEMS];
#pragma unroll
    for (int u = LAPLEX_ITEMS - 1; u >= 0; --u) {
        if (MOMENT) G1 = e[u + 1] * (G1 + dz[u + 1] * G);
        G = e[u + 1] * G + val[u];
        if (want_signed) {
            if ((gaps >> (u + 1)) & 1u) set_zero(T);
            T = T + val[u];
            signed_[u] = (left[u] - G) + T;
        }
        left[u] = left[u] + G;     // now the sum
        left1[u] = left1[u] + G1;  // now the moment
    }
    // the tile's rows are consecutive in sorted order: stage each result in s_b (the column
    // values are in registers now) and write it out in row order, coalesced
    write_rows(out_sum, left, rows, ii, s_b, nr, i0, rperm, k, col, tid);
    write_rows(out_signed, signed_, rows, ii, s_b, nr, i0, rperm, k, col, tid);
    if (MOMENT) write_rows(out_moment, left1, rows, ii, s_b, nr, i0, rperm, k, col, tid);
}

// Phase 2: the state entering every tile, from the tile maps of phase 1, in place (a state is a
// map applied to zero: its p, q, t). The maps of one (column, direction) compose in the order of
// their positions q = 0 .. count-1: map q, or map count-1-q for the backward direction when
// `reverse`. Block (chunk, column, direction) takes the positions [chunk * span, chunk * span +
// span), a contiguous run per thread:
//   scan = 0: writes the composition of its maps to its total, totals[column * chunks + chunk];
//   scan = 1: replaces each of its maps by the state entering it, starting from its total (the
//             state entering the chunk, once the totals themselves are scanned) or, without totals,
//             from zero.
// Up to `span` tiles take one launch of one block per (column, direction); more take three
// (totals, a scan of the totals, the scan) so that the carries use the whole GPU.
template <class R, class D, class V, bool MOMENT>
__global__ void __launch_bounds__(LAPLEX_CARRY_BLOCK)
    laplex_carries(const long long count, const long long span, const int reverse, const int scan,
                   Agg<D, R, V>* __restrict__ fwd, Agg<D, R, V>* __restrict__ bwd,
                   Agg<D, R, V>* __restrict__ fwd_totals, Agg<D, R, V>* __restrict__ bwd_totals) {
    typedef Agg<D, R, V> A;
    const bool backward = blockIdx.z == 1;
    const bool flip = backward && reverse;
    A* maps = (backward ? bwd : fwd) + (long long)blockIdx.y * count;
    A* total = backward ? bwd_totals : fwd_totals;
    if (total) total += (long long)blockIdx.y * gridDim.x + blockIdx.x;
    const int tid = threadIdx.x;
    const long long b0 = (long long)blockIdx.x * span;
    const long long b1 = b0 + span < count ? b0 + span : count;
    const long long per = (b1 - b0 + LAPLEX_CARRY_BLOCK - 1) / LAPLEX_CARRY_BLOCK;
    const long long start = b0 + tid * per < b1 ? b0 + tid * per : b1;
    const long long stop = start + per < b1 ? start + per : b1;
    A acc;
    set_identity(acc);
    for (long long q = start; q < stop; ++q)
        acc = compose<MOMENT>(acc, maps[flip ? count - 1 - q : q]);
    A all;
    const A before = block_scan<LAPLEX_CARRY_BLOCK, MOMENT, false, true>(acc, all);
    if (!scan) {
        if (tid == 0) *total = all;
        return;
    }
    A state = total ? compose<MOMENT>(*total, before) : before;
    for (long long q = start; q < stop; ++q) {
        const long long t = flip ? count - 1 - q : q;
        const A map = maps[t];
        maps[t] = state;
        state = compose<MOMENT>(state, map);
    }
}

// The order of a plan: by value, ties by original index (NumPy's stable argsort; the radix sort's
// order). Whether (va, pa) sorts before (vb, pb).
template <class R, class I>
__device__ __forceinline__ bool before(const R va, const I pa, const R vb, const I pb) {
    return va < vb || (va == vb && pa < pb);
}

// Whether item a sorts before item b in a window: by value and then index, past-the-end items
// (index -1) last.
template <class R, class I>
__device__ __forceinline__ bool precedes(const R va, const I pa, const R vb, const I pb) {
    return pa >= 0 && (pb < 0 || before(va, pa, vb, pb));
}

// A window in shared memory is skewed (skew(), skewed()), so that the threads of a warp reading
// their runs (LAPLEX_SORT_ITEMS apart) hit 32 different banks.

// One compare-exchange of a window in shared memory: items lo < hi into ascending (else descending)
// order.
template <class R, class I>
__device__ __forceinline__ void exchange(R* s_v, I* s_p, const int lo, const int hi,
                                         const bool ascending) {
    const R vl = s_v[skew(lo)], vh = s_v[skew(hi)];
    const I pl = s_p[skew(lo)], ph = s_p[skew(hi)];
    if (precedes(vh, ph, vl, pl) != ascending) return;
    s_v[skew(lo)] = vh;
    s_v[skew(hi)] = vl;
    s_p[skew(lo)] = ph;
    s_p[skew(hi)] = pl;
}

// Items a, b of a run into order.
template <class R, class I> __device__ __forceinline__ void order_pair(R& va, I& pa, R& vb, I& pb) {
    const bool swap = precedes(vb, pb, va, pa);
    const R v = swap ? vb : va;
    const I p = swap ? pb : pa;
    vb = swap ? va : vb;
    pb = swap ? pa : pb;
    va = v;
    pa = p;
}

// The comparators of a sorting network for K items, computed at compile time: Batcher's odd-even
// merge sort (19 comparators for 8 items; K a power of two), else odd-even transposition.
template <int K> struct SortNetwork {
    int size = 0;
    int lo[K * K] = {}, hi[K * K] = {};
    __host__ __device__ constexpr SortNetwork() {
        if ((K & (K - 1)) == 0) {  // (the iterative form of Batcher's network)
            for (int q = 1; q < K; q += q)
                for (int k = q; k >= 1; k /= 2)
                    for (int j = k % q; j + k < K; j += 2 * k)
                        for (int i = 0; i < k && i + j + k < K; ++i)
                            if ((i + j) / (2 * q) == (i + j + k) / (2 * q)) add(i + j, i + j + k);
        } else {
            for (int r = 0; r < K; ++r)
                for (int i = r & 1; i + 1 < K; i += 2) add(i, i + 1);
        }
    }
    __host__ __device__ constexpr void add(const int a, const int b) {
        lo[size] = a;
        hi[size] = b;
        ++size;
    }
};

// A thread's run of K items in registers into order (the network's indices are constants once
// its loop is unrolled, so the run stays in registers).
template <int K, class R, class I> __device__ __forceinline__ void sort_run(R (&v)[K], I (&p)[K]) {
    constexpr SortNetwork<K> net;
#pragma unroll
    for (int c = 0; c < net.size; ++c)
        order_pair(v[net.lo[c]], p[net.lo[c]], v[net.hi[c]], p[net.hi[c]]);
}

// One side of a merge-split of the sorted runs a0 .. b0 - 1 (A) and b0 .. b0 + K - 1 (B) of a window
// of W in shared memory into a thread's registers: the K first items (front) or the K last (back).
// Each side's head is in registers; a step takes the first (last) of the two heads and reads the
// next item of that side only. Within K steps neither side runs out (taking all K of one side is
// the last step), so only the reads after the last step go past a run: clamped into the window,
// never used. On equal items (past-the-end ones) A counts as first. Both sides run the same
// instructions (the two threads of a pair are in one warp); the back collects its items last
// first and reverses them at the end.
template <int K, int W, class R, class I>
__device__ __forceinline__ void merge_half(const bool front, const R* s_v, const I* s_p,
                                           const int a0, const int b0, R (&v)[K], I (&p)[K]) {
    const int step = front ? 1 : -1;
    int i = front ? a0 : b0 - 1, j = front ? b0 : b0 + K - 1;
    R va = s_v[skew(i)], vb = s_v[skew(j)];
    I pa = s_p[skew(i)], pb = s_p[skew(j)];
    R tv[K];
    I tp[K];
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const bool take_b = precedes(vb, pb, va, pa) == front;
        tv[c] = take_b ? vb : va;
        tp[c] = take_b ? pb : pa;
        i += take_b ? 0 : step;
        j += take_b ? step : 0;
        int next = take_b ? j : i;
        next = next < 0 ? 0 : next < W ? next : W - 1;
        const R vn = s_v[skew(next)];
        const I pn = s_p[skew(next)];
        va = take_b ? va : vn;
        pa = take_b ? pa : pn;
        vb = take_b ? vn : vb;
        pb = take_b ? pn : pb;
    }
#pragma unroll
    for (int u = 0; u < K; ++u) {
        v[u] = front ? tv[u] : tv[K - 1 - u];
        p[u] = front ? tp[u] : tp[K - 1 - u];
    }
}

// Sort windows of LAPLEX_SORT_WINDOW values (with their permutation) starting at `offset`, in
// shared memory, by value and then index (a total order, the order of a fresh plan). Each thread
// sorts a run of LAPLEX_SORT_ITEMS (K) items in registers; then rounds of merge-split: the pairs of
// neighbouring runs (even-odd, then odd-even) merge, the left run keeping the K first items and the
// right run the K last, until an even and an odd round change nothing. A run moves K places per
// round, so items that moved d places take about d / K rounds (docs/scripts/window_sort_rounds.py
// models them for float32 anchors moved by one ulp across runs of ties). A window still out of
// order after LAPLEX_SORT_ROUNDS rounds goes through the bitonic network.
// Gather mode (src given, offset 0; the first pass of a plan repair): the window's values are first
// gathered, src[src_perm[a]] (src[a] without src_perm), and every window is written, sorted or not.
// In place (every later pass, at offsets alternating W/2 and 0, W = LAPLEX_SORT_WINDOW): each half
// of a window lies in one window of the pass before, which left it in order, so the window is in
// order when its middle seam is; only those that are not are loaded, sorted and written.
template <class R, class I>
__global__ void __launch_bounds__(LAPLEX_SORT_BLOCK)
    laplex_sort_windows(R* __restrict__ values, I* __restrict__ perm, const R* __restrict__ src,
                        const I* __restrict__ src_perm, const long long n, const long long offset) {
    constexpr int K = LAPLEX_SORT_ITEMS, T = LAPLEX_SORT_BLOCK, W = LAPLEX_SORT_WINDOW;
    __shared__ R s_v[skewed(W)];
    __shared__ I s_p[skewed(W)];
    const bool gather = src != nullptr;
    const long long start = offset + (long long)blockIdx.x * W;
    const int tid = threadIdx.x;
    const int len = (int)(n - start < W ? n - start : W);
    if (!gather) {
        const long long mid = start + W / 2;
        if (mid >= n || !before(values[mid], perm[mid], values[mid - 1], perm[mid - 1])) return;
    }
    // the window, coalesced; past-the-end items get index -1
#pragma unroll
    for (int q = 0; q < K; ++q) {
        const int u = tid + q * T;
        I p = I(-1);
        R v = R(0);
        if (u < len) {
            const long long a = start + u;
            p = gather ? (src_perm ? src_perm[a] : I(a)) : perm[a];
            v = gather ? src[p] : values[a];
        }
        s_p[skew(u)] = p;
        s_v[skew(u)] = v;
    }
    __syncthreads();
    R v[K];
    I p[K];
#pragma unroll
    for (int u = 0; u < K; ++u) {
        v[u] = s_v[skew(tid * K + u)];
        p[u] = s_p[skew(tid * K + u)];
    }
    sort_run<K>(v, p);
    int quiet = 0;  // rounds in a row without a change
    for (int round = 0;; ++round) {
        __syncthreads();  // every thread has read the runs of the round before
#pragma unroll
        for (int u = 0; u < K; ++u) {
            s_v[skew(tid * K + u)] = v[u];
            s_p[skew(tid * K + u)] = p[u];
        }
        __syncthreads();
        if (round == LAPLEX_SORT_ROUNDS || quiet == 2) break;  // the runs are in s_v, s_p
        // this round's pairs of runs: (2 j + parity, 2 j + 1 + parity)
        const bool left = ((tid + (round & 1)) & 1) == 0;
        const int partner = left ? tid + 1 : tid - 1;
        bool changed = false;
        if (partner >= 0 && partner < T) {
            const int a0 = (left ? tid : partner) * K, b0 = a0 + K;  // the pair's two runs
            changed = precedes(s_v[skew(b0)], s_p[skew(b0)], s_v[skew(b0 - 1)], s_p[skew(b0 - 1)]);
            if (changed) merge_half<K, W>(left, s_v, s_p, a0, b0, v, p);
        }
        quiet = __syncthreads_or(changed) ? 0 : quiet + 1;
    }
    if (quiet < 2) {  // not in order after LAPLEX_SORT_ROUNDS rounds: the bitonic network
        for (int size = 2; size <= W; size *= 2) {
            for (int stride = size / 2; stride > 0; stride /= 2) {
                for (int u = tid; u < W / 2; u += T) {
                    const int lo = 2 * u - (u & (stride - 1));
                    exchange(s_v, s_p, lo, lo + stride, (lo & size) == 0);
                }
                __syncthreads();
            }
        }
    }
#pragma unroll
    for (int q = 0; q < K; ++q) {
        const int u = tid + q * T;
        if (u < len) {
            values[start + u] = s_v[skew(u)];
            perm[start + u] = s_p[skew(u)];
        }
    }
}

// After a window pass every window is in order, so the plan is in order when every seam between
// neighbouring windows is: item p - 1 before item p (by value, then index) at
// p = offset + j * LAPLEX_SORT_WINDOW (j >= 1; also j = 0 when offset > 0, the seam with the
// untouched prefix). Sets *unsorted to 1 when one is not. Reads two items per window instead of
// the whole array.
template <class R, class I>
__global__ void laplex_window_seams(const R* __restrict__ values, const I* __restrict__ perm,
                                    const long long n, const long long offset,
                                    int* __restrict__ unsorted) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x + (offset > 0 ? 0 : 1);
    const long long p = offset + j * LAPLEX_SORT_WINDOW;
    if (p > 0 && p < n && before(values[p], perm[p], values[p - 1], perm[p - 1])) *unsorted = 1;
}

// ------------------------------------------------------------------------------------ snapshots
// dst = src converted to R (a widening or equal float type); counts[0] += the number of non-finite
// values (a - a is 0 exactly for a finite a, NaN otherwise) and counts[1] += the number of
// descents (src[i] < src[i - 1]; none: the anchors are in order and the plan skips its sort and
// its own check): the anchors' private copy, their validation and their order in one read (the
// item before each one is its neighbouring lane's, a cache hit). Grid-stride, four independent
// loads per thread and round.
template <class S, class R>
__global__ void laplex_snapshot(const S* __restrict__ src, R* __restrict__ dst, const long long n,
                                unsigned long long* __restrict__ counts) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    unsigned long long bad = 0, descents = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
        S a[4], before[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const long long j = i + u * stride;
            if (j < n) {
                a[u] = src[j];
                before[u] = j > 0 ? src[j - 1] : a[u];
            }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (i + u * stride < n) {
                bad += !(a[u] - a[u] == S(0));
                descents += a[u] < before[u];
                dst[i + u * stride] = R(a[u]);
            }
    }
    if (bad) atomicAdd(&counts[0], bad);
    if (descents) atomicAdd(&counts[1], descents);
}

// ------------------------------------------------------------------------------------ radix sort
// A stable LSD radix sort of finite floats with their permutation (the plan of fresh anchors):
// per 8-bit digit, laplex_radix_counts counts the digit in each tile of keys, the host scans
// those counts (digit-major, so the scan gives every (digit, tile) its end in the output), and
// laplex_radix_scatter ranks each tile stably and writes it there. 4 passes for float32 (8 for
// float64); per key and pass the keys are read twice and the permutation once, both written once;
// the keys come out sorted (no gather). The first pass takes the identity permutation without
// reading one.
#define LAPLEX_RADIX_DIGITS 256
#define LAPLEX_RADIX_WARPS (LAPLEX_RADIX_BLOCK / 32)

// A radix tile: LAPLEX_RADIX_ITEMS keys per thread for 8-byte (key, index) pairs, half as many for
// wider pairs (the tile passes through shared memory). The host sizes the counts by this.
template <class R, class I> struct RadixTile {
    static constexpr int ITEMS =
        sizeof(R) + sizeof(I) <= 8 ? LAPLEX_RADIX_ITEMS : LAPLEX_RADIX_ITEMS / 2;
    static constexpr int SIZE = LAPLEX_RADIX_BLOCK * ITEMS;
};

// the order-preserving unsigned key of a finite float (-0.0 as +0.0, as NumPy orders them)
template <class R> struct RadixKey;
template <> struct RadixKey<float> {
    typedef unsigned U;
    static __device__ __forceinline__ U of(float a) {
        U u = __float_as_uint(a);
        if (u == 0x80000000u) u = 0u;
        return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    }
};
template <> struct RadixKey<double> {
    typedef unsigned long long U;
    static __device__ __forceinline__ U of(double a) {
        U u = (U)__double_as_longlong(a);
        if (u == 0x8000000000000000ull) u = 0ull;
        return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
    }
};

template <class R> __device__ __forceinline__ int radix_digit(R a, int shift) {
    return (int)((RadixKey<R>::of(a) >> shift) & (LAPLEX_RADIX_DIGITS - 1));
}

// counts[d * tiles + tile]: how many keys of the tile have digit d (at bit `shift`). With
// `unsorted` given, also sets *unsorted to 1 when a key is below the one before it (the plan's
// "already sorted?" question answered from the same read as the first pass's counts).
template <class R, class I>
__global__ void __launch_bounds__(LAPLEX_RADIX_BLOCK)
    laplex_radix_counts(const R* __restrict__ keys, const long long n, const int shift,
                        I* __restrict__ counts, int* __restrict__ unsorted) {
    constexpr int TILE = RadixTile<R, I>::SIZE;
    __shared__ int s_count[LAPLEX_RADIX_DIGITS];
    const int tid = threadIdx.x;
    const long long tiles = gridDim.x;
    const long long start = (long long)blockIdx.x * TILE;
    const int len = (int)(n - start < TILE ? n - start : TILE);
    for (int d = tid; d < LAPLEX_RADIX_DIGITS; d += LAPLEX_RADIX_BLOCK) s_count[d] = 0;
    __syncthreads();
    bool descent = false;
    for (int u = tid; u < len; u += LAPLEX_RADIX_BLOCK) {
        const R a = keys[start + u];
        atomicAdd(&s_count[radix_digit(a, shift)], 1);
        if (unsorted && start + u > 0 && a < keys[start + u - 1]) descent = true;
    }
    const int any_descent = __syncthreads_or(descent);  // (and the counts are complete)
    for (int d = tid; d < LAPLEX_RADIX_DIGITS; d += LAPLEX_RADIX_BLOCK)
        counts[d * tiles + blockIdx.x] = I(s_count[d]);
    if (tid == 0 && any_descent) *unsorted = 1;
}

// One stable scatter pass: the tile's keys (and permutation, the identity when perm is null) go
// to keys_out/perm_out, where ends (the inclusive scan of laplex_radix_counts) puts them.
// Warp w owns a contiguous run of the tile and reads it in rounds of 32 consecutive keys (lane l
// of round j: key w·32·ITEMS + 32 j + l, coalesced). Each round ranks its keys within the warp:
// lanes with the same digit find each other (__match_any_sync); a key's rank is the warp's count
// of its digit so far plus its peers in lower lanes. Ranks follow input order, so equal digits keep
// their order. Per (digit, warp) counts then become the tile's ranks (digit-major, warps in order),
// the ranked tile is exchanged through shared memory, and each digit's run is written contiguously.
template <class R, class I>
__global__ void __launch_bounds__(LAPLEX_RADIX_BLOCK, 3)
    laplex_radix_scatter(const R* __restrict__ keys, const I* __restrict__ perm,
                         R* __restrict__ keys_out, I* __restrict__ perm_out, const long long n,
                         const int shift, const I* __restrict__ ends) {
    constexpr int T = LAPLEX_RADIX_BLOCK, W = LAPLEX_RADIX_WARPS, D = LAPLEX_RADIX_DIGITS;
    constexpr int K = RadixTile<R, I>::ITEMS, TILE = RadixTile<R, I>::SIZE;
    constexpr int GROUPS = 16, GROUP = D / GROUPS;  // the scan of the digit totals
    static_assert(T % 32 == 0 && T >= GROUPS, "whole warps, and one thread per digit group");
    static_assert(TILE < 65536 && K >= 1, "16-bit ranks");
    __shared__ unsigned short s_warp[D * W];  // per (digit, warp): count, then first rank in digit
    __shared__ int s_start[D + 1];            // first rank of each digit in the tile
    __shared__ int s_group[GROUPS];
    __shared__ long long s_base[D];  // output position of the tile's rank 0 of digit d
    __shared__ R s_key[TILE];
    __shared__ I s_perm[TILE];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const unsigned lower = (1u << lane) - 1u;  // lanes below this one
    const long long tiles = gridDim.x;
    const long long start = (long long)blockIdx.x * TILE;
    const int len = (int)(n - start < TILE ? n - start : TILE);
    for (int e = tid; e < D * W; e += T) s_warp[e] = 0;

    R key[K];
    I idx[K];
    int tag[K];  // digit (D past the end of the keys), then | rank within (digit, warp) << 16
    for (int j = 0; j < K; ++j) {
        const int u = warp * 32 * K + j * 32 + lane;
        tag[j] = D;
        if (u < len) {
            key[j] = keys[start + u];
            idx[j] = perm ? perm[start + u] : I(start + u);
            tag[j] = radix_digit(key[j], shift);
        }
    }
    __syncthreads();
    for (int j = 0; j < K; ++j) {
        const int d = tag[j];
        const unsigned peers = __match_any_sync(0xffffffffu, d);
        const int before = d < D ? s_warp[d * W + warp] : 0;
        __syncwarp();
        if (d < D && (peers & lower) == 0)  // the lowest of the peers counts them all
            s_warp[d * W + warp] = (unsigned short)(before + __popc(peers));
        __syncwarp();
        tag[j] = d | ((before + __popc(peers & lower)) << 16);
    }
    __syncthreads();
    // per digit: the warps' counts become their first ranks within the digit; digit totals
    for (int d = tid; d < D; d += T) {
        int run = 0;
        for (int w = 0; w < W; ++w) {
            const int c = s_warp[d * W + w];
            s_warp[d * W + w] = (unsigned short)run;
            run += c;
        }
        s_start[d] = run;
    }
    __syncthreads();
    // exclusive scan of the digit totals: GROUPS threads of GROUP digits each
    if (tid < GROUPS) {
        int sum = 0;
        for (int d = tid * GROUP; d < tid * GROUP + GROUP; ++d) sum += s_start[d];
        s_group[tid] = sum;
    }
    __syncthreads();
    if (tid < GROUPS) {
        int run = 0;
        for (int g = 0; g < tid; ++g) run += s_group[g];
        for (int d = tid * GROUP; d < tid * GROUP + GROUP; ++d) {
            const int c = s_start[d];
            s_start[d] = run;
            run += c;
        }
    }
    if (tid == 0) s_start[D] = len;
    __syncthreads();
    for (int d = tid; d < D; d += T)  // the digit's run of this tile ends at ends[d * tiles + tile]
        s_base[d] = (long long)ends[d * tiles + blockIdx.x] - s_start[d + 1];
    for (int j = 0; j < K; ++j) {
        const int d = tag[j] & 0xffff;
        if (d < D) {
            const int rank = s_start[d] + s_warp[d * W + warp] + (tag[j] >> 16);
            s_key[rank] = key[j];
            s_perm[rank] = idx[j];
        }
    }
    __syncthreads();
    for (int u = tid; u < len; u += T) {
        const R a = s_key[u];
        const long long p = s_base[radix_digit(a, shift)] + u;
        keys_out[p] = a;
        perm_out[p] = s_perm[u];
    }
}

}  // namespace laplex
