"""A LAPLEX projection with a million inputs and a million outputs, trained for a few steps.

A ``LaplexLinear(n, n)`` layer (``laplexops.torch``) learns to reproduce a teacher layer of the same
size whose anchors were moved at random: each step is a forward product, a backward pass (one
``gradient`` call: the anchors, the rate, the scales) and an Adam update, after which the layer's
plan repairs the previous order instead of sorting. The run prints the loss and the time of each
step, the process's peak memory, and next to them what a dense ``n x n`` layer would need: its
weight's memory, and its time per step from this machine's dense matrix-vector throughput measured
in the same run (a dense step reads the weight three times: forward, input gradient, weight
gradient)::

    python examples/scale_run.py                      # n = 1e6, 10 steps, float32, CPU
    python examples/scale_run.py --device cuda        # the same on a GPU (CuPy backend)

The numbers of a run are in docs/torch.md ("A layer of a million by a million").
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import numpy as np
import torch

from laplexops.torch import LaplexLinear


def cpu_model() -> str:
    """The CPU's model name and SIMD level, from /proc/cpuinfo."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "")
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    simd = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    return f"{name} ({simd})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_matvec_seconds_per_entry(device: torch.device, dtype: torch.dtype) -> float:
    """Seconds per weight entry of a dense matrix-vector product here (the best of a few on a
    4096 x 4096 matrix, far beyond the caches' size in float32): the rate a dense layer's step
    would run at, since a matrix-vector product reads each weight once."""
    size = 4096
    w = torch.randn(size, size, device=device, dtype=dtype)
    v = torch.randn(size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        w @ v
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best / size**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="inputs = outputs (1e6)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device, dtype, n = torch.device(args.device), getattr(torch, args.dtype), args.n
    torch.manual_seed(args.seed)

    teacher = LaplexLinear(n, n, rate=1.0, bias=False, device=device, dtype=dtype)
    with torch.no_grad():  # the teacher's anchors moved by up to a third of their spacing
        teacher.x.add_(torch.rand(n, device=device, dtype=dtype).sub_(0.5).mul_(0.6))
        teacher.y.add_(torch.rand(n, device=device, dtype=dtype).sub_(0.5).mul_(0.6))
        teacher.log_rate.fill_(np.log(1.5))
        inputs = torch.randn(n, device=device, dtype=dtype)
        target = teacher(inputs)
    del teacher

    layer = LaplexLinear(n, n, rate=1.0, device=device, dtype=dtype)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.02)
    print(
        f"LaplexLinear({n}, {n}), {args.dtype}, {device}, {cpu_model()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"parameters: {sum(p.numel() for p in layer.parameters()):,} (a dense layer: {n * n + n:,})"
    )
    times = []
    for step in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.mean((layer(inputs) - target) ** 2)
        loss.backward()
        optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        print(f"step {step:3d}  loss {loss.item():.4e}  {times[-1] * 1e3:8.1f} ms")

    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    per_entry = dense_matvec_seconds_per_entry(device, dtype)
    dense_bytes = n * n * torch.finfo(dtype).bits // 8
    dense_step = 3 * n * n * per_entry
    print(f"first step {times[0] * 1e3:.1f} ms (the first plan), then median {steady * 1e3:.1f} ms")
    print(f"peak resident memory of the process: {peak / 1e9:.2f} GB")
    print(
        f"a dense {n} x {n} layer: weight {dense_bytes / 1e12:.2f} TB; a step at this machine's "
        f"dense matvec rate ({1 / per_entry / 1e9:.2f} G entries/s) about {dense_step:.0f} s, "
        f"{dense_step / steady:.0f} times the LAPLEX step"
    )


if __name__ == "__main__":
    main()
