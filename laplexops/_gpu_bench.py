"""``python -m laplexops bench --gpu``: validate a GPU installation in one table.

Runs the GPU test suite (``tests/test_cuda.py`` and ``tests/test_gpu.py`` when the source tree is
there), then times the GPU backend's goals against peers measured in the same run on the same
device: ``cupy.fft.fft`` of a complex64 vector of the same length, and the device-to-device copy
bandwidth (the byte model of the CuPy backend's products, :func:`matvec_bytes`, turns a matvec
time into a bandwidth). One function per section of the table, so that a section's arrays are
freed when it returns.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import LaplexGram, LaplexOperator
from ._timing import best_of, fmt_seconds
from .backends import _cuda_kernels as cuda

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def gpu_seconds(cupy, fn, repeat: int = 5) -> float:
    """The fastest of ``repeat`` calls (after one warm-up), device work included."""

    def synced():
        fn()
        cupy.cuda.Device().synchronize()

    synced()
    return best_of(synced, repeat)


def warm_up(cupy, fn, seconds: float = 1.0) -> None:
    """Run ``fn`` on the device for ``seconds`` (the clocks of an idle GPU take that long to
    rise)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
        cupy.cuda.Device().synchronize()


def device_copy_seconds(cupy, nbytes: int) -> float:
    """The time of a device-to-device ``cudaMemcpy`` of ``nbytes`` (the copy engine's bandwidth;
    CuPy's ``ndarray.copy`` is an elementwise kernel and reaches well under it)."""
    src = cupy.empty(nbytes, dtype=np.uint8)
    dst = cupy.empty_like(src)
    return gpu_seconds(cupy, lambda: dst.data.copy_from_device_async(src.data, nbytes))


def _run_tests() -> tuple[str, float, bool]:
    files = [os.path.join(_TESTS, f) for f in ("test_cuda.py", "test_cuda_gram.py", "test_gpu.py")]
    if not all(os.path.exists(f) for f in files):
        return "test suite not found (run from a source checkout)", 0.0, True
    t0 = time.perf_counter()
    # the host build of the kernels is CI's check; here the device is
    env = dict(os.environ, LAPLEXOPS_HOST_KERNELS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(_TESTS),
        env=env,
    )
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    return last, time.perf_counter() - t0, proc.returncode == 0


def gpu_bench(
    log2n: int = 27,
    seed=None,
    json_path=None,
    huge: bool = False,
    tests: bool = True,
    huge_n: int = 10**9,
    cupy=None,
    gram_n: tuple[int, int, int] = (3_000_000, 100_000_000, 100_000),
) -> int:
    """Print the table; 0 when every goal is met, 1 when one is missed, 2 without a GPU.
    ``cupy`` replaces the CuPy module (the tests pass a NumPy stand-in); ``gram_n`` are the sizes
    of the LaplexGram rows (:func:`_gram_rows`)."""
    if cupy is None:
        from .backends import available

        if "cupy" not in available():
            print(
                "bench --gpu needs CuPy and a CUDA device (pip install "
                "'laplexops[gpu-cuda13]'); none is usable here",
                file=sys.stderr,
            )
            return 2
        cupy = importlib.import_module("cupy")

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    n = 2**log2n
    print(
        f"laplexops bench --gpu: {device}, CuPy {cupy.__version__}, m = n = 2^{log2n} = {n:,}, "
        f"float32"
    )
    print(f"{'case':<56} {'ours':>10}  {'peer':<28} {'peer time':>10}  {'ratio':>7}  goal")
    print("-" * 128)
    table = _Table()

    if tests:
        summary, seconds, passed = _run_tests()
        table.row(
            "GPU test suite (test_cuda, test_cuda_gram, test_gpu)",
            seconds,
            summary[:28],
            0,
            "",
            "all pass",
            passed,
        )

    copy_bw = _device_rows(cupy, table, cupy.random.default_rng(seed), log2n)
    cupy.get_default_memory_pool().free_all_blocks()  # (the sections' arrays are gone)
    _gram_rows(cupy, table, cupy.random.default_rng(seed), *gram_n)
    cupy.get_default_memory_pool().free_all_blocks()

    if huge:
        table.ok &= _huge_step(cupy, table.row, seed, huge_n)
    print("-" * 128)
    print("PASS: every goal met" if table.ok else "FAIL: see the rows marked MISSES")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(
                {
                    "device": device,
                    "cupy": cupy.__version__,
                    "n": n,
                    "copy_bytes_per_second": copy_bw,
                    "results": table.results,
                },
                fh,
                indent=2,
            )
    return 0 if table.ok else 1


class _Table:
    """The bench's rows, printed as they come and kept for the JSON file; ``ok`` until a row
    misses its goal."""

    def __init__(self) -> None:
        self.results: list[dict] = []
        self.ok = True

    def row(self, case, ours, peer, peer_time, ratio, goal="", met=None):
        verdict = "" if met is None else ("meets" if met else "MISSES")
        self.ok = self.ok and met is not False
        self.results.append(
            dict(
                case=case,
                seconds=ours,
                peer=peer,
                peer_seconds=peer_time,
                ratio=ratio,
                goal=goal,
                met=met,
            )
        )
        print(
            f"{case:<56} {fmt_seconds(ours) if ours else '':>10}  {peer:<28} "
            f"{fmt_seconds(peer_time) if peer_time else '':>10}  "
            f"{ratio if isinstance(ratio, str) else f'{ratio:7.2f}':>7}  {goal} {verdict}",
            flush=True,
        )


_FFT = "cupy.fft.fft c64, same n"  # the peer of most rows
#: the goal of a training step at m = n = 1e9 (``--huge``), seconds
_HUGE_STEP_SECONDS = 0.5


def _device_rows(cupy, table, rng, log2n: int) -> float:
    """Every row at m = n = 2^log2n float32, one section at a time (each section's arrays are
    freed when it returns); the device-to-device copy bandwidth measured."""
    n = 2**log2n
    x = rng.random(n, dtype=np.float32) * n
    y = rng.random(n, dtype=np.float32) * n
    v = rng.standard_normal(n, dtype=np.float32)
    t_fft, t_copy, copy_bw = _peer_times(cupy, rng, log2n)
    op = _random_anchor_rows(cupy, table, rng, x, y, v, t_fft)
    xs, ys = cupy.sort(x), cupy.sort(y)
    _sorted_anchor_rows(cupy, table, rng, xs, ys, v, t_fft)
    _cached_rows(cupy, table, rng, op, v, t_fft)
    del op, x, y
    _bandwidth_row(cupy, table, "cached matvec, sorted x and y", xs, ys, v, False, t_copy, copy_bw)
    # the square mode needs distinct anchors (float32 rounds to ties)
    distinct = cupy.unique(xs)
    del xs, ys
    _bandwidth_row(
        cupy,
        table,
        "cached matvec, sorted distinct x = y",
        distinct,
        distinct,
        v,
        True,
        t_copy,
        copy_bw,
    )
    return copy_bw


def _gram_rows(cupy, table, rng, n: int, n_huge: int, n_agree: int) -> None:
    """LaplexGram's goals: ``nll_and_gradient`` at n, batch 8, float32, against
    ``cupy.fft.rfft`` of the same (8, n) array; value + gradient at ``n_huge``, batch 1, float32
    (<= 100 ms); the device's value and gradient against the Numba backend's at ``n_agree``,
    float64 (1e-10 relative)."""

    def problem(size, batch, dtype):
        a = (rng.random(size, dtype=np.float32) * size).astype(dtype)
        X = rng.standard_normal((batch, size), dtype=np.float32).astype(dtype)
        return a, X

    def step_row(size, batch, goal, met):
        """A training step: new parameters on the cached plan (the factor recomputed), then the
        value and the gradient of the batch; against the FFT of the batch."""
        a, X = problem(size, batch, np.float32)
        t_fft = gpu_seconds(cupy, lambda: cupy.fft.rfft(X, axis=1))
        G = LaplexGram(a, 1.0, noise=0.1)
        t = gpu_seconds(cupy, lambda: G.with_params().nll_and_gradient(X), repeat=3)
        label = f"Gram nll_and_gradient, n = {size:,}, batch {batch}, float32"
        peer = f"cupy.fft.rfft ({batch}, n) f32"
        table.row(label, t, peer, t_fft, t / t_fft, goal, met(t, t_fft))

    step_row(n, 8, "<= 10", lambda t, t_fft: t <= 10 * t_fft)
    step_row(n_huge, 1, "<= 100 ms", lambda t, t_fft: t <= 0.1)

    a, X = problem(n_agree, 4, np.float64)
    here = LaplexGram(a, 1.0, noise=0.1).nll_and_gradient(X)
    host = LaplexGram(_host(a), 1.0, noise=0.1).nll_and_gradient(_host(X))
    t = gpu_seconds(cupy, lambda: LaplexGram(a, 1.0, noise=0.1).nll_and_gradient(X), repeat=1)
    worst = abs(here[0] - host[0]) / abs(host[0])
    for got, want in zip(here[1], host[1]):
        got, want = np.asarray(_host(got), np.float64), np.asarray(want, np.float64)
        worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    label = f"Gram vs Numba, value + gradient, n = {n_agree:,}, float64"
    table.row(label, t, "relative difference", 0, f"{worst:.0e}", "<= 1e-10", worst <= 1e-10)


def _host(a):
    """A device array as a NumPy array (numbers and NumPy arrays as they are)."""
    return a.get() if hasattr(a, "get") else a


def _peer_times(cupy, rng, log2n: int) -> tuple[float, float, float]:
    """The peers: the time of ``cupy.fft.fft`` of a complex64 vector of length 2^log2n (after the
    device's clocks have risen), and the time and bandwidth (bytes read and written per second)
    of a device-to-device copy of 1 GiB."""
    n = 2**log2n
    signal = (
        rng.standard_normal(n, dtype=np.float32) + 1j * rng.standard_normal(n, dtype=np.float32)
    ).astype(np.complex64)
    # an idle GPU runs at a low clock for a while after work starts: time nothing before it ramps up
    warm_up(cupy, lambda: cupy.fft.fft(signal))
    t_fft = gpu_seconds(cupy, lambda: cupy.fft.fft(signal))
    copy_bytes = 4 * 2 ** min(28, log2n + 4)  # 1 GiB
    t_copy = device_copy_seconds(cupy, copy_bytes)
    return t_fft, t_copy, 2 * copy_bytes / t_copy


def _random_anchor_rows(cupy, table, rng, x, y, v, t_fft):
    """Anchors in random order: a fresh matvec, the plan alone against ``cupy.argsort``, and
    training steps; returns the prepared operator."""
    fresh = gpu_seconds(cupy, lambda: LaplexOperator(x, y, 1.0) @ v, repeat=3)
    # the fresh product's floor: one sort of the merged anchors
    t_merged = _merged_argsort_seconds(cupy, x, y)
    table.row(
        "fresh matvec, random anchors (sort included)",
        fresh,
        "cupy.argsort of x and y merged",
        t_merged,
        fresh / t_merged,
        "<= 1.5",
        fresh / t_merged <= 1.5,
    )
    table.row("  the same against the FFT", fresh, _FFT, t_fft, fresh / t_fft)
    # the plan alone: the backend's radix sorts (keys and int32 permutations out) against CuPy's
    plan = gpu_seconds(cupy, lambda: LaplexOperator(x, y, 1.0).prepare(), repeat=3)
    t_argsort = gpu_seconds(cupy, lambda: (cupy.argsort(x), cupy.argsort(y)), repeat=3)
    table.row(
        "plan of random anchors (validation, snapshots, sorts)",
        plan,
        "cupy.argsort of x and of y",
        t_argsort,
        plan / t_argsort,
    )

    op = LaplexOperator(x, y, 1.0).prepare()
    x2, y2, moved = _percent_moves(cupy, rng, x, y)
    train = gpu_seconds(cupy, lambda: op.with_anchors(x2, y2) @ v, repeat=3)
    table.row(
        f"training step (1% moves, {moved:.0%} moved) + matvec", train, _FFT, t_fft, train / t_fft
    )
    # moves that float32 keeps: one unit in the last place (crossing runs of tied anchors)
    x3, y3 = _ulp_moves(cupy, rng, x), _ulp_moves(cupy, rng, y)
    ulp = gpu_seconds(cupy, lambda: op.with_anchors(x3, y3) @ v, repeat=3)
    table.row("training step (1-ulp moves) + matvec", ulp, _FFT, t_fft, ulp / t_fft)
    return op


def _sorted_anchor_rows(cupy, table, rng, xs, ys, v, t_fft) -> None:
    """Training steps from sorted anchors ``xs``, ``ys``: the permutations stay close to the
    identity, so the repair and the product read and write nearly in order (no random gathers)."""
    sorted_op = LaplexOperator(xs, ys, 1.0).prepare()
    xs2, ys2, moved = _percent_moves(cupy, rng, xs, ys)
    _sorted_step_rows(
        cupy,
        table,
        sorted_op,
        xs2,
        ys2,
        v,
        t_fft,
        f"training step from sorted anchors (1% moves, {moved:.0%} moved) + matvec",
        "  of which the re-plan (snapshots and their order check)",
        limit=2,
    )
    del xs2, ys2
    xs3, ys3 = _ulp_moves(cupy, rng, xs), _ulp_moves(cupy, rng, ys)
    _sorted_step_rows(
        cupy,
        table,
        sorted_op,
        xs3,
        ys3,
        v,
        t_fft,
        "training step from sorted anchors (1-ulp moves) + matvec",
        "  of which the re-plan (snapshots, window sorts)",
    )


def _sorted_step_rows(
    cupy, table, sorted_op, x2, y2, v, t_fft, label, replan_label, limit=None
) -> None:
    """A training step from ``sorted_op`` to anchors ``x2``, ``y2`` with a matvec (goal: at most
    ``limit`` FFTs, when given), then its re-plan alone."""
    step = gpu_seconds(cupy, lambda: sorted_op.with_anchors(x2, y2) @ v, repeat=3)
    goal = () if limit is None else (f"<= {limit}", step / t_fft <= limit)
    table.row(label, step, _FFT, t_fft, step / t_fft, *goal)
    replan = gpu_seconds(cupy, lambda: sorted_op.with_anchors(x2, y2).prepare(), repeat=3)
    table.row(replan_label, replan, _FFT, t_fft, replan / t_fft)


def _merged_argsort_seconds(cupy, x, y) -> float:
    """The time of ``cupy.argsort`` of ``x`` and ``y`` merged (the merged copy freed on return)."""
    merged = cupy.concatenate([x, y])
    return gpu_seconds(cupy, lambda: cupy.argsort(merged), repeat=3)


def _gather_scatter_seconds(cupy, rng, v) -> float:
    """The time of a random gather of ``v`` and a random scatter of the gathered values (int32
    permutations of ``v``'s length; freed on return)."""
    n = v.shape[0]
    gather, scatter = (cupy.argsort(rng.random(n, dtype=np.float32)).astype(np.int32) for _ in "gs")
    out = cupy.empty_like(v)

    def floor():
        out[scatter] = v[gather]

    return gpu_seconds(cupy, floor)


def _cached_rows(cupy, table, rng, op, v, t_fft) -> None:
    """A cached matvec on ``op``'s plan (random anchors) against its floor, a random gather of
    ``v`` and a random scatter of the result (int32 permutations of the same sizes), and a
    gradient against that matvec."""
    op @ v
    cached = gpu_seconds(cupy, lambda: op @ v)
    t_floor = _gather_scatter_seconds(cupy, rng, v)
    label = "random gather of v + random scatter of u"
    table.row(
        "cached matvec, random anchors",
        cached,
        label,
        t_floor,
        cached / t_floor,
        "<= 1.3",
        cached / t_floor <= 1.3,
    )
    table.row("  the same against the FFT", cached, _FFT, t_fft, cached / t_fft)
    grad = gpu_seconds(cupy, lambda: op.gradient(v, v), repeat=3)
    table.row(
        "gradient (x, y, rate, v), cached plan",
        grad,
        "the cached matvec above",
        cached,
        grad / cached,
        "<= 2",
        grad / cached <= 2,
    )


def _bandwidth_row(cupy, table, label, a, b, v, square, t_copy, copy_bw) -> None:
    """A cached matvec on sorted anchors ``a``, ``b``: its bandwidth by the byte model against
    the copy bandwidth (goal: 60% of it)."""
    op = LaplexOperator(a, b, 1.0).prepare()
    w = v[: b.shape[0]]
    op @ w  # (the first product finds the threads' first rows)
    t = gpu_seconds(cupy, lambda: op @ w)
    bw = matvec_bytes(a.shape[0], b.shape[0], square=square) / t
    table.row(
        label,
        t,
        f"copy {copy_bw / 1e9:.0f} GB/s",
        t_copy,
        f"{bw / copy_bw:.0%}",
        ">= 60% of copy bandwidth",
        bw / copy_bw >= 0.6,
    )
    table.results[-1]["bytes_per_second"] = bw


class _PeakMemory:
    """The peak of the bytes in use in CuPy's default pool while active (a pool memory hook that
    looks at the pool after every allocation)."""

    def __init__(self, cupy):
        self.pool = cupy.get_default_memory_pool()
        self.peak = self.pool.used_bytes()
        pool = self.pool
        tracker = self

        class Hook(cupy.cuda.MemoryHook):
            name = "laplexops-peak-memory"

            def malloc_postprocess(self, **kwargs):
                tracker.peak = max(tracker.peak, pool.used_bytes())

        self._hook = Hook()

    def __enter__(self):
        self._hook.__enter__()
        return self

    def __exit__(self, *exc):
        self._hook.__exit__(*exc)
        self.peak = max(self.peak, self.pool.used_bytes())


def _percent_moves(cupy, rng, x, y):
    """``x`` and ``y`` (spacing about 1) moved by at most 1% of their spacing, and the share of
    the moves that survived rounding (float32 cannot hold 2^27 distinct anchors in one range)."""
    n = x.shape[0]
    step = cupy.float32(0.01)
    x2 = x + (rng.random(n, dtype=np.float32) * 2 - 1) * step
    y2 = y + (rng.random(n, dtype=np.float32) * 2 - 1) * step
    return x2, y2, float(((x2 != x).sum() + (y2 != y).sum()) / (2 * n))


def _ulp_moves(cupy, rng, a):
    """``a`` with each value moved one unit in the last place down, up, or not (a third each)."""
    r = rng.random(a.shape[0], dtype=np.float32)
    direction = (r > 2 / 3).astype(a.dtype) - (r < 1 / 3).astype(a.dtype)
    return cupy.nextafter(a, a + direction * (2 * float(cupy.abs(a).max()) + 1))


def _huge_step(cupy, row, seed, n: int = 10**9) -> bool:
    """Training steps at m = n = 1e9, float32, timed without the data generation:

    * fresh: a new operator (validation, snapshots, two sorts), matvec and gradient;
    * training steps: the anchors moved by up to one unit in the last place (float32 cannot hold
      smaller moves of 1e9 anchors, see docs/gpu-validation.md), ``with_anchors`` from the
      previous plan, matvec and gradient; the previous anchors and results are released first.
      The first runs after the memory pool was emptied (every buffer a new ``cudaMalloc``), the
      second as in a training loop, with the pool holding the blocks of the step before. Goal:
      under one second, for the loop's step.

    The peak of the pool's bytes in use, inputs included, is reported for each (the memory plan
    of docs/gpu-validation.md predicts it).
    """
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    rng = cupy.random.default_rng(seed)
    case = f"m = n = {n:,}"
    try:
        x = rng.random(n, dtype=np.float32) * n
        y = rng.random(n, dtype=np.float32) * n
        v = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32)
        inputs = pool.used_bytes()

        def timed(make):
            with _PeakMemory(cupy) as memory:
                t0 = time.perf_counter()
                op = make()
                out, grads = op @ v, op.gradient(v, g)
                cupy.cuda.Device().synchronize()
                seconds = time.perf_counter() - t0
            del out, grads
            return (
                op,
                seconds,
                (
                    f"peak {memory.peak / 2**30:.1f} GiB in use",
                    f"{(memory.peak - inputs) / (2 * n):.1f} B/anchor",
                ),
            )

        op, fresh, (peak, per_anchor) = timed(lambda: LaplexOperator(x, y, 1.0))
        row(
            f"fresh step {case} (plan+matvec+gradient)", fresh, peak, 0, per_anchor, "(information)"
        )
        seconds = 0.0
        for label in ("pool emptied", "training loop"):
            x2, y2 = _ulp_moves(cupy, rng, x), _ulp_moves(cupy, rng, y)
            moved = float(((x2 != x).sum() + (y2 != y).sum()) / (2 * n))
            del x, y
            if label == "pool emptied":
                pool.free_all_blocks()
            # as a training loop's `op = op.with_anchors(...)`: nothing but the new operator
            # holds the previous one (its plan is the repair's hint, freed once the new plan
            # exists), so the step's products do not run beside a second plan and snapshots (the
            # step binds this iteration's list and anchors as its defaults)
            previous = [op]
            del op
            op, seconds, (peak, per_anchor) = timed(
                lambda previous=previous, x2=x2, y2=y2: previous.pop().with_anchors(x2, y2)
            )
            x, y = x2, y2
            del x2, y2
            loop = label == "training loop"
            row(
                f"training step {case}, {label} ({moved:.0%} moved 1 ulp)",
                seconds,
                peak,
                0,
                per_anchor,
                f"< {_HUGE_STEP_SECONDS} s" if loop else "(information)",
                seconds < _HUGE_STEP_SECONDS if loop else None,
            )
        return seconds < _HUGE_STEP_SECONDS
    except MemoryError as exc:
        row(
            f"training step {case} (matvec + gradient)",
            0,
            "out of memory",
            0,
            "",
            "completes",
            False,
        )
        print(f"  {exc}")
        return False


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
    block = cuda.GEOMETRY["LAPLEX_BLOCK"]
    tile = tile or block * cuda.GEOMETRY["LAPLEX_ITEMS"]
    lean = bool(cuda.GEOMETRY["LAPLEX_LEAN_PHASE1"]) if lean is None else lean
    total = n if square else m + n
    tiles = -(-total // tile)
    agg = cuda.map_bytes(real.name, decay.name, value.name)
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
