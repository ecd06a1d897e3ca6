"""``python -m laplexops bench --gram``: the Gram's likelihood timed against celerite2 (and tinygp,
where it is installed) in the same run, and float32 against float64 in six regimes.

The anchors are sorted (celerite2 and tinygp need them sorted; LaplexGram's plan then skips the
sort) and the plan is built before timing; every timed call makes a new Gram with
``with_params`` on that plan, so the factorisation is timed with the likelihood, as celerite2's
``compute`` is with its ``log_likelihood``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable

import numpy as np

from ._gram import LaplexGram
from ._timing import best_of, fmt_seconds

#: the goals: ratio to celerite2's compute + log_likelihood (batch 1), or to tinygp
GOALS = {
    "nll, batch 1": 0.25,
    "nll, batch 8": 0.4,
    "nll + gradient, batch 1": 0.6,
    "nll + gradient, batch 8": 1.2,
    "value + gradient vs tinygp": 0.25,
}


def _float32_regimes(rng: np.random.Generator, n: int) -> dict:
    """Anchors (representable in float32), rate and noise of six regimes."""
    uniform = np.sort(rng.uniform(0.0, n / 10, n))
    return {
        "ties (every value ~10 times)": (np.sort(np.round(rng.uniform(0, n / 10, n))), 1.0, 0.1),
        "small noise u = 1e-5": (uniform, 1.0, 1e-5),
        "large rate s = 1e3": (uniform, 1e3, 0.1),
        "small rate s = 1e-4": (uniform, 1e-4, 0.1),
        "spread 1e8": (np.sort(rng.uniform(0.0, 1e8, n)), 1.0, 0.1),
        "clustered (gaps ~1e-4 s)": (np.sort(rng.uniform(0.0, n * 1e-4, n)), 1.0, 0.1),
    }


def gram_bench(n: int, seed: int | None, json_path: str | None = None) -> int:
    """Print the table; returns 0 (the verdicts are in the table)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, n / 10, n))
    y = rng.standard_normal(n)
    Y8 = rng.standard_normal((8, n))
    results = []
    print(f"laplexops bench --gram: n = {n:,}, float64, sorted anchors, rate 1, noise 0.1")
    print(f"{'case':<34} {'ours':>10}  {'peer':<34} {'peer time':>10}  {'ratio':>6}")
    print("-" * 110)

    def row(label: str, ours: float, peer_label: str, peer: float) -> None:
        ratio = ours / peer
        goal = GOALS.get(label)
        verdict = "" if goal is None else ("meets" if ratio <= goal else "MISSES")
        verdict += "" if goal is None else f" goal <= {goal}"
        results.append(
            {"case": label, "seconds": ours, "peer": peer_label, "peer_seconds": peer,
             "ratio": ratio, "goal": goal}
        )  # fmt: skip
        print(
            f"{label:<34} {fmt_seconds(ours):>10}  {peer_label:<34} {fmt_seconds(peer):>10}"
            f"  {ratio:6.2f}  {verdict}",
            flush=True,
        )

    G = LaplexGram(t, rate=1.0, noise=0.1)
    G.nll(y)  # the plan, and every kernel compiled
    G.nll_and_gradient(Y8)
    peer_label = "celerite2 compute + log_likelihood"
    try:
        import celerite2

        celerite = _celerite(celerite2.terms.RealTerm(a=1.0, c=1.0), t, y)
        peer = best_of(celerite, repeat=9)
        agree = abs(G.nll(y) + celerite()) / abs(celerite())
    except ImportError:
        peer_label, peer, agree = "np.fft.rfft(n) x 10 (no celerite2)", 0.0, float("nan")
        peer = 10 * best_of(lambda: np.fft.rfft(y))
    row("nll, batch 1", best_of(lambda: G.with_params().nll(y), repeat=9), peer_label, peer)
    row("nll, batch 8", best_of(lambda: G.with_params().nll(Y8), repeat=9), peer_label, peer)
    row(
        "nll + gradient, batch 1",
        best_of(lambda: G.with_params().nll_and_gradient(y), repeat=9),
        peer_label,
        peer,
    )
    row(
        "nll + gradient, batch 8",
        best_of(lambda: G.with_params().nll_and_gradient(Y8), repeat=7),
        peer_label,
        peer,
    )
    F = G.with_params()
    F.logdet()
    row("solve, batch 1, factor cached", best_of(lambda: F.solve(y)), peer_label, peer)
    row("sample, 1 draw, factor cached", best_of(lambda: F.sample(1, seed=0)), peer_label, peer)
    print(f"{'':<34} (|nll - celerite2| / |celerite2| = {agree:.1e})")
    _tinygp_row(t, y, G, row)
    _phased_rows(t, y, row)

    print("\nfloat32 anchors and data against float64 on the same values: nll relative difference")
    accuracy = {}
    for name, (a, rate, noise) in _float32_regimes(rng, n).items():
        a32 = a.astype(np.float32)
        x32 = rng.standard_normal((2, n)).astype(np.float32)
        v32 = LaplexGram(a32, rate=rate, noise=noise).nll(x32)
        v64 = LaplexGram(a32.astype(np.float64), rate=rate, noise=noise).nll(x32.astype(float))
        accuracy[name] = abs(v32 - v64) / abs(v64)
        finite = bool(np.isfinite(v32))
        print(f"  {name:<32} {accuracy[name]:.1e}  {'finite' if finite else 'NOT FINITE'}")
    if json_path:
        meta = {"n": n, "numpy": np.__version__, "machine": platform.machine()}
        with open(json_path, "w") as fh:
            json.dump({"meta": meta, "results": results, "float32": accuracy}, fh, indent=2)
    return 0


def tinygp_value_and_grad(t: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    """A call of tinygp's jitted value and gradient of the same likelihood (quasiseparable
    ``Exp`` kernel, amplitude, scale and noise as parameters; compiled and run once here).
    ``ImportError`` without tinygp (and JAX)."""
    import jax
    import jax.numpy as jnp
    from tinygp import GaussianProcess, kernels

    jax.config.update("jax_enable_x64", True)

    def nll(params, t, y):
        kernel = jnp.exp(params[0]) * kernels.quasisep.Exp(scale=jnp.exp(params[1]))
        return -GaussianProcess(kernel, t, diag=jnp.exp(params[2])).log_probability(y)

    value_and_grad = jax.jit(jax.value_and_grad(nll))
    args = (jnp.array([0.0, 0.0, np.log(0.1)]), jnp.asarray(t), jnp.asarray(y))

    def call() -> None:
        jax.block_until_ready(value_and_grad(*args))

    call()
    return call


def _tinygp_row(t: np.ndarray, y: np.ndarray, G: LaplexGram, row) -> None:
    """Value and gradient against tinygp's, if installed."""
    try:
        tinygp = tinygp_value_and_grad(t, y)
    except ImportError as exc:
        print(f"  (tinygp comparison skipped: {exc})")
        return
    row(
        "value + gradient vs tinygp",
        best_of(lambda: G.with_params().nll_and_gradient(y), repeat=9),
        "tinygp quasisep Exp, jit value+grad",
        best_of(tinygp),
    )


def _phased_rows(t: np.ndarray, y: np.ndarray, row) -> None:
    """The phased Gram (rate 1 + 2i) against celerite2's ``ComplexTerm`` of the same kernel."""
    P = LaplexGram(t, rate=complex(1.0, 2.0), noise=0.1)
    P.nll_and_gradient(y)
    try:
        import celerite2
    except ImportError:
        return
    celerite = _celerite(celerite2.terms.ComplexTerm(a=1.0, b=0.0, c=1.0, d=2.0), t, y)
    peer, label = best_of(celerite, repeat=9), "celerite2 ComplexTerm, same"
    row("phased nll, batch 1", best_of(lambda: P.with_params().nll(y), repeat=9), label, peer)
    row(
        "phased nll + gradient, batch 1",
        best_of(lambda: P.with_params().nll_and_gradient(y), repeat=9),
        label,
        peer,
    )
    agree = abs(P.nll(y) + celerite()) / abs(celerite())
    print(f"{'':<34} (|phased nll - celerite2| / |celerite2| = {agree:.1e})")


def _celerite(term, t: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    """celerite2's log-likelihood of ``y`` with ``term`` at ``t`` and noise 0.1, factorisation
    included (``compute`` + ``log_likelihood``), as a call."""
    import celerite2

    gp = celerite2.GaussianProcess(term)

    def call() -> float:
        gp.compute(t, diag=0.1, quiet=True)
        return float(gp.log_likelihood(y))

    return call
