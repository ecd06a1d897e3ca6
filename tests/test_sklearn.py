"""``laplexops.sklearn.LaplexClassifier``: scikit-learn's estimator checks, a Pipeline, the packed
loss's gradient against finite differences, and that it learns."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from laplexops.sklearn import LaplexClassifier, _Head  # noqa: E402


@parametrize_with_checks([LaplexClassifier(), LaplexClassifier(2, phased=True)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_array_api_check_in_a_process_with_scipy_array_api():
    """The one estimator check that needs ``SCIPY_ARRAY_API=1`` set before SciPy is imported (in
    this process it reports a skip) runs in a fresh process that sets it, as scikit-learn runs it
    for an estimator without array API support: NumPy inputs with array API dispatch enabled."""
    code = (
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from laplexops.sklearn import LaplexClassifier\n"
        "check_array_api_input('LaplexClassifier', LaplexClassifier(), array_namespace='numpy',\n"
        "                      expect_only_array_outputs=False)\n"
        "print('passed')\n"
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["passed"]


def blobs(rng, n_per_class, n_classes, n_features, spread=0.3):
    """Separable classes: class c has mean +3 on its own block of features, 0 elsewhere."""
    means = np.zeros((n_classes, n_features))
    block = n_features // n_classes
    for c in range(n_classes):
        means[c, c * block : (c + 1) * block] = 3.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = means[y] + spread * rng.standard_normal((y.shape[0], n_features))
    return X, y


def test_learns_a_separable_problem(rng):
    X, y = blobs(rng, 60, 4, 12)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    clf = LaplexClassifier(random_state=0).fit(Xtr, ytr)
    assert clf.score(Xtr, ytr) == 1.0
    assert clf.score(Xte, yte) >= 0.95
    proba = clf.predict_proba(Xte)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(Xte))
    assert clf.n_parameters_ == 2 * 12 + (2 * 4 + 1) + 4
    # the fit went downhill from the initial parameters
    head = _Head(12, 4, 1, False)
    Y = np.eye(4)[ytr]
    start = clf._initial(head, Xtr, Y)
    assert clf.loss_ < 0.1 * head.loss(start, Xtr, Y, clf.alpha)[0]


def test_string_labels_and_two_classes(rng):
    X, y = blobs(rng, 40, 2, 6)
    labels = np.array(["no", "yes"])[y]
    clf = LaplexClassifier(random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.decision_function(X).shape == (80,)
    assert np.array_equal(clf.predict(X), np.where(clf.decision_function(X) > 0, "yes", "no"))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=200
def test_in_a_pipeline_with_a_grid_search(rng):
    X, y = blobs(rng, 30, 3, 9, spread=1.0)
    X = 100.0 * X + 50.0  # scaled and shifted: the pipeline's scaler undoes it
    pipe = make_pipeline(StandardScaler(), LaplexClassifier(max_iter=200, random_state=0))
    search = GridSearchCV(pipe, {"laplexclassifier__alpha": [1e-4, 1e-1]}, cv=3).fit(X, y)
    assert search.best_params_["laplexclassifier__alpha"] in (1e-4, 1e-1)
    assert search.score(X, y) >= 0.9
    fitted = search.best_estimator_[-1]
    assert fitted.n_features_in_ == 9
    assert fitted.anchors_in_.shape == (9,)
    assert fitted.anchors_out_.shape == (1, 3)


@pytest.mark.parametrize(
    "n_terms, phased, in_scale",
    [(1, False, True), (2, False, True), (2, True, True), (2, True, False)],
)
def test_packed_gradient_matches_finite_differences(rng, n_terms, phased, in_scale):
    n, f, c = 25, 7, 4
    X = rng.standard_normal((n, f))
    Y = np.eye(c)[rng.integers(0, c, n)]
    head = _Head(f, c, n_terms, phased, in_scale)
    assert (
        head.size
        == (2 if in_scale else 1) * f + n_terms * ((3 if phased else 2) * c + 1 + phased) + c
    )
    theta = rng.standard_normal(head.size)
    p = head.unpack(theta)
    p["anchors_in"][:] = rng.uniform(-1.0, 1.0, f)  # distinct anchors: no kink of |x - y| nearby
    p["anchors_out"][:] = rng.uniform(-1.0, 1.0, (n_terms, c))
    p["log_rate"][:] = np.log(rng.uniform(0.5, 3.0, n_terms))
    alpha = 0.01
    loss, grad = head.loss(theta, X, Y, alpha)
    assert grad.shape == theta.shape
    step = 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = step
        numeric[i] = (
            head.loss(theta + e, X, Y, alpha)[0] - head.loss(theta - e, X, Y, alpha)[0]
        ) / (2 * step)
    scale = np.abs(numeric).max()
    assert np.abs(grad - numeric).max() <= 1e-6 * scale + 1e-9
    # the gradient of every named parameter is present (none left at zero by mistake)
    for name, part in head.slices.items():
        assert np.any(grad[part] != 0.0), name


def test_phased_weights_oscillate_and_differ_from_real(rng):
    X, y = blobs(rng, 30, 3, 6)
    real = LaplexClassifier(random_state=0).fit(X, y)
    phased = LaplexClassifier(phased=True, random_state=0).fit(X, y)
    assert real.rates_.dtype.kind == "f"
    assert phased.rates_.dtype.kind == "c"
    assert phased.out_scale_.dtype.kind == "c"
    assert phased.n_parameters_ == real.n_parameters_ + 1 + 3
    assert phased.score(X, y) == 1.0
    unscaled = LaplexClassifier(phased=True, fit_in_scale=False, random_state=0).fit(X, y)
    assert unscaled.n_parameters_ == phased.n_parameters_ - 6
    assert np.array_equal(unscaled.in_scale_, np.ones(6))
    assert unscaled.score(X, y) == 1.0


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        LaplexClassifier().fit(np.ones((5, 2)), np.zeros(5))


def test_invalid_parameters_are_errors():
    X, y = np.eye(4), np.array([0, 1, 0, 1])
    for bad in (
        {"n_terms": 0},
        {"alpha": -1.0},
        {"rate_init": 0.0},
        {"max_iter": 0},
        {"phased": "yes"},
    ):
        with pytest.raises(ValueError, match="parameter"):
            LaplexClassifier(**bad).fit(X, y)


@pytest.mark.parametrize("phased", [False, True])
def test_a_line_search_step_to_an_extreme_rate_gives_a_finite_loss(rng, phased):
    """L-BFGS's trial steps can reach any ``log_rate``; beyond ``LOG_RATE_BOUND`` the loss is
    flat in it (finite, zero gradient there) instead of the rate overflowing; within, the loss
    and gradient are those of ``exp(log_rate)``."""
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    Y = np.eye(2)[y]
    head = _Head(3, 2, 1, phased)
    theta = LaplexClassifier(random_state=0)._initial(head, X, Y)
    value, grad = head.loss(theta, X, Y, 1e-4)
    p = head.unpack(theta.copy())
    assert abs(p["log_rate"][0]) < head.LOG_RATE_BOUND
    for extreme in (800.0, -800.0):
        p["log_rate"][0] = extreme
        far, far_grad = head.loss(head.pack(p), X, Y, 1e-4)
        assert np.isfinite(far) and np.all(np.isfinite(far_grad))
        assert head.unpack(far_grad)["log_rate"][0] == 0.0
    # within the bound: a finite-difference check of the log-rate derivative
    p = head.unpack(theta.copy())
    h = 1e-6
    p["log_rate"][0] += h
    up, _ = head.loss(head.pack(p), X, Y, 1e-4)
    p["log_rate"][0] -= 2 * h
    down, _ = head.loss(head.pack(p), X, Y, 1e-4)
    assert abs((up - down) / (2 * h) - head.unpack(grad)["log_rate"][0]) <= 1e-6 * max(
        1.0, abs(value)
    )
