// Runs CUDA kernels of laplexops on the host, for tests without a GPU: every block in turn (in a
// shuffled order), its threads as std::threads meeting at a std::barrier for __syncthreads, and
// each warp of 32 at its own barrier for __syncwarp, __match_any_sync and the shuffles (the
// kernels call those with the whole warp). Static shared memory becomes a function-static array (one block runs at a
// time). Only what laplex_scan.cu and laplex_gram.cu use.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct emu_dim3 {
    unsigned x, y, z;
};

inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 blockDim, gridDim;
inline std::barrier<>* emu_barrier = nullptr;
inline thread_local std::barrier<>* emu_warp = nullptr;  // this thread's warp
inline thread_local unsigned emu_thread = 0;             // linear index in the block
inline unsigned long long* emu_lanes = nullptr;          // two slots per thread of the block

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

// __syncthreads_or through three block-wide vote slots used in turn: thread 0 clears the next one
// before the barrier (every thread has read it, two votes back, to get this far)
inline std::atomic<int>* emu_votes = nullptr;
inline thread_local unsigned emu_vote_count = 0;
inline int __syncthreads_or(int predicate) {
    const unsigned k = emu_vote_count++;
    if (emu_thread == 0) emu_votes[(k + 1) % 3].store(0);
    if (predicate) emu_votes[k % 3].store(1);
    emu_barrier->arrive_and_wait();
    return emu_votes[k % 3].load();
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp->arrive_and_wait(); }

// Warp exchanges go through two slots per thread, used in turn: a lane that runs ahead into the
// next exchange writes the other slot while slower lanes still read this one, and it cannot reach
// the one after (this slot again) before they all arrive there. One warp barrier per exchange.
inline thread_local unsigned emu_exchanges = 0;
inline unsigned long long* emu_exchange_slots() {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    return emu_lanes + (emu_exchanges++ % 2) * threads;
}

// the lanes of `mask` in this warp whose `value` equals this lane's
template <class T> unsigned __match_any_sync(unsigned mask, T value) {
    const unsigned base = emu_thread & ~31u;
    unsigned long long* slots = emu_exchange_slots();
    slots[emu_thread] = (unsigned long long)value;
    emu_warp->arrive_and_wait();
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned peers = 0;
    for (unsigned l = 0; l < 32 && base + l < threads; ++l)
        if (((mask >> l) & 1u) && slots[base + l] == slots[emu_thread]) peers |= 1u << l;
    return peers;
}
// the value of lane - delta (up) or lane + delta (down) of this warp; its own outside the warp
template <class T> T emu_shuffle(T value, int delta) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "a shuffle moves up to 8 bytes");
    const unsigned base = emu_thread & ~31u;
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned width = std::min(32u, threads - base);
    unsigned long long* slots = emu_exchange_slots();
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    slots[emu_thread] = bits;
    emu_warp->arrive_and_wait();
    const long long lane = (long long)(emu_thread - base) + delta;
    T out = value;
    if (lane >= 0 && lane < (long long)width) std::memcpy(&out, &slots[base + lane], sizeof(T));
    return out;
}
template <class T> T __shfl_up_sync(unsigned, T value, unsigned delta) {
    return emu_shuffle(value, -(int)delta);
}
template <class T> T __shfl_down_sync(unsigned, T value, unsigned delta) {
    return emu_shuffle(value, (int)delta);
}
inline float __expf(float a) { return std::exp(a); }
inline int __popc(unsigned a) { return __builtin_popcount(a); }

template <class T> T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}
template <class T> T atomicMin(T* address, T value) {
    std::atomic_ref<T> cell(*address);
    T old = cell.load();
    while (value < old && !cell.compare_exchange_weak(old, value)) {}
    return old;
}
inline unsigned __float_as_uint(float a) {
    unsigned u;
    std::memcpy(&u, &a, sizeof u);
    return u;
}
inline float __int_as_float(int i) {
    float a;
    std::memcpy(&a, &i, sizeof a);
    return a;
}
inline double __longlong_as_double(long long i) {
    double a;
    std::memcpy(&a, &i, sizeof a);
    return a;
}
inline long long __double_as_longlong(double a) {
    long long u;
    std::memcpy(&u, &a, sizeof u);
    return u;
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

namespace emu {

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

// kernel<<<grid, block>>>(*args...), one block after the other, in a shuffled order (a GPU runs
// blocks in no set order: a kernel that relied on one would fail here)
template <class... A>
void launch(void (*kernel)(A...), emu_dim3 grid, emu_dim3 block, void** args) {
    gridDim = grid;
    blockDim = block;
    const unsigned threads = block.x * block.y * block.z;
    std::vector<unsigned long long> order((unsigned long long)grid.x * grid.y * grid.z);
    for (unsigned long long b = 0; b < order.size(); ++b) order[b] = b;
    std::mt19937_64 shuffle(order.size());
    std::shuffle(order.begin(), order.end(), shuffle);
    for (const unsigned long long b : order) {
        const unsigned bx = b % grid.x, by = (b / grid.x) % grid.y, bz = b / (grid.x * grid.y);
        std::barrier<> barrier(threads);
        emu_barrier = &barrier;
        std::vector<std::unique_ptr<std::barrier<>>> warps;
        for (unsigned w = 0; w * 32 < threads; ++w)
            warps.emplace_back(new std::barrier<>(std::min(32u, threads - w * 32)));
        std::vector<unsigned long long> lanes(2 * threads);  // two exchange slots each
        emu_lanes = lanes.data();
        std::atomic<int> votes[3] = {0, 0, 0};
        emu_votes = votes;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                blockIdx = {bx, by, bz};
                emu_thread = t;
                emu_warp = warps[t / 32].get();
                call(kernel, args, std::index_sequence_for<A...>{});
                barrier.arrive_and_drop();  // an exited thread no longer holds others up
                emu_warp->arrive_and_drop();
            });
        for (auto& th : pool) th.join();
    }
}

// the sizes of the kernel's parameters, so that the caller can check what it passes
template <class... A> int sizes(void (*)(A...), long long* out) {
    const long long s[] = {(long long)sizeof(A)..., 0};
    for (std::size_t i = 0; i < sizeof...(A); ++i) out[i] = s[i];
    return (int)sizeof...(A);
}

}  // namespace emu
