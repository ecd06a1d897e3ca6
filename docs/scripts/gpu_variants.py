"""Kernel variants side by side on one GPU, in one run (see docs/gpu-validation.md).

Each variant is a launch geometry (``_cuda_kernels.GEOMETRY`` overrides, compiled by NVRTC as its
own modules), timed with CUDA events after a warm-up at m = n = 2^log2n float32, against
``cupy.fft.fft`` of a complex64 vector of the same length in the same run:

* cached products: sorted x and y, sorted distinct x = y (square), random order, and the
  gradient's row pass (signed and moment sums);
* the registers per thread of the float32 scan kernel, plain and moment instance;
* plan repairs (``plan(x2, y2, hint=plan(x, y))``, for the default and window-sort variants):
  1-ulp moves of random anchors with spacing 1
  (runs of ~8 ties at 2^27), and of anchors ~2^29 apart by 1 (runs of ~64 ties, as at 1e9).

Run: ``python docs/scripts/gpu_variants.py [log2n]`` on a machine with CuPy and a CUDA device.
"""

import sys
import time

import cupy
import numpy as np

from laplexops._gpu_bench import _ulp_moves
from laplexops.backends import _cuda_kernels as kernels
from laplexops.backends._cupy import CupyBackend, RawModuleKernels

VARIANTS = {
    "default": {},
    "full phase 1 (not lean)": {"LAPLEX_LEAN_PHASE1": 0},
    "padded tiles": {"LAPLEX_PAD": 1},
    "128 x 8 tiles (bank conflicts)": {"LAPLEX_ITEMS": 8},
    "compiler's registers (no bounds)": {"LAPLEX_TILE_MIN_BLOCKS": 0},
    "8 blocks per SM, every instance": {"LAPLEX_TILE_MIN_BLOCKS": 8},
    "__expf": {"LAPLEX_FAST_EXP": 1},
    "windows: single items (odd-even)": {"LAPLEX_SORT_BLOCK": 1024, "LAPLEX_SORT_ITEMS": 1},
    "windows: runs of 16": {"LAPLEX_SORT_BLOCK": 64, "LAPLEX_SORT_ITEMS": 16},
}


def event_seconds(fn, repeat=5):
    fn()
    best = float("inf")
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) * 1e-3)
    return best


def fft_seconds(rng, n):
    """``cupy.fft.fft`` of a complex64 vector of length ``n``, after the device's clocks have risen
    (its signal is freed on return)."""
    signal = (
        rng.standard_normal(n, dtype=np.float32) + 1j * rng.standard_normal(n, dtype=np.float32)
    ).astype(np.complex64)
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:  # an idle GPU starts at a low clock
        cupy.fft.fft(signal)
        cupy.cuda.Device().synchronize()
    return event_seconds(lambda: cupy.fft.fft(signal), 10)


def variant_times(change, anchors):
    """The times of the variant ``change`` (geometry overrides) and its scan kernel's registers
    per thread (plain / moment instance)."""
    x, y, v, xs, ys, distinct, w, x2, y2, runs, runs2 = anchors
    backend = CupyBackend(kernels=RawModuleKernels(dict(kernels.GEOMETRY, **change)))
    plans = [backend.plan(xs, ys), backend.plan(distinct, distinct), backend.plan(x, y)]
    for plan in plans:
        plan.side(0)
    times = [
        event_seconds(lambda: backend.apply(plans[0], 0, 1.0, v)),
        event_seconds(lambda: backend.apply(plans[1], 0, 1.0, w)),
        event_seconds(lambda: backend.apply(plans[2], 0, 1.0, v)),
        event_seconds(
            lambda: backend.apply(
                plans[2], 0, 1.0, v, want_sum=False, want_signed=True, want_moment=True
            )
        ),
    ]
    # the tile variants repair alike: repairs for the default and the window variants only
    if any(key.startswith("LAPLEX_SORT") for key in change) or not change:
        old, old64 = plans[2], backend.plan(runs, runs)
        times += [
            event_seconds(lambda: backend.plan(x2, y2, hint=old), 3),
            event_seconds(lambda: backend.plan(runs2, runs2, hint=old64), 3),
        ]
    regs = "/".join(
        str(
            getattr(
                backend.kernels.get(
                    kernels.tiles_name("float32", "float32", "float32", "float32", "int32", moment)
                ),
                "num_regs",
                "?",
            )
        )
        for moment in (False, True)
    )
    return regs, times


def main(log2n=27):
    n = 2**log2n
    rng = cupy.random.default_rng(0)
    fft = fft_seconds(rng, n)
    x = rng.random(n, dtype=np.float32) * n
    y = rng.random(n, dtype=np.float32) * n
    v = rng.standard_normal((n, 1), dtype=np.float32)
    xs, ys = cupy.sort(x), cupy.sort(y)
    distinct = cupy.unique(xs)
    w = v[: distinct.shape[0]]
    x2, y2 = _ulp_moves(cupy, rng, x), _ulp_moves(cupy, rng, y)
    runs = cupy.float32(2.0**29) + (rng.random(n, dtype=np.float32) * n)  # ~64 ties per value
    runs2 = _ulp_moves(cupy, rng, runs)
    anchors = (x, y, v, xs, ys, distinct, w, x2, y2, runs, runs2)
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    print(f"{name}, m = n = 2^{log2n}, cupy.fft.fft c64 {fft * 1e3:.3f} ms; times in ms")
    print(
        f"{'variant':34} {'regs':>6} {'sorted':>8} {'square':>8} {'random':>8} {'moment':>8} "
        f"{'repair':>8} {'repair64':>9}"
    )
    for label, change in VARIANTS.items():
        regs, times = variant_times(change, anchors)
        print(f"{label:34} {regs:>6} " + " ".join(f"{t * 1e3:8.3f}" for t in times), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 27)
