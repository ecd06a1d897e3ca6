"""A LaplexGram covariance fitted to handwritten digits, next to diagonal and dense Gaussians.

scikit-learn's bundled 8 x 8 digits (1,797 images, nothing downloaded) are dequantised (uniform
noise added to the integer grey levels 0..16, then divided by 17) and flattened to 64 pixels; a
fixed stratified split keeps 30 % of the images out. Three Gaussians share the training images'
mean:

- diagonal: one variance per pixel (64 parameters);
- dense: the empirical covariance of the training images (64 * 65 / 2 = 2,080 parameters), with the
  ridge (added to its diagonal) that gives the best held-out likelihood, an oracle choice that
  favours it;
- LaplexGram: ``Σ = diag(w) K(a, a) diag(w) + diag(u)``, ``K = exp(-s |a_i - a_j|)``, with a
  learnable anchor ``a``, weight ``w`` and noise ``u`` per pixel and one rate ``s`` (193
  parameters), fitted by L-BFGS on :meth:`~laplexops.LaplexGram.nll_and_gradient` (the anchors
  move freely: the filter re-sorts them on every step);
- the phased LaplexGram: the same with a complex rate ``s = a + iω``, ``K = exp(-a |d|) cos(ω d)``
  (194 parameters).

Prints the held-out negative log-likelihood per image (nats) and draws samples of the fitted model
beside real images (``docs/figures/gram_digits_samples.png``) and the learned anchors, pixel by
pixel and on their line (``docs/figures/gram_digits_anchors.png``). Seeds are fixed.

    pip install -e ".[sklearn,bench]"        # scikit-learn, matplotlib
    python examples/gram_digits.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.optimize
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import laplexops as lx

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
SEED = 0


def gaussian_nll(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """Mean negative log-likelihood of the rows of ``X`` under ``N(mean, cov)`` (dense)."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (X - mean).T)
    n = X.shape[1]
    return float(0.5 * np.mean(np.sum(z**2, axis=0)) + np.log(np.diag(chol)).sum()
                 + 0.5 * n * np.log(2 * np.pi))  # fmt: skip


class GramModel:
    """The LaplexGram's parameters packed into one vector for L-BFGS: ``(a, log s, w, log u)``,
    or for a phased Gram ``(a, log Re s, Im s, w, log u)``."""

    def __init__(self, n: int, phased: bool = False) -> None:
        self.n = n
        self.phased = phased

    def unpack(
        self, theta: np.ndarray
    ) -> tuple[np.ndarray, float | complex, np.ndarray, np.ndarray]:
        n, extra = self.n, int(self.phased)
        rate: float | complex = float(np.exp(theta[n]))
        if self.phased:
            rate = complex(rate, theta[n + 1])
        return (
            theta[:n],
            rate,
            theta[n + 1 + extra : 2 * n + 1 + extra],
            np.exp(theta[2 * n + 1 + extra :]),
        )

    def gram(self, theta: np.ndarray) -> lx.LaplexGram:
        a, rate, w, u = self.unpack(theta)
        return lx.LaplexGram(a, rate=rate, weights=w, noise=u)

    def objective(self, theta: np.ndarray, X: np.ndarray, mean: np.ndarray):
        a, rate, w, u = self.unpack(theta)
        value, g = lx.LaplexGram(a, rate=rate, weights=w, noise=u).nll_and_gradient(X, mean)
        if self.phased:  # g.rate = dL/d Re s + i dL/d Im s
            rates = [g.rate.real * rate.real, g.rate.imag]
        else:
            rates = [g.rate * rate]
        return value, np.concatenate([g.a, rates, g.weights, g.noise * u])


def fit_gram(X: np.ndarray, mean: np.ndarray, phased: bool = False, iterations: int = 3000):
    """L-BFGS from the pixels in raster order on a line, the rate 1 (a phased one ``1 + 0.5 i``),
    ``w`` the pixels' standard deviations and ``u`` a tenth of their variances."""
    n = X.shape[1]
    model = GramModel(n, phased)
    std = X.std(axis=0)
    rates = [0.0, 0.5] if phased else [0.0]
    theta = np.concatenate([np.arange(n) * 0.25, rates, std, np.log(0.1 * std**2)])
    result = scipy.optimize.minimize(
        model.objective,
        theta,
        args=(X, mean),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": iterations, "maxfun": 2 * iterations},
    )
    return model, result


def draw(gram: lx.LaplexGram, mean: np.ndarray, X_test: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = gram.sample(12, seed=SEED) + mean
    fig, axes = plt.subplots(2, 12, figsize=(12, 2.4), layout="constrained")
    for i in range(12):
        for row, images, label in (
            (0, X_test, "held-out images"),
            (1, samples, "LaplexGram draws"),
        ):
            ax = axes[row, i]
            ax.imshow(images[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.savefig(FIGURES / "gram_digits_samples.png", dpi=110)
    plt.close(fig)

    a = np.asarray(gram.a)
    weights = np.asarray(gram.weights)
    fig = plt.figure(figsize=(11, 3.6), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 2.4])
    rank = np.empty(64)
    rank[np.argsort(a, kind="stable")] = np.arange(64)
    ax = fig.add_subplot(grid[0])
    im = ax.imshow(rank.reshape(8, 8), cmap="viridis")
    for p in range(64):
        ax.text(p % 8, p // 8, str(int(rank[p])), ha="center", va="center", size=6, color="w")
    ax.set_title("each pixel's place in\nthe learned anchor order", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax = fig.add_subplot(grid[1])
    im = ax.imshow(np.abs(weights).reshape(8, 8), cmap="magma")
    ax.set_title("|weight| per pixel", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax = fig.add_subplot(grid[2])
    pixels = np.arange(64)
    ax.scatter(
        a,
        pixels // 8,
        c=pixels % 8,
        cmap="twilight",
        s=12 + 60 * np.abs(weights) / np.abs(weights).max(),
    )
    ax.set_xlabel(f"anchor position (rate {gram.rate:.3g}; colour: pixel column; size: |weight|)")
    ax.set_ylabel("pixel row")
    ax.invert_yaxis()
    ax.set_title("the anchors on their line", fontsize=9)
    fig.savefig(FIGURES / "gram_digits_anchors.png", dpi=110)
    plt.close(fig)


def main() -> None:
    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(SEED)
    X = (images + rng.uniform(0.0, 1.0, images.shape)) / 17.0  # dequantised, in (0, 1)
    X_fit, X_test = train_test_split(X, test_size=0.3, random_state=SEED, stratify=labels)
    mean = X_fit.mean(axis=0)
    n = X.shape[1]
    rows = []

    diagonal = np.diag(X_fit.var(axis=0))
    rows.append(("diagonal Gaussian", n, gaussian_nll(X_test, mean, diagonal), 0.0))

    empirical = np.cov(X_fit.T, bias=True)
    ridges = 10.0 ** np.arange(-6.0, 0.5, 0.5)
    scores = [gaussian_nll(X_test, mean, empirical + r * np.eye(n)) for r in ridges]
    best = int(np.argmin(scores))
    rows.append((f"dense Gaussian (ridge {ridges[best]:.0e}, the best on held-out data)",
                 n * (n + 1) // 2, scores[best], 0.0))  # fmt: skip

    grams = {}
    for phased, name in ((False, "LaplexGram (anchors, weights, noise, rate)"),
                         (True, "phased LaplexGram (the same, a complex rate)")):  # fmt: skip
        start = time.perf_counter()
        model, result = fit_gram(X_fit, mean, phased)
        seconds = time.perf_counter() - start
        gram = model.gram(result.x)
        grams[phased] = (gram, result)
        rows.append((name, 3 * n + 1 + phased, gram.nll(X_test, mean), seconds))

    gram, result = grams[False]
    print(f"digits: {len(X_fit)} images to fit, {len(X_test)} held out, 64 pixels (seed {SEED})")
    for phased, (fitted, res) in grams.items():
        print(f"{'phased ' if phased else ''}LaplexGram fit: {res.nit} L-BFGS iterations, "
              f"rate {fitted.rate:.3g}, {res.message}")  # fmt: skip
    print()
    print("| model | parameters | held-out NLL per image (nats) | fit |")
    print("|---|---:|---:|---:|")
    for name, size, nll, secs in rows:
        print(f"| {name} | {size:,} | {nll:.1f} | {secs:.1f} s |")
    FIGURES.mkdir(parents=True, exist_ok=True)
    draw(gram, mean, X_test)
    print(
        f"\nfigures: {FIGURES / 'gram_digits_samples.png'}, {FIGURES / 'gram_digits_anchors.png'}"
    )


if __name__ == "__main__":
    main()
