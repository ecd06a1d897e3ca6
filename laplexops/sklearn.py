"""scikit-learn integration: :class:`LaplexClassifier`, a softmax classifier whose weights are a
LAPLEX matrix.

Import it as ``laplexops.sklearn`` (``import laplexops`` does not import scikit-learn)::

    pip install "laplexops[sklearn]"

The model, for features ``X`` of shape ``(n_samples, n_features)`` and ``n_classes`` classes::

    logits = sum_t Re( out_scale[t] * (W_t @ (in_scale * X).T) ) + intercept
    W_t[c, f] = exp(-rate[t] * |anchors_out[t, c] - anchors_in[f]|)

Every feature sits at one input anchor on a line with a scale, every class at one output anchor per
term; the weight of feature ``f`` for class ``c`` decays with their distance on the line. The
parameters are fitted by L-BFGS (``scipy.optimize.minimize``) on the softmax cross-entropy with
an L2 penalty, its gradient coming from :meth:`~laplexops.LaplexOperator.gradient`: one product and
one gradient call per term and loss evaluation, all samples at once as the columns of ``X.T``.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.optimize

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "laplexops.sklearn needs scikit-learn >= 1.6: pip install 'laplexops[sklearn]'"
    ) from exc

from ._operator import LaplexOperator

__all__ = ["LaplexClassifier"]


class _Head:
    """The parameters of a LAPLEX head packed into one real vector, and the head's loss with its
    gradient as a function of that vector.

    ``loss`` is the function L-BFGS minimises. The vector holds, in order: ``anchors_in`` (F),
    ``in_scale`` (F; absent when the scales are fixed at 1, ``in_scale=False``), ``anchors_out``
    (T, C), ``log_rate`` (T) and, for a phased head, ``frequency`` (T) (the rate of term t is
    ``exp(log_rate[t]) + 1j * frequency[t]``), ``out_scale`` (T, C) and, for a phased head, its
    imaginary part ``out_scale_imag`` (T, C), then ``intercept`` (C).
    """

    def __init__(
        self, n_features: int, n_classes: int, n_terms: int, phased: bool, in_scale: bool = True
    ) -> None:
        f, c, t = n_features, n_classes, n_terms
        shapes: list[tuple[str, tuple[int, ...]]] = [("anchors_in", (f,))]
        if in_scale:
            shapes.append(("in_scale", (f,)))
        shapes += [("anchors_out", (t, c)), ("log_rate", (t,))]
        if phased:
            shapes.append(("frequency", (t,)))
        shapes.append(("out_scale", (t, c)))
        if phased:
            shapes.append(("out_scale_imag", (t, c)))
        shapes.append(("intercept", (c,)))
        self.shapes = dict(shapes)
        self.slices: dict[str, slice] = {}
        start = 0
        for name, shape in shapes:
            size = int(np.prod(shape))
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start
        self.phased = phased
        self.n_terms = n_terms
        self._ops: list[LaplexOperator | None] = [None] * n_terms

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The named parameters: views of ``theta`` in their shapes."""
        return {name: theta[part].reshape(self.shapes[name]) for name, part in self.slices.items()}

    def pack(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """The vector of the named parameters (the inverse of :meth:`unpack`)."""
        theta = np.empty(self.size)
        for name, part in self.slices.items():
            theta[part] = np.ravel(params[name])
        return theta

    #: ``log_rate`` is held within this bound where it sets the rate (``exp`` of it stays finite,
    #: and no feature scale needs a rate beyond it): a line search's long trial step would
    #: otherwise overflow the rate; beyond it the loss is flat in ``log_rate``
    LOG_RATE_BOUND = 40.0

    def real_rates(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """``exp(log_rate)``, ``log_rate`` held within ``LOG_RATE_BOUND``."""
        return np.exp(np.clip(p["log_rate"], -self.LOG_RATE_BOUND, self.LOG_RATE_BOUND))

    def rates(self, p: dict[str, np.ndarray]) -> list[float | complex]:
        """Each term's rate: ``exp(log_rate)``, plus ``1j * frequency`` for a phased head."""
        real = self.real_rates(p)
        if not self.phased:
            return [float(r) for r in real]
        return [complex(r, w) for r, w in zip(real, p["frequency"])]

    def out_scales(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """``out_scale`` (T, C), complex for a phased head."""
        if self.phased:
            return p["out_scale"] + 1j * p["out_scale_imag"]
        return p["out_scale"]

    def _operators(self, p: dict[str, np.ndarray], reuse: bool) -> list[LaplexOperator]:
        """The terms' operators; with ``reuse``, each repairs the plan of the previous call's
        (an optimizer step moves the anchors a little: ``with_anchors``)."""
        ops = []
        for t, rate in enumerate(self.rates(p)):
            previous = self._ops[t] if reuse else None
            if previous is None:
                op = LaplexOperator(p["anchors_out"][t], p["anchors_in"], rate)
            else:
                op = previous.with_anchors(p["anchors_out"][t], p["anchors_in"]).with_rate(rate)
            ops.append(op)
        if reuse:
            self._ops = list(ops)
        return ops

    def loss(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, alpha: float
    ) -> tuple[float, np.ndarray]:
        """The mean softmax cross-entropy of the one-hot targets ``Y`` (n_samples, n_classes) plus
        ``alpha / 2 * (|in_scale|^2 + |out_scale|^2)``, and its gradient with respect to
        ``theta``. O((F + C) T n_samples) after the plans (sorts of F and C anchors)."""
        p = self.unpack(theta)
        n = X.shape[0]
        fit_in_scale = "in_scale" in p
        # the operand: one column per sample
        V = p["in_scale"][:, None] * X.T if fit_in_scale else np.ascontiguousarray(X.T)
        ops = self._operators(p, reuse=True)
        scales = self.out_scales(p)
        products = [op.matmat(V) for op in ops]
        logits = p["intercept"][:, None] + sum(
            np.real(s[:, None] * Z) for s, Z in zip(scales, products)
        )
        logits = logits - logits.max(axis=0)
        log_norm = np.log(np.exp(logits).sum(axis=0))
        log_proba = logits - log_norm
        loss = -float(np.einsum("nc,cn->", Y, log_proba)) / n
        D = (np.exp(log_proba) - Y.T) / n  # d loss / d logits, (C, n)

        grad = self.unpack(np.zeros(self.size))
        real = self.real_rates(p)
        grad["intercept"][:] = D.sum(axis=1)
        grad_v = np.zeros_like(V) if fit_in_scale else None
        for t, (op, scale, Z) in enumerate(zip(ops, scales, products)):
            # logits += Re(scale * Z): d loss / d Z = conj(scale) * D (the gradient's convention)
            g = op.gradient(V, np.conj(scale)[:, None] * D if self.phased else scale[:, None] * D)
            grad["anchors_out"][t] = g.x
            grad["anchors_in"] += g.y
            inside = abs(p["log_rate"][t]) <= self.LOG_RATE_BOUND
            grad["log_rate"][t] = np.real(g.rate) * real[t] if inside else 0.0
            if self.phased:
                grad["frequency"][t] = np.imag(g.rate)
                grad["out_scale"][t] = np.einsum("cn,cn->c", D, Z.real)
                grad["out_scale_imag"][t] = -np.einsum("cn,cn->c", D, Z.imag)
            else:
                grad["out_scale"][t] = np.einsum("cn,cn->c", D, Z)
            if grad_v is not None:
                grad_v += g.v
        if grad_v is not None:
            grad["in_scale"][:] = np.einsum("fn,nf->f", grad_v, X)

        penalized = ["out_scale"] + (["out_scale_imag"] if self.phased else [])
        penalized += ["in_scale"] if fit_in_scale else []
        for name in penalized:
            loss += 0.5 * alpha * float(np.sum(p[name] ** 2))
            grad[name] += alpha * p[name]
        return loss, self.pack(grad)


def _evenly(order_by: np.ndarray) -> np.ndarray:
    """Positions evenly spaced on [-1, 1], in the order of ``order_by`` (ties by index)."""
    n = order_by.shape[0]
    positions = np.empty(n)
    positions[np.argsort(order_by, kind="stable")] = np.linspace(-1.0, 1.0, n) if n > 1 else 0.0
    return positions


class LaplexClassifier(ClassifierMixin, BaseEstimator):
    """Softmax classifier whose class-by-feature weights form a LAPLEX matrix.

    Each feature ``f`` gets an input anchor ``anchors_in_[f]`` on a line and a scale
    ``in_scale_[f]``; each class ``c`` an output anchor ``anchors_out_[t, c]`` and a scale
    ``out_scale_[t, c]`` per term ``t``. The logits are ::

        logits[n, c] = sum_t Re(out_scale_[t, c] * sum_f W_t[c, f] * in_scale_[f] * X[n, f])
                       + intercept_[c]
        W_t[c, f] = exp(-rates_[t] * |anchors_out_[t, c] - anchors_in_[f]|)

    so a feature weighs most in the classes anchored near it. For ``F`` features, ``C`` classes
    and ``T`` terms the model has ``2 F + T (2 C + 1) + C`` parameters (``2 F + T (3 C + 2) + C``
    phased; ``F`` fewer without input scales) instead of the dense ``F C + C``, and a product
    costs O((F + C) T) per sample instead of O(F C).

    Parameters
    ----------
    n_terms : int, default=1
        The number of terms T. They share the input anchors and scales; each has its own output
        anchors, rate and output scales.
    phased : bool, default=False
        Complex rates ``a + i w`` and complex output scales: the weights
        ``Re(out_scale * exp(-(a + i w) |d|))`` oscillate with the distance ``d`` instead of only
        decaying, so a feature can count for one class and against a nearby one.
    fit_in_scale : bool, default=True
        Fit a scale per feature. With ``False`` every input scale is 1, which saves ``F``
        parameters: the features then differ only by their anchors.
    alpha : float, default=1e-4
        The L2 penalty on the input and output scales, added to the mean cross-entropy as
        ``alpha / 2 * (|in_scale|^2 + |out_scale|^2)``. The anchors, rates and intercepts are not
        penalised.
    rate_init : float, default=3.0
        The initial rate of every term (its real part when ``phased``; the initial frequency is
        the same value). The anchors start on [-1, 1], so 3 means a weight decays by ``e`` over a
        sixth of that interval.
    max_iter : int, default=500
        The maximum number of L-BFGS iterations.
    tol : float, default=1e-4
        L-BFGS stops when the largest component of the projected gradient falls below ``tol``.
    random_state : int, RandomState instance or None, default=None
        Seeds the small random part of the initial scales (see Notes).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        The number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features,)
        The feature names, when ``X`` has string column names (a pandas DataFrame).
    anchors_in_ : ndarray of shape (n_features,)
        The input anchor of every feature.
    in_scale_ : ndarray of shape (n_features,)
        The input scale of every feature (ones when ``fit_in_scale=False``).
    anchors_out_ : ndarray of shape (n_terms, n_classes)
        The output anchor of every class in every term.
    rates_ : ndarray of shape (n_terms,)
        The rate of every term (complex when ``phased``).
    out_scale_ : ndarray of shape (n_terms, n_classes)
        The output scale of every class in every term (complex when ``phased``).
    intercept_ : ndarray of shape (n_classes,)
        The intercept of every class.
    n_parameters_ : int
        The number of fitted parameters (real numbers).
    n_iter_ : int
        The number of L-BFGS iterations run.
    loss_ : float
        The penalised loss at the end of the fit.

    See Also
    --------
    laplexops.LaplexOperator : The operator the classifier's weights are.

    Notes
    -----
    The loss is the mean softmax cross-entropy plus the L2 penalty; its gradient with respect to
    the anchors, the rates and the scales comes from one
    :meth:`~laplexops.LaplexOperator.gradient` call per term (all samples as the columns of one
    ``matmat``), and L-BFGS-B of ``scipy.optimize.minimize`` fits all parameters at once. The
    rates are fitted as ``log(Re(rate))``, which keeps them valid.

    Initialisation: the class means of the centred features form a ``(C, F)`` matrix; its first
    left and right singular vectors order the classes and the features, which are placed evenly
    on [-1, 1] in that order (term ``t`` takes the ``t``-th left singular vector for its
    classes, cyclically), so that classes and features that go together start close. The input
    scales start at ``0.1 * sqrt(F) * v_f`` and the first term's output scales at
    ``0.1 * sqrt(C) * u_c`` (``u``, ``v`` the first singular vectors), the other terms' at 0,
    all plus a normal perturbation of standard deviation 0.01 drawn from ``random_state``; the
    rates at ``rate_init`` (and the frequencies of a phased head at ``rate_init``), the
    intercepts at the log class frequencies.

    Scale the features first (``make_pipeline(StandardScaler(), LaplexClassifier())``): the
    penalty and the optimizer assume features of comparable scale.

    Examples
    --------
    >>> from laplexops.sklearn import LaplexClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 6))
    >>> y = (X[:, 0] + X[:, 3] > 0).astype(int)
    >>> clf = LaplexClassifier(random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.95
    True
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> clf.n_parameters_  # 2 * 6 + (2 * 2 + 1) + 2
    19
    """

    _parameter_constraints: dict = {
        "n_terms": [Interval(Integral, 1, None, closed="left")],
        "phased": ["boolean"],
        "fit_in_scale": ["boolean"],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_terms: int = 1,
        *,
        phased: bool = False,
        fit_in_scale: bool = True,
        alpha: float = 1e-4,
        rate_init: float = 3.0,
        max_iter: int = 500,
        tol: float = 1e-4,
        random_state: Any = None,
    ) -> None:
        self.n_terms = n_terms
        self.phased = phased
        self.fit_in_scale = fit_in_scale
        self.alpha = alpha
        self.rate_init = rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # the features become the dense operand of a product
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def fit(self, X: Any, y: Any) -> LaplexClassifier:
        """Fit the anchors, rates, scales and intercepts to ``X`` and ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features (dense, finite).
        y : array-like of shape (n_samples,)
            The class labels (at least two classes).

        Returns
        -------
        LaplexClassifier
            The fitted estimator.

        Raises
        ------
        ValueError
            Invalid parameters, features that are not finite, or ``y`` with only one class.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, index = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                f"LaplexClassifier needs samples of at least 2 classes; got 1 class: {classes[0]!r}"
            )
        self.classes_ = classes
        n_classes = classes.shape[0]
        Y = np.zeros((X.shape[0], n_classes))
        Y[np.arange(X.shape[0]), index] = 1.0

        head = _Head(X.shape[1], n_classes, self.n_terms, self.phased, self.fit_in_scale)
        theta0 = self._initial(head, X, Y)
        # BLAS gains nothing from threads on the optimizer's small vectors, and its workers,
        # spinning between calls, would take the cores from the kernels of large products
        with threadpool_limits(limits=1, user_api="blas"):
            result = scipy.optimize.minimize(
                head.loss,
                theta0,
                args=(X, Y, float(self.alpha)),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": self.max_iter, "gtol": self.tol},
            )
        if result.status == 1:
            warnings.warn(
                f"L-BFGS stopped at max_iter={self.max_iter} iterations before converging; "
                "increase max_iter or scale the features",
                ConvergenceWarning,
                stacklevel=2,
            )
        p = head.unpack(result.x.copy())
        self.anchors_in_ = p["anchors_in"]
        self.in_scale_ = p["in_scale"] if self.fit_in_scale else np.ones(X.shape[1])
        self.anchors_out_ = p["anchors_out"]
        self.rates_ = np.asarray(head.rates(p))
        self.out_scale_ = head.out_scales(p)
        self.intercept_ = p["intercept"]
        self.n_parameters_ = head.size
        self.n_iter_ = int(result.nit)
        self.loss_ = float(result.fun)
        return self

    def _initial(self, head: _Head, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The initial parameters (the class docstring's Notes)."""
        n_features, n_classes = X.shape[1], Y.shape[1]
        counts = Y.sum(axis=0)
        means = (Y.T @ (X - X.mean(axis=0))) / counts[:, None]  # (C, F)
        u, _, vt = np.linalg.svd(means, full_matrices=False)
        rank = u.shape[1]
        rng = check_random_state(self.random_state)
        p = head.unpack(np.zeros(head.size))
        p["anchors_in"][:] = _evenly(vt[0])
        if self.fit_in_scale:
            p["in_scale"][:] = 0.1 * np.sqrt(n_features) * vt[0]
            p["in_scale"] += 0.01 * rng.standard_normal(n_features)
        for t in range(self.n_terms):
            p["anchors_out"][t] = _evenly(u[:, t % rank])
        p["out_scale"][0] = 0.1 * np.sqrt(n_classes) * u[:, 0]
        p["out_scale"] += 0.01 * rng.standard_normal((self.n_terms, n_classes))
        p["log_rate"][:] = np.log(self.rate_init)
        if self.phased:
            p["frequency"][:] = self.rate_init
        p["intercept"][:] = np.log(counts / counts.sum())
        return head.pack(p)

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            The logits; for two classes the logit of ``classes_[1]`` minus that of
            ``classes_[0]``.
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """The class probabilities (the softmax of the logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            The probability of each class in ``classes_``; rows sum to 1.
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithms of the class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def _logits(self, X: Any) -> np.ndarray:
        """The logits, shape ``(n_samples, n_classes)``, from the fitted parameters."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        V = self.in_scale_[:, None] * X.T
        out = np.repeat(self.intercept_[:, None], X.shape[0], axis=1)
        for anchors, rate, scale in zip(self.anchors_out_, self.rates_, self.out_scale_):
            op = LaplexOperator(anchors, self.anchors_in_, rate.item())
            out += np.real(scale[:, None] * op.matmat(V))
        return out.T
