// LaplexGram on CUDA: the scalar Kalman filter of Σ = diag(w) K diag(w) + diag(u) as parallel scans.
//
// Over the anchors in sorted order (t = 0 .. n-1) the filter (laplexops/backends/_numba_filter.py
// and docs/math.md §7 derive it) has two kinds of recursion, and both compose associatively:
//
//   variance  P_t = (u φ² P_{t-1} + u q) / (w² φ² P_{t-1} + w² q + u)
//             the Möbius map of the non-negative matrix M_t = [[u φ², u q], [w² φ², w² q + u]]
//             acting on a homogeneous pair P = num / den; maps compose as matrix products, every
//             entry a sum of non-negative terms (no cancellation), rescaled by exact powers of two
//   affine    y_t = a_t y_{t-1} + b_t   (the mean pass, the solve's back substitution, the
//             sampler and both adjoint passes of the likelihood's gradient)
//
// (φ_t = 1 + em_t, q_t = -em_t (1 + φ_t), em_t = expm1(-s Δ_t), em_0 = -1: the first state has the
// stationary variance.) Each runs as a three-phase scan over tiles of LAPLEX_BLOCK *
// LAPLEX_ITEMS items, one block per tile (and per column of data: grid.y):
//   phase 1  the tile's items composed into one map (GRAM_REDUCE)
//   phase 2  gram_carries: the tile maps of each column scanned into the states entering the tiles
//   phase 3  the tile rescanned from its state, writing the outputs (GRAM_WRITE).
// Every scan starts from the state 0 (the pair (0, 1) for the variance). All arithmetic, the maps
// and the block partials are double. An affine scan runs forward or, with reverse = 1, from the
// last item to the first; its outputs are exclusive (the state entering each item). Work O(n k),
// bytes per pass: a tile's inputs twice, its outputs once.

#ifndef LAPLEX_BLOCK
#define LAPLEX_BLOCK 128
#endif
#ifndef LAPLEX_ITEMS
#define LAPLEX_ITEMS 9
#endif
#ifndef LAPLEX_CARRY_BLOCK
#define LAPLEX_CARRY_BLOCK 256
#endif
#define GRAM_TILE (LAPLEX_BLOCK * LAPLEX_ITEMS)
static_assert((LAPLEX_BLOCK & (LAPLEX_BLOCK - 1)) == 0, "a block's sum halves it (a power of two)");
#define GRAM_REDUCE 1
#define GRAM_WRITE 3

namespace laplex {
namespace gram {

// ------------------------------------------------------------------------------------ maps
// y -> a y + b
struct Affine {
    double a, b;
};
__device__ __forceinline__ Affine identity(Affine) { return Affine{1.0, 0.0}; }
// `first`, then `then`
__device__ __forceinline__ Affine compose(Affine first, Affine then) {
    return Affine{then.a * first.a, then.a * first.b + then.b};
}
__device__ __forceinline__ double apply(Affine f, double y) { return f.a * y + f.b; }
__device__ __forceinline__ double initial(Affine) { return 0.0; }

// (num, den) -> [[p, q], [r, s]] (num, den), up to a power of two
struct Pair {
    double num, den;
};
struct Mobius {
    double p, q, r, s;
};
__device__ __forceinline__ Mobius identity(Mobius) { return Mobius{1.0, 0.0, 0.0, 1.0}; }
// the exponent that brings the largest of the non-negative a, b, c, d near 1 (0 when all are 0)
__device__ __forceinline__ int scale_of(double a, double b, double c, double d) {
    const double big = fmax(fmax(a, b), fmax(c, d));
    return big > 0.0 ? ilogb(big) : 0;
}
__device__ __forceinline__ Mobius compose(Mobius f, Mobius g) {
    Mobius h{g.p * f.p + g.q * f.r, g.p * f.q + g.q * f.s, g.r * f.p + g.s * f.r,
             g.r * f.q + g.s * f.s};
    const int e = scale_of(h.p, h.q, h.r, h.s);
    return Mobius{scalbn(h.p, -e), scalbn(h.q, -e), scalbn(h.r, -e), scalbn(h.s, -e)};
}
__device__ __forceinline__ Pair apply(Mobius f, Pair y) {
    const double num = f.p * y.num + f.q * y.den, den = f.r * y.num + f.s * y.den;
    const int e = scale_of(num, den, 0.0, 0.0);
    return Pair{scalbn(num, -e), scalbn(den, -e)};
}
__device__ __forceinline__ Pair initial(Mobius) { return Pair{0.0, 1.0}; }

// The exclusive scan of the maps of a block of THREADS threads (thread order): the composition of
// the maps of the threads before this one, and in *total that of all of them. Hillis-Steele in
// shared memory.
template <int THREADS, class M> __device__ __forceinline__ M block_scan(M own, M* total) {
    __shared__ M s_maps[THREADS];
    const int tid = threadIdx.x;
    s_maps[tid] = own;
    __syncthreads();
    for (int offset = 1; offset < THREADS; offset *= 2) {
        const M mine = tid >= offset ? compose(s_maps[tid - offset], s_maps[tid]) : s_maps[tid];
        __syncthreads();
        s_maps[tid] = mine;
        __syncthreads();
    }
    const M before = tid > 0 ? s_maps[tid - 1] : identity(own);
    *total = s_maps[THREADS - 1];
    __syncthreads();  // s_maps is free for the next scan
    return before;
}

// ------------------------------------------------------------------------------------ phase 2
// For each column (blockIdx.x) the states entering its tiles: carries[c * tiles + i] = maps of
// tiles 0 .. i-1 applied to the initial state. Each thread composes a run of tile maps, the block
// scans the runs, each thread rescans its run from the state entering it. One block per column.
template <class M, class S>
__global__ void __launch_bounds__(LAPLEX_CARRY_BLOCK)
    gram_carries(const M* __restrict__ maps, S* __restrict__ carries, const long long tiles) {
    const long long column = blockIdx.x;
    const M* own_maps = maps + column * tiles;
    S* out = carries + column * tiles;
    const long long per = (tiles + LAPLEX_CARRY_BLOCK - 1) / LAPLEX_CARRY_BLOCK;
    const int tid = threadIdx.x;
    const long long start = tid * per;
    const long long stop = start + per < tiles ? start + per : tiles;
    M run = identity(M{});
    for (long long i = start; i < stop; ++i) run = compose(run, own_maps[i]);
    M total;
    S state = apply(block_scan<LAPLEX_CARRY_BLOCK>(run, &total), initial(M{}));
    for (long long i = start; i < stop; ++i) {
        out[i] = state;
        state = apply(own_maps[i], state);
    }
}

// ------------------------------------------------------------------------------------ affine
// y[c, p] = the state entering item p of column c (blockIdx.y) of y_t = a[p] y + b[c, p], forward
// (p = t) or, with reverse, backward (p = n - 1 - t). a (n,), b and y (k, n) row-major. Phase 1
// writes the tile's map to maps[c * tiles + tile]; phase 3 reads the state entering the tile from
// carries (same index) and writes y. Loads and stores go through shared memory, coalesced.
__global__ void __launch_bounds__(LAPLEX_BLOCK)
    gram_affine_tiles(const double* __restrict__ a, const double* __restrict__ b,
                      double* __restrict__ y, Affine* __restrict__ maps,
                      const double* __restrict__ carries, const long long n, const long long tiles,
                      const int reverse, const int phase) {
    __shared__ double s_a[GRAM_TILE];
    __shared__ double s_b[GRAM_TILE];
    const int tid = threadIdx.x;
    const long long tile = blockIdx.x, column = blockIdx.y;
    const long long start = tile * GRAM_TILE;
    const int len = (int)(n - start < GRAM_TILE ? n - start : GRAM_TILE);
    const double* bc = b + column * n;
    for (int i = tid; i < len; i += LAPLEX_BLOCK) {
        const long long p = reverse ? n - 1 - (start + i) : start + i;
        s_a[i] = a[p];
        s_b[i] = bc[p];
    }
    __syncthreads();
    const int first = tid * LAPLEX_ITEMS;
    Affine run{1.0, 0.0};
    for (int i = 0; i < LAPLEX_ITEMS; ++i)
        if (first + i < len) run = compose(run, Affine{s_a[first + i], s_b[first + i]});
    Affine total;
    const Affine before = block_scan<LAPLEX_BLOCK>(run, &total);
    const long long slot = column * tiles + tile;
    if (phase == GRAM_REDUCE) {
        if (tid == 0) maps[slot] = total;
        return;
    }
    double state = apply(before, carries[slot]);
    for (int i = 0; i < LAPLEX_ITEMS; ++i)
        if (first + i < len) {
            const double next = s_a[first + i] * state + s_b[first + i];
            s_b[first + i] = state;  // each thread rewrites only its own items
            state = next;
        }
    __syncthreads();
    double* yc = y + column * n;
    for (int i = tid; i < len; i += LAPLEX_BLOCK) {
        const long long p = reverse ? n - 1 - (start + i) : start + i;
        yc[p] = s_b[i];
    }
}

// ------------------------------------------------------------------------------------ variance
// One step of the variance recursion from the posterior variance p_prev: returns the posterior
// variance and sets the pivot s = w² Pp + u, with Pp = φ² p_prev + q the prior variance.
__device__ __forceinline__ double variance_step(double em, double w, double u, double p_prev,
                                                double* pp, double* s) {
    const double phi = 1.0 + em;
    const double q = -em * (1.0 + phi);
    *pp = phi * phi * p_prev + q;
    *s = w * w * (*pp) + u;
    return (*pp) * u / (*s);
}

__device__ __forceinline__ Mobius variance_map(double em, double w, double u) {
    const double phi = 1.0 + em;
    const double q = -em * (1.0 + phi);
    const double w2 = w * w;
    return Mobius{u * phi * phi, u * q, w2 * phi * phi, w2 * q + u};
}

// The variance recursion over the sorted em, w, u (n,): phase 1 composes each tile's Möbius maps
// into maps[tile]; phase 3 starts each tile from the pair carries[tile] and writes, for each item,
// the inverse pivot R = 1 / S, posterior variance P, gain G = w Pp / S and mean decay
// A = φ u / S, and in logs[tile] the tile's sum of log S. A pivot that is not positive (Σ singular)
// lowers *zero to its position (the arrays from there on are not meaningful).
__global__ void __launch_bounds__(LAPLEX_BLOCK)
    gram_variance_tiles(const double* __restrict__ em, const double* __restrict__ w,
                        const double* __restrict__ u, Mobius* __restrict__ maps,
                        const Pair* __restrict__ carries, double* __restrict__ R,
                        double* __restrict__ P, double* __restrict__ G, double* __restrict__ A,
                        double* __restrict__ logs, unsigned long long* __restrict__ zero,
                        const long long n, const int phase) {
    __shared__ double s_em[GRAM_TILE];
    __shared__ double s_w[GRAM_TILE];
    __shared__ double s_u[GRAM_TILE];
    __shared__ double s_logs[LAPLEX_BLOCK];
    const int tid = threadIdx.x;
    const long long tile = blockIdx.x;
    const long long start = tile * GRAM_TILE;
    const int len = (int)(n - start < GRAM_TILE ? n - start : GRAM_TILE);
    for (int i = tid; i < len; i += LAPLEX_BLOCK) {
        s_em[i] = em[start + i];
        s_w[i] = w[start + i];
        s_u[i] = u[start + i];
    }
    __syncthreads();
    const int first = tid * LAPLEX_ITEMS;
    Mobius run{1.0, 0.0, 0.0, 1.0};
    for (int i = 0; i < LAPLEX_ITEMS; ++i)
        if (first + i < len)
            run = compose(run, variance_map(s_em[first + i], s_w[first + i], s_u[first + i]));
    Mobius total;
    const Mobius before = block_scan<LAPLEX_BLOCK>(run, &total);
    if (phase == GRAM_REDUCE) {
        if (tid == 0) maps[tile] = total;
        return;
    }
    const Pair entering = apply(before, carries[tile]);
    double p = entering.num / entering.den;
    double sum = 0.0;
    unsigned long long bad = ~0ull;
    for (int i = 0; i < LAPLEX_ITEMS; ++i) {
        const int j = first + i;
        if (j >= len) break;
        double pp, s;
        const double post = variance_step(s_em[j], s_w[j], s_u[j], p, &pp, &s);
        if (!(s > 0.0) && bad == ~0ull) bad = (unsigned long long)(start + j);
        const double inv = 1.0 / s;
        const long long t = start + j;
        R[t] = inv;
        P[t] = post;
        G[t] = s_w[j] * pp * inv;
        A[t] = (1.0 + s_em[j]) * s_u[j] * inv;
        sum += log(s);
        p = post;
    }
    if (bad != ~0ull) atomicMin(zero, bad);
    s_logs[tid] = sum;
    __syncthreads();
    for (int half = LAPLEX_BLOCK / 2; half > 0; half /= 2) {
        if (tid < half) s_logs[tid] += s_logs[tid + half];
        __syncthreads();
    }
    if (tid == 0) logs[tile] = s_logs[0];
}

}  // namespace gram
}  // namespace laplex
