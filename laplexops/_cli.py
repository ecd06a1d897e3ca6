"""Command line: ``python -m laplexops demo | info | bench``.

``demo`` is the main job: a LAPLEX operator of m = n = 1e6 random anchors, timed, verified against
direct summation, and used inside ``scipy.sparse.linalg.cg``. ``bench`` prints speed as ratios to
peers measured in the same run (celerite2, ``np.argsort``, ``np.fft.rfft``). ``info`` reports
versions and backends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata

import numpy as np

from . import LaplexOperator
from ._load_bench import (
    busy_small_product,
    interleaved_with_blas,
    interleaved_with_blas_in,
    training_step,
)
from ._timing import best_of, best_of_pair, fmt_seconds, once
from .backends import get_backend, registered

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m laplexops", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("demo", "time, verify and solve with a 1e6 x 1e6 LAPLEX operator"),
        ("bench", "speed ratios to peers measured in the same run"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("--n", type=float, default=1e6, help="anchors per side (default 1e6)")
        q.add_argument("--dtype", choices=sorted(TOLERANCE), default="float64")
        q.add_argument(
            "--rate",
            type=complex,
            default=1.0,
            help="rate s; complex such as 1+2j for the phased kernel",
        )
        q.add_argument("--backend", default="auto", help="auto, numba or cupy")
        q.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
        if name == "bench":
            q.add_argument("--json", default=None, help="also write the results to this file")
            q.add_argument(
                "--gpu",
                action="store_true",
                help="validate the GPU: its test suite and the GPU goals in one table",
            )
            q.add_argument("--log2n", type=int, default=27, help="with --gpu: n = 2^log2n")
            q.add_argument(
                "--huge",
                action="store_true",
                help="also a training step at m = n = 1e8 on the CPU (float32; with --gpu: at "
                "m = n = 1e9)",
            )
            q.add_argument(
                "--gram",
                action="store_true",
                help="the Gram's likelihood against celerite2 (and tinygp), float32 accuracy",
            )
            q.add_argument(
                "--dask",
                action="store_true",
                help="the Dask backend on a two-worker LocalCluster against the Numba backend "
                "(needs the dask extra)",
            )
            q.add_argument(
                "--chunks", type=int, default=4, help="with --dask: chunks per side (default 4)"
            )
            q.add_argument(
                "--no-tests",
                action="store_true",
                help="with --gpu: timings only, skip the GPU test suite",
            )
    sub.add_parser("info", help="versions, backends, GPU")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        return info()
    rate = args.rate.real if args.rate.imag == 0 else args.rate
    if args.command == "bench" and args.gpu:
        from ._gpu_bench import gpu_bench

        return gpu_bench(args.log2n, args.seed, args.json, args.huge, not args.no_tests)
    if args.command == "bench" and args.dask:
        from ._dask_bench import dask_bench

        return dask_bench(int(args.n), args.chunks, args.seed, args.json)
    if args.command == "bench" and args.gram:
        from ._gram_bench import gram_bench

        return gram_bench(int(args.n), args.seed, args.json)
    run = demo if args.command == "demo" else bench
    kwargs = {"json_path": args.json, "huge": args.huge} if args.command == "bench" else {}
    return run(int(args.n), np.dtype(args.dtype), rate, args.backend, args.seed, **kwargs)


# ---------------------------------------------------------------------------------------- info
def info() -> int:
    print(
        f"laplexops {_version('laplexops')}  (Python {platform.python_version()}, "
        f"{platform.machine()}, {platform.system()})"
    )
    for dist in ("numpy", "scipy", "numba", "array-api-compat", "cupy", "torch", "celerite2"):
        print(f"  {dist:<17} {_version(dist)}")
    for name, device in registered().items():
        try:
            get_backend(name, device)
            status = "available"
        except RuntimeError as exc:  # the reason it cannot be built here is chained
            cause = exc.__cause__
            status = f"unavailable ({type(cause).__name__}: {cause})" if cause else str(exc)
        print(f"  backend {name:<9} {device} data, {status}")
    try:
        import numba

        from .backends._numba_threads import TBB

        layer = getattr(numba.config, "THREADING_LAYER", "default")  # the layer asked for
        tbb = f"TBB runtime loaded: {TBB}" if TBB else "no TBB runtime"
        print(f"  numba threads     {numba.get_num_threads()} (layer: {layer}; {tbb})")
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    print(f"  GPU               {_gpu()}")
    return 0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        for name in (f"{dist}-cuda12x", f"{dist}-cuda13x"):
            try:
                return f"{metadata.version(name)} ({name})"
            except metadata.PackageNotFoundError:
                pass
        return "not installed"


def _gpu() -> str:
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        return f"{count} CUDA device(s), device 0: {name}"
    except Exception as exc:  # any failure means: no usable GPU here
        return f"none usable ({type(exc).__name__})"


# ---------------------------------------------------------------------------------------- demo
class _Table:
    """Prints rows as they complete; a step running over a second shows its progress in place
    (on a terminal) until its row is done."""

    def __init__(self):
        self._label = ""
        self._started = 0.0
        self._live = sys.stdout.isatty()
        print(f"{'step':<44} {'time':>10}  note")
        print("-" * 92)

    def start(self, label: str):
        self._label, self._started = label, time.perf_counter()
        print(f"{label:<44} ", end="", flush=True)

    def progress(self, note: str):
        """Show ``note`` for the running step, once it has run for more than a second."""
        if self._live and time.perf_counter() - self._started > 1.0:
            print(f"\r{self._label:<44} {'...':>10}  {note:<40}", end="", flush=True)

    def done(self, seconds: float | None, note: str = ""):
        text = f"{fmt_seconds(seconds) if seconds is not None else '':>10}  {note}"
        if self._live:
            print(f"\r{self._label:<44} {text:<52}", flush=True)
        else:
            print(text, flush=True)


def _problem(n: int, dtype: np.dtype, rate, seed):
    """Random anchors with about one anchor per unit of 1/Re(rate): a kernel that is neither
    diagonal nor flat."""
    rng = np.random.default_rng(seed)
    scale = n / abs(complex(rate).real)
    x = (rng.random(n) * scale).astype(dtype)
    y = (rng.random(n) * scale).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    return rng, x, y, v


def _machine() -> str:
    """The CPU's model and SIMD level (NumPy's sorts, the fresh product's peer, differ about 3x
    between AVX2 and AVX-512), the cores, and Numba's threads and threading layer."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "unknown")
    import numba

    from .backends._numba_route import gather

    one = np.zeros(1)
    gather.parallel(one, np.zeros(1, np.int64), one)  # Numba starts its threads, if not yet
    layer = numba.threading_layer()
    return (
        f"{model}, SIMD {simd.replace('avx512f', 'AVX-512').upper()}, {os.cpu_count()} CPUs; "
        f"Numba {numba.get_num_threads()} threads, layer {layer}"
    )


def _warm_up(dtype, rate, backend):
    """Run every kernel once on a small problem and on one large enough for the CPU backend's
    threads and routes (2^17 anchors a side), so that no timing below includes the JIT."""
    for n in (5000, 2**17 + 1):
        _, x, y, v = _problem(n, dtype, rate, 0)
        op = LaplexOperator(x, y, rate, backend=backend)
        op.gradient(v, op @ v)
        op.rmatvec(v)
        op.with_anchors(x + x.dtype.type(1e-3), y) @ v  # a plan repaired
        LaplexOperator(x, x, abs(complex(rate).real), backend=backend) @ v


def _direct_rows(x, y, v, rate, rows, progress):
    """Rows of W @ v by direct float64 summation: the reference."""
    x64, y64, v64 = (np.asarray(a, dtype=np.float64) for a in (x, y, v))
    out = []
    for count, i in enumerate(rows):
        out.append(np.exp(-rate * np.abs(x64[i] - y64)) @ v64)
        progress(f"row {count + 1} of {len(rows)}")
    return np.array(out)


def demo(n, dtype, rate, backend, seed) -> int:
    import scipy.sparse.linalg as sla

    rng, x, y, v = _problem(n, dtype, rate, seed)
    print(
        f"LAPLEX demo: W[i,j] = exp(-s|x_i - y_j|), m = n = {n:,}, s = {rate}, {dtype}, "
        f"backend {backend}; a dense W would need {n * n * dtype.itemsize / 1e12:.1f} TB"
    )
    table = _Table()
    table.start("kernels: load/compile (once per process)")
    table.done(once(lambda: _warm_up(dtype, rate, backend))[0], "Numba JIT, cached on disk")
    op = LaplexOperator(x, y, rate, backend=backend)
    table.start("plan: merged sort of 2n anchors")
    t_plan, _ = once(op.prepare)
    table.done(t_plan, f"backend {op.backend}, then cached")
    table.start("matvec W @ v (cached plan)")
    t_mv = best_of(lambda: op @ v)
    table.done(t_mv)
    u = rng.standard_normal(n).astype(dtype)
    table.start("rmatvec W^H @ u")
    table.done(best_of(lambda: op.rmatvec(u)))
    table.start("gradient (x, y, rate, v)")
    table.done(best_of(lambda: op.gradient(v, u), repeat=3))
    table.start("np.fft.rfft, same length (for scale)")
    t_fft = best_of(lambda: np.fft.rfft(v))
    table.done(t_fft, f"matvec / rfft = {t_mv / t_fft:.2f}")

    rows = rng.choice(n, size=min(100, n), replace=False)
    table.start(f"verify {len(rows)} random rows, direct sum")
    ours = np.asarray(op @ v)[rows]
    t_ref, ref = once(lambda: _direct_rows(x, y, v, rate, rows, table.progress))
    err = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    ok_rows = err <= TOLERANCE[dtype.name]
    table.done(
        t_ref,
        f"rel. error {err:.1e} (<= {TOLERANCE[dtype.name]:.0e}): {'PASS' if ok_rows else 'FAIL'}",
    )

    noise = 0.1
    gram = LaplexOperator(x, x, abs(complex(rate).real), backend=backend)
    system = sla.LinearOperator((n, n), matvec=lambda a: gram @ a + noise * a, dtype=dtype)
    b = rng.standard_normal(n).astype(dtype)
    iterations = []

    def on_iteration(_):
        iterations.append(1)
        table.progress(f"iteration {len(iterations)}")

    rtol = 1e-8 if dtype == np.float64 else 1e-4
    table.start(f"cg on (K(x,x) + {noise} I) z = b")
    t_cg, (z, status) = once(
        lambda: sla.cg(system, b, rtol=rtol, maxiter=1000, callback=on_iteration)
    )
    residual = float(np.linalg.norm(gram @ z + noise * z - b) / np.linalg.norm(b))
    ok_cg = status == 0 and residual <= 10 * rtol
    table.done(
        t_cg,
        f"{len(iterations)} iterations, residual {residual:.1e}: {'PASS' if ok_cg else 'FAIL'}",
    )
    ok = ok_rows and ok_cg
    print("-" * 92)
    print(
        "PASS: products agree with direct summation and cg converged"
        if ok
        else "FAIL: see the rows marked FAIL above"
    )
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------- bench
def _first_and_cached_seconds(x, y, rate, backend, v, cached, rounds: int = 3):
    """``(first, cached)``: the fastest of ``rounds`` first products of fresh operators whose
    plans were built beforehand (``prepare``), and the fastest cached product of the operator
    ``cached`` (eight in each round, after the first product), in turn."""
    first = best = float("inf")
    for _ in range(rounds):
        op = LaplexOperator(x, y, rate, backend=backend).prepare()
        t0 = time.perf_counter()
        op @ v
        first = min(first, time.perf_counter() - t0)
        del op
        best = min(best, best_of(lambda: cached @ v, 8))
    return first, best


def _load_rows(row, op, v, n, seed) -> None:
    """The rows of products under load (see ``_load_bench``): a small product on a busy machine,
    and cached products between BLAS calls at ``n`` and ``n / 10``, as they are and in a process
    with the user guide's remedy (``OPENBLAS_THREAD_TIMEOUT=4``)."""
    idle, busy = busy_small_product(seed=0 if seed is None else seed)
    row("n = 100 matvec, 2 busy processes per core", busy, "the same, machine idle", idle, 5.0)
    alone, mixed = interleaved_with_blas(op, v)
    row("cached matvec, each after a BLAS call", mixed, "the products alone", alone, 1.5)
    if n >= 10**5:
        x, y = (np.asarray(a)[: n // 10] for a in (op.x, op.y))
        small = LaplexOperator(x, y, op.rate).prepare()
        alone, mixed = interleaved_with_blas(small, v[: n // 10])
        row(f"the same at n = {n // 10:.0e}", mixed, "the products alone", alone, 1.5)
    timeout = {"OPENBLAS_THREAD_TIMEOUT": "4"}
    for size in (n, n // 10) if n >= 10**5 else (n,):
        alone, mixed = interleaved_with_blas_in(timeout, size, 0 if seed is None else seed)
        row(
            f"the same, n = {size:.0e}, OPENBLAS_THREAD_TIMEOUT=4",
            mixed,
            "the products alone",
            alone,
            1.5,
        )


def bench(n, dtype, rate, backend, seed, json_path=None, huge=False) -> int:
    """Speed as ratios to peers timed in the same run, with the CPU goals marked (a row meets its
    goal when its ratio is at most the goal); with ``huge``, also a training step at m = n = 1e8
    in a fresh process, with its peak memory per anchor."""
    rng, x, y, v = _problem(n, dtype, rate, seed)
    results = []

    def row(label, ours, peer_label, peer, goal=None):
        ratio = ours / peer
        verdict = (
            "" if goal is None else ("meets" if ratio <= goal else "MISSES") + f" goal <= {goal}"
        )
        results.append(
            {
                "case": label,
                "seconds": ours,
                "peer": peer_label,
                "peer_seconds": peer,
                "ratio": ratio,
                "goal": goal,
            }
        )
        print(
            f"{label:<42} {fmt_seconds(ours):>10}  {peer_label:<30} {fmt_seconds(peer):>10}"
            f"  {ratio:6.2f}  {verdict}",
            flush=True,
        )

    def paired(ours, peer_label: str, peer) -> tuple[float, str, float]:
        """``(ours' seconds, peer_label, peer's seconds)`` for :func:`row`, timed in turn
        (:func:`best_of_pair`)."""
        t_ours, t_peer = best_of_pair(ours, peer)
        return t_ours, peer_label, t_peer

    _warm_up(dtype, rate, backend)
    print(f"laplexops bench: n = {n:,}, {dtype}, s = {rate}, backend {backend}")
    print(f"machine: {_machine()}")
    print(f"{'case':<42} {'ours':>10}  {'peer':<30} {'peer time':>10}  {'ratio':>6}")
    print("-" * 112)
    merged = np.concatenate([x, y])
    t_argsort = best_of(lambda: np.argsort(merged), repeat=3)

    fresh = best_of(lambda: LaplexOperator(x, y, rate, backend=backend) @ v, repeat=3)
    row("fresh matvec m=n (sort included)", fresh, "np.argsort of 2n merged", t_argsort, 1.0)
    op = LaplexOperator(x, y, rate, backend=backend).prepare()
    spacing = float(np.ptp(x)) / n
    x2 = x + (rng.uniform(-0.01, 0.01, n) * spacing).astype(dtype)
    y2 = y + (rng.uniform(-0.01, 0.01, n) * spacing).astype(dtype)
    row(
        "training step: with_anchors (1% moves) + matvec",
        best_of(lambda: op.with_anchors(x2, y2) @ v, repeat=3),
        "np.argsort of 2n merged",
        t_argsort,
    )
    plan = best_of(lambda: LaplexOperator(x, y, rate, backend=backend).prepare(), repeat=3)
    row("plan alone: prepare()", plan, "np.argsort of 2n merged", t_argsort)
    op @ v
    first, t_cached = _first_and_cached_seconds(x, y, rate, backend, v, op)
    row("first matvec after a plan", first, "cached matvec, same layout", t_cached, 1.5)
    rfft = lambda: np.fft.rfft(v)  # noqa: E731
    row("cached matvec, random anchors", *paired(lambda: op @ v, "np.fft.rfft(n)", rfft), 1.0)
    row(
        "cached rmatvec, random anchors",
        *paired(lambda: op.rmatvec(v), "np.fft.rfft(n)", rfft),
        1.0,
    )
    row("gradient, random anchors", *paired(lambda: op.gradient(v, v), "np.fft.rfft(n)", rfft), 2.5)
    V = rng.standard_normal((n, 4)).astype(dtype)
    four_rffts = lambda: [np.fft.rfft(v) for _ in range(4)]  # noqa: E731
    row("cached matmat, k = 4", *paired(lambda: op @ V, "4 x np.fft.rfft(n)", four_rffts))
    if not isinstance(rate, complex):
        phased = op.with_rate(complex(rate, 1.0))
        phased @ v
        rates = paired(lambda: phased @ v, "the real rate's", lambda: op @ v)
        row(f"cached matvec, rate {rate}+1j", *rates, 1.3)
    if dtype == np.float64:
        single = LaplexOperator(x.astype(np.float32), y.astype(np.float32), rate, backend=backend)
        v32 = v.astype(np.float32)
        single @ v32
        singles = paired(lambda: single @ v32, "the same in float64", lambda: op @ v)
        row("cached matvec, float32 data", *singles, 0.6)
    import numba

    threads = numba.get_num_threads()
    if threads > 1 and op.backend == "numba":

        def on_one_thread():
            numba.set_num_threads(1)
            try:
                op @ v
            finally:
                numba.set_num_threads(threads)

        # a speed-up of 1.7 or more
        speedup = paired(lambda: op @ v, "one thread", on_one_thread)
        row(f"cached matvec, {threads} threads", *speedup, round(1 / 1.7, 2))

    if op.backend == "numba":
        _load_rows(row, op, v, n, seed)
    s = np.sort(x)
    square = LaplexOperator(s, s, rate, backend=backend)
    square @ v
    try:
        import celerite2

        if isinstance(rate, complex) or dtype != np.float64:
            raise ImportError("celerite2 comparison needs a real rate and float64")
        term = celerite2.terms.RealTerm(a=1.0, c=float(rate))
        zeros = np.zeros(n)
        err = np.abs(np.asarray(square @ v) - term.dot(s, zeros, v)).max()
        versus = paired(lambda: square @ v, "celerite2 RealTerm.dot", lambda: term.dot(s, zeros, v))
        row("cached matvec, sorted x = y", *versus, 0.3)
        print(f"{'':<42} (max |ours - celerite2| = {err:.1e})")
    except ImportError as exc:
        row("cached matvec, sorted x = y", *paired(lambda: square @ v, "np.fft.rfft(n)", rfft))
        print(f"  (celerite2 comparison skipped: {exc})")
    if dtype == np.float64:
        square32 = LaplexOperator(s.astype(np.float32), s.astype(np.float32), rate, backend=backend)
        v32 = v.astype(np.float32)
        square32 @ v32
        squares = paired(lambda: square32 @ v32, "the same in float64", lambda: square @ v)
        row("cached matvec, sorted x = y, float32", *squares, 0.6)
    if huge:
        huge_n = 10**8
        print(f"training step at m = n = {huge_n:.0e}, float32, in a fresh process ...", flush=True)
        step = training_step(huge_n, "float32", 0 if seed is None else seed)
        row(
            f"training step m = n = {huge_n:.0e}, float32",
            step["step"],
            "its first plan",
            step["plan"],
        )
        per_anchor = step["bytes_per_anchor"]
        verdict = "meets" if per_anchor <= 40 else "MISSES"
        print(
            f"{'':<42} peak memory {step['peak'] / 2**30:.2f} GiB = {per_anchor:.1f} B per anchor"
            f"  {verdict} goal <= 40"
        )
        results.append(
            {"case": "training step peak bytes per anchor", "ratio": per_anchor, "goal": 40}
        )
    if json_path:
        meta = {
            "n": n,
            "dtype": dtype.name,
            "rate": str(rate),
            "backend": op.backend,
            "numpy": np.__version__,
            "machine": platform.machine(),
        }
        with open(json_path, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
