"""Time a small L-BFGS fit that alternates LAPLEX products and gradients with NumPy BLAS work.

A softmax head on synthetic data (400 samples by default, 64 features, 10 classes) whose logits
are a LAPLEX term plus a dense low-rank term (a NumPy matrix product, which runs on OpenBLAS's
threads), fitted by ``scipy.optimize.minimize(method="L-BFGS-B")``. Each loss evaluation builds the
operator for the new anchors (``with_anchors``), applies it to all samples at once (``matmat``) and
takes the gradient (``gradient``). Prints the time per evaluation, the threading setup and the
machine, for docs/benchmarks.md (Small problems and threads).

    python examples/small_fit_threads.py              # 3 fits
    python examples/small_fit_threads.py --fits 5 --samples 6400
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np
import scipy.optimize

import laplexops as lx

N_FEATURES, N_CLASSES, RANK = 64, 10, 4


def make_problem(n_samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES))
    labels = rng.integers(0, N_CLASSES, n_samples)
    X[np.arange(n_samples), labels] += 2.0  # feature c leans towards class c
    return X, np.eye(N_CLASSES)[labels]


def make_loss(X, Y):
    """The loss and its gradient of the parameters packed as (x_out, in_scale, log_rate, A, B)."""
    n_samples = X.shape[0]
    anchors_in = np.linspace(-1.0, 1.0, N_FEATURES)
    sizes = np.cumsum([N_CLASSES, N_FEATURES, 1, N_FEATURES * RANK])
    ops = {}

    def loss(theta):
        x_out, scale, log_rate, a, b = np.split(theta, sizes)
        A, B = a.reshape(N_FEATURES, RANK), b.reshape(RANK, N_CLASSES)
        rate = float(np.exp(log_rate[0]))
        op = ops.get("last")
        op = lx.LaplexOperator(x_out, anchors_in, rate) if op is None else op
        op = op.with_anchors(x_out, anchors_in).with_rate(rate)
        ops["last"] = op
        V = scale[:, None] * X.T
        H = X @ A  # BLAS: the dense low-rank term
        logits = (op @ V).T + H @ B
        logits -= logits.max(axis=1, keepdims=True)
        P = np.exp(logits)
        P /= P.sum(axis=1, keepdims=True)
        value = -np.sum(Y * np.log(P)) / n_samples
        D = (P - Y) / n_samples
        grads = op.gradient(V, np.ascontiguousarray(D.T))
        g_scale = np.einsum("fn,nf->f", grads.v, X)
        g_A = X.T @ (D @ B.T)
        g_B = H.T @ D
        g_rate = [grads.rate * rate]
        return value, np.concatenate([grads.x, g_scale, g_rate, g_A.ravel(), g_B.ravel()])

    theta0 = np.concatenate(
        [
            np.linspace(-1.0, 1.0, N_CLASSES),
            np.ones(N_FEATURES),
            [np.log(3.0)],
            0.01 * np.ones(N_FEATURES * RANK),
            0.01 * np.ones(RANK * N_CLASSES),
        ]
    )
    return loss, theta0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{model} ({simd})"


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    pools = threadpool_info()
    return ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in pools)


def threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run in this process
        return "not started"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    X, Y = make_problem(args.samples)
    loss, theta0 = make_loss(X, Y)
    loss(theta0)  # compile (or load from Numba's cache)
    evaluations, seconds = 0, []
    for _ in range(args.fits):
        start = time.perf_counter()
        result = scipy.optimize.minimize(
            loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 100}
        )
        seconds.append(time.perf_counter() - start)
        evaluations = result.nfev
    print(f"laplexops {lx.__file__}")
    print(f"cpu       {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(
        f"numba     {numba.__version__}, layer {threading_layer()}, "
        f"{numba.get_num_threads()} threads"
    )
    print(f"pools     {blas_threads()}")
    best = min(seconds)
    print(
        f"fit       {evaluations} evaluations: best {best:.3f} s of {len(seconds)} "
        f"({1e3 * best / evaluations:.2f} ms per evaluation), all: "
        + ", ".join(f"{s:.2f}" for s in seconds)
    )


if __name__ == "__main__":
    main()
