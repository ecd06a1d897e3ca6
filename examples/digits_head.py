"""LAPLEX classification heads on scikit-learn's digits, next to dense linear heads.

The 8 x 8 digit images of :func:`sklearn.datasets.load_digits` (1,797 images, bundled with
scikit-learn: nothing is downloaded), 64 standardised pixel features, 10 classes, a fixed stratified
split (70 % to fit, 30 % held out). Every model is a pipeline ``StandardScaler -> head``:

- the dense linear head: softmax regression ``logits = X W + b`` (64 x 10 weights, 650 parameters)
  fitted by the same optimizer and loss as the LAPLEX heads (L-BFGS-B on the mean cross-entropy
  plus ``alpha / 2 |W|^2``);
- :class:`sklearn.linear_model.LogisticRegression` with its defaults (the same model, its own
  optimizer and penalty);
- :class:`laplexops.sklearn.LaplexClassifier` in several designs: one term, a phased rate, sums
  of terms, with and without per-pixel input scales.

Prints a Markdown table (held-out accuracy, parameters, their share of the dense head's) and draws
the anchors of the most accurate LAPLEX head within a quarter of the dense head's parameters to
``docs/figures/digits_anchors.png``. Seeds are fixed, so the numbers reproduce.

    pip install -e ".[sklearn,bench]"        # scikit-learn, matplotlib
    python examples/digits_head.py
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import laplexops as lx
from laplexops.sklearn import LaplexClassifier

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "digits_anchors.png"
SEED = 0
ALPHA = 1e-4
MAX_ITER = 3000

#: the LAPLEX designs compared: name -> LaplexClassifier parameters
DESIGNS = {
    "one term": dict(n_terms=1),
    "one term, phased": dict(n_terms=1, phased=True),
    "3 terms": dict(n_terms=3),
    "2 terms, phased, no input scales": dict(n_terms=2, phased=True, fit_in_scale=False),
    "3 terms, phased, no input scales": dict(n_terms=3, phased=True, fit_in_scale=False),
}


class DenseSoftmax(ClassifierMixin, BaseEstimator):
    """Softmax regression ``logits = X W + b``, fitted like LaplexClassifier: L-BFGS-B on the
    mean cross-entropy plus ``alpha / 2 |W|^2`` (the intercepts not penalised)."""

    def __init__(self, alpha: float = ALPHA, max_iter: int = MAX_ITER, tol: float = 1e-4):
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        self.classes_, index = np.unique(y, return_inverse=True)
        n, f = X.shape
        c = self.classes_.shape[0]
        Y = np.eye(c)[index]

        def loss(theta):
            W, b = theta[: f * c].reshape(f, c), theta[f * c :]
            logits = X @ W + b
            logits -= logits.max(axis=1, keepdims=True)
            log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            D = (np.exp(log_p) - Y) / n
            value = -np.sum(Y * log_p) / n + 0.5 * self.alpha * np.sum(W**2)
            return value, np.concatenate([(X.T @ D + self.alpha * W).ravel(), D.sum(axis=0)])

        result = scipy.optimize.minimize(
            loss,
            np.zeros(f * c + c),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol},
        )
        self.coef_ = result.x[: f * c].reshape(f, c)
        self.intercept_ = result.x[f * c :]
        self.n_parameters_ = result.x.size
        return self

    def predict(self, X):
        return self.classes_[np.argmax(X @ self.coef_ + self.intercept_, axis=1)]


def effective_weights(head: LaplexClassifier) -> np.ndarray:
    """The (classes, features) weight matrix a LAPLEX head applies to the scaled features."""
    weights = np.zeros((head.classes_.shape[0], head.n_features_in_))
    for anchors, rate, scale in zip(head.anchors_out_, head.rates_, head.out_scale_):
        dense = lx.LaplexOperator(anchors, head.anchors_in_, rate.item()).to_dense()
        weights += np.real(scale[:, None] * dense)
    return weights * head.in_scale_


def draw(head: LaplexClassifier, title: str, path: Path) -> None:
    """The anchors on their line, each class's weights as an image, and where each pixel goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = effective_weights(head)
    fig = plt.figure(figsize=(11, 7.2), layout="constrained")
    grid = fig.add_gridspec(3, 6, height_ratios=[1.1, 1, 1])
    line = fig.add_subplot(grid[0, :])
    pixels = np.arange(64)
    strength = np.abs(weights).max(axis=0)
    points = line.scatter(
        head.anchors_in_,
        np.zeros(64),
        c=pixels // 8,
        cmap="viridis",
        s=10 + 120 * strength / strength.max(),
        zorder=3,
    )
    fig.colorbar(points, ax=line, label="pixel row", pad=0.01, aspect=12)
    for t, anchors in enumerate(head.anchors_out_):
        level = 1 + t
        line.axhline(level, color="0.85", lw=0.8, zorder=1)
        for c, a in enumerate(anchors):
            line.annotate(
                str(head.classes_[c]), (a, level), ha="center", va="center", fontsize=11,
                fontweight="bold", color=f"C{c}",
            )  # fmt: skip
    rates = ", ".join(
        f"{r.real:.2g}{r.imag:+.2g}j" if np.iscomplexobj(r) else f"{r:.2g}" for r in head.rates_
    )
    line.set_yticks(
        range(head.anchors_out_.shape[0] + 1),
        ["pixels"] + [f"classes, term {t + 1}" for t in range(head.anchors_out_.shape[0])],
    )
    line.set_ylim(-0.7, head.anchors_out_.shape[0] + 0.7)
    line.set_xlabel(f"anchor position (rates {rates}); dot size: the pixel's largest |weight|")
    line.set_title(title)
    limit = np.abs(weights).max()
    for c in range(10):
        ax = fig.add_subplot(grid[1 + c // 5, c % 5])
        ax.imshow(weights[c].reshape(8, 8), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"weights of class {head.classes_[c]}", fontsize=9)
        ax.set_axis_off()
    route = fig.add_subplot(grid[1:, 5])
    route.imshow(np.argmax(weights, axis=0).reshape(8, 8), cmap="tab10", vmin=-0.5, vmax=9.5)
    for p in pixels:
        route.text(p % 8, p // 8, str(np.argmax(weights[:, p])), ha="center", va="center", size=7)
    route.set_title("class of each pixel's\nlargest weight", fontsize=9)
    route.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X_fit, X_test, y_fit, y_test = train_test_split(
        X, y, test_size=0.3, random_state=SEED, stratify=y
    )
    models = {
        "dense linear head (same optimizer)": DenseSoftmax(),
        "LogisticRegression": LogisticRegression(max_iter=5000),
    }
    for name, params in DESIGNS.items():
        models[f"LAPLEX: {name}"] = LaplexClassifier(
            alpha=ALPHA, max_iter=MAX_ITER, random_state=SEED, **params
        )
    dense_size = 64 * 10 + 10
    rows, fitted = [], {}
    for name, head in models.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = make_pipeline(StandardScaler(), head).fit(X_fit, y_fit)
        seconds = time.perf_counter() - start
        size = getattr(model[-1], "n_parameters_", dense_size)
        accuracy = model.score(X_test, y_test)
        fitted[name] = (model[-1], accuracy, size)
        rows.append((name, accuracy, size, seconds))
    print(f"digits: {len(y_fit)} images to fit, {len(y_test)} held out (seed {SEED})\n")
    print("| head | held-out accuracy | parameters | share of dense | fit |")
    print("|---|---:|---:|---:|---:|")
    for name, accuracy, size, seconds in rows:
        print(
            f"| {name} | {100 * accuracy:.1f} % | {size} | {100 * size / dense_size:.0f} % "
            f"| {seconds:.1f} s |"
        )
    budget = {k: v for k, v in fitted.items() if k.startswith("LAPLEX") and 4 * v[2] <= dense_size}
    best = max(budget, key=lambda k: budget[k][1])
    head, accuracy, size = budget[best]
    print(f"\nmost accurate within a quarter of the dense head's parameters: {best}")
    draw(
        head,
        f"digits, {best}: {100 * accuracy:.1f} % held out with {size} parameters",
        FIGURE,
    )
    print(f"figure: {FIGURE}")


if __name__ == "__main__":
    main()
