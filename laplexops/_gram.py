"""``LaplexGram``: the covariance ``Σ = diag(w) K(a, a) diag(w) + diag(u)`` with its exact O(n)
solve, log-determinant, sampler and Gaussian likelihood (front end: validation, namespaces, the
plan and factor caches; the filter itself is the backend's, see :class:`~laplexops.backends.
GramBackend`)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _namespace as ns
from ._operator import LaplexOperator, _check_rate
from .backends import GramBackend, Side

__all__ = ["LaplexGram", "GramGradients"]

_KEEP = object()  # with_params: this parameter unchanged


class GramGradients(NamedTuple):
    """The gradients of :meth:`LaplexGram.nll`, as :meth:`LaplexGram.nll_gradient` returns them.

    Each field is the derivative of the mean negative log-likelihood with respect to one
    parameter, in that parameter's form: arrays of shape ``(n,)`` in the anchors' namespace, order
    and dtype; a Python float for the rate, and for weights or noise given as one number (or left
    at their defaults), the derivative with respect to that one number.

    Attributes
    ----------
    a : array, shape (n,)
        With respect to the anchors.
    rate : float or complex
        With respect to the rate; for a phased Gram (complex rate ``a + iω``) the complex
        ``dL/da + i dL/dω``.
    weights : array of shape (n,), or float
        With respect to the weights ``w``.
    noise : array of shape (n,), or float
        With respect to the noise variances ``u``.
    mean : array, shape (n,)
        With respect to the mean (also when it was left at zero).

    Examples
    --------
    >>> G = lx.LaplexGram(np.array([0.0, 0.4, 1.0]), noise=0.1)
    >>> g = G.nll_gradient(np.array([[1.0, -0.5, 0.25]]))
    >>> g._fields
    ('a', 'rate', 'weights', 'noise', 'mean')
    """

    a: Any
    rate: float | complex
    weights: Any
    noise: Any
    mean: Any


class LaplexGram:
    """The Gram (covariance) matrix ``Σ = diag(w) K diag(w) + diag(u)``, ``K[i, j] = exp(-rate
    |a_i - a_j|)``, with exact O(n) solve, log-determinant, sampling and likelihood.

    ``K`` is the covariance of an Ornstein-Uhlenbeck process at the anchors, so over the anchors in
    sorted order ``Σ`` is the covariance of a scalar linear-Gaussian state-space model: a Kalman
    filter in covariance form is its LDLᵀ factorisation, computed once per parameter set in O(n)
    on the plan (the sort of the anchors, shared with every Gram from :meth:`with_params`). No
    dense matrix, no iterative solver. Every term of the variance recursion is non-negative and
    sums are accumulated in float64, for float32 data too. Repeated anchors (ties) are exact.

    Parameters
    ----------
    a : array_like, shape (n,)
        The anchors: a real 1-D array of any array-API namespace or a sequence of numbers, in any
        order; copied.
    rate : float or complex, optional
        The rate ``s > 0`` (default 1.0), or a complex ``s = a + iω`` with ``a > 0``: the *phased*
        Gram, kernel ``K[i, j] = Re exp(-s |a_i - a_j|) = exp(-a |d|) cos(ω d)`` (positive
        definite for every ``a > 0``; a two-state filter).
    weights : float or array_like of shape (n,), optional
        The scales ``w`` (default 1): any finite real values.
    noise : float or array_like of shape (n,), optional
        The noise variances ``u >= 0`` added to the diagonal (default 0).
    backend : str or Backend, optional
        As for :class:`LaplexOperator`; the backend must implement
        :class:`~laplexops.backends.GramBackend` (the Numba backend does).

    Raises
    ------
    ValueError
        Anchors, weights or noise that are not finite, negative noise, weights or noise of another
        length than the anchors, a rate that is not finite or not > 0.
    TypeError
        Non-numeric or complex anchors, weights or noise; arrays of different namespaces or
        devices.
    NotImplementedError
        A backend without the Gram's kernels (the CuPy backend, for now).

    See Also
    --------
    LaplexOperator : The rectangular operator ``exp(-rate |x_i - y_j|)``.
    GramGradients : What :meth:`nll_gradient` returns.

    Notes
    -----
    Costs: the plan O(n log n) once (O(n) for sorted anchors); the factor O(n) once per parameter
    set (on the first call that needs it); :meth:`solve`, :meth:`sample`, :meth:`nll` and
    :meth:`nll_gradient` O(n k) for k columns; :meth:`logdet` O(1) after the factor. Memory O(n)
    for the factor, O(n k) for the gradient. A singular ``Σ`` (noise 0 at repeated anchors, or
    weight and noise both 0) raises :class:`numpy.linalg.LinAlgError` naming the cause.

    Examples
    --------
    >>> a = np.array([0.3, 0.0, 1.2, 0.7])
    >>> G = lx.LaplexGram(a, rate=2.0, weights=1.5, noise=0.1)
    >>> dense = 2.25 * np.exp(-2.0 * np.abs(a[:, None] - a[None, :])) + 0.1 * np.eye(4)
    >>> b = np.array([1.0, -2.0, 0.5, 0.0])
    >>> np.allclose(G @ b, dense @ b), np.allclose(G.solve(b), np.linalg.solve(dense, b))
    (True, True)
    >>> bool(np.isclose(G.logdet(), np.linalg.slogdet(dense)[1]))
    True
    """

    def __init__(
        self,
        a: Any,
        rate: float | complex = 1.0,
        weights: Any = None,
        noise: Any = None,
        backend: Any = "auto",
    ) -> None:
        self._init(LaplexOperator(a, a, _check_rate(rate), backend), weights, noise)

    @classmethod
    def _from_operator(cls, op: LaplexOperator, weights: Any, noise: Any) -> LaplexGram:
        """The Gram of the square operator ``op`` (``LaplexOperator(a, a, rate)``), sharing its
        plan: how integrations that keep operators between calls build a Gram."""
        gram = object.__new__(cls)
        gram._init(op, weights, noise)
        return gram

    def _init(self, op: LaplexOperator, weights: Any, noise: Any) -> None:
        self._op = op
        backend = op._backend
        if not isinstance(backend, GramBackend):
            raise NotImplementedError(
                f"the {op.backend!r} backend has no LaplexGram kernels; "
                "LaplexGram runs on host data (the Numba backend) for now"
            )
        # weights and noise: a float (one value for every anchor) or a native float64 array
        self._w = self._parameter(weights, 1.0, "weights")
        self._u = self._parameter(noise, 0.0, "noise")
        self._weights_given = not isinstance(self._w, float)
        self._noise_given = not isinstance(self._u, float)
        if bool(op._backend.xp.any(op._backend.xp.asarray(self._u) < 0)):
            raise ValueError("noise must be >= 0 (variances added to the diagonal)")
        self._factor: Any = None
        self._gram: GramBackend = backend
        self._real = np.dtype(np.finfo(np.dtype(op._dtype)).dtype)  # Σ is real

    def _parameter(self, value: Any, default: float, name: str) -> Any:
        """Weights or noise: a float for one value (or the default), else a native float64 array
        of length n."""
        n = self.shape[0]
        xp = self._op._backend.xp
        if value is None:
            return default
        value = ns.as_array(value)
        if value.ndim == 0:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{name} must be finite; got {number}")
            return number
        native, dtype, _ = self._op._operand(value, n, name, ndims=(1,))
        if dtype.kind == "c":
            raise TypeError(f"{name} must be real; got dtype {value.dtype}")
        native = native.astype(np.float64)
        if not bool(xp.all(xp.isfinite(native))):
            raise ValueError(f"{name} must be finite")
        return native

    def _full(self, value: Any) -> Any:
        """A parameter as a native float64 array of length n (a stride-0 view for a float)."""
        xp = self._op._backend.xp
        if isinstance(value, float):
            return xp.broadcast_to(xp.asarray(value, dtype=np.float64), (self.shape[0],))
        return value

    # ------------------------------------------------------------------ attributes
    @property
    def a(self) -> Any:
        """The anchors, shape ``(n,)``: the Gram's snapshot, as given (not sorted).

        Examples
        --------
        >>> lx.LaplexGram([1.0, 0.0]).a
        array([1., 0.])
        """
        return self._op.x

    @property
    def rate(self) -> float | complex:
        """The rate ``s``: a Python float, or a complex for the phased Gram.

        Examples
        --------
        >>> lx.LaplexGram([0.0, 1.0], rate=3).rate
        3.0
        """
        return self._op.rate

    @property
    def weights(self) -> Any:
        """The weights ``w``, shape ``(n,)``: a new float64 array in the anchors' namespace and
        on their device (one value for every anchor repeated).

        Examples
        --------
        >>> lx.LaplexGram([0.0, 1.0], weights=2.0).weights
        array([2., 2.])
        """
        return self._public(self._w)

    @property
    def noise(self) -> Any:
        """The noise variances ``u``, shape ``(n,)``, as :attr:`weights`.

        Examples
        --------
        >>> lx.LaplexGram([0.0, 1.0], noise=[0.1, 0.2]).noise
        array([0.1, 0.2])
        """
        return self._public(self._u)

    def _public(self, value: Any) -> Any:
        return ns.result_to(self._op._xp, self._full(value).copy(), self._op._like)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``.

        Examples
        --------
        >>> lx.LaplexGram(np.arange(4.0)).shape
        (4, 4)
        """
        return self._op.shape

    @property
    def dtype(self) -> Any:
        """The anchors' real dtype (float32 or float64), as a dtype of their namespace.

        Examples
        --------
        >>> lx.LaplexGram(np.zeros(3, dtype=np.float32), noise=1.0).dtype
        dtype('float32')
        """
        return ns.from_numpy_dtype(self._op._xp, self._real)

    @property
    def backend(self) -> str:
        """The name of the backend that runs this Gram.

        Examples
        --------
        >>> lx.LaplexGram([0.0, 1.0]).backend
        'numba'
        """
        return self._op.backend

    def __repr__(self) -> str:
        return (
            f"LaplexGram(n={self.shape[0]}, rate={self.rate!r}, dtype={self._real}, "
            f"backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ new Grams
    def with_params(
        self, rate: Any = _KEEP, weights: Any = _KEEP, noise: Any = _KEEP
    ) -> LaplexGram:
        """The Gram on the same anchors with other parameters, sharing this one's plan.

        Parameters not given keep their values. Nothing is sorted again; the new Gram computes
        its own factor (O(n)) on first use: one step of a training loop.

        Parameters
        ----------
        rate : float, optional
            The new rate.
        weights : float or array_like of shape (n,), optional
            The new weights.
        noise : float or array_like of shape (n,), optional
            The new noise variances.

        Returns
        -------
        LaplexGram

        Raises
        ------
        ValueError, TypeError, NotImplementedError
            As the constructor.

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 0.5, 2.0]), noise=0.1)
        >>> H = G.with_params(rate=2.0)
        >>> H.rate, float(H.noise[0])
        (2.0, 0.1)
        """
        op = self._op if rate is _KEEP else self._op.with_rate(_check_rate(rate))
        return self._derived(
            op,
            self._w if weights is _KEEP else weights,
            self._u if noise is _KEEP else noise,
        )

    def with_anchors(self, a: Any) -> LaplexGram:
        """The Gram on new anchors with this one's parameters: the plan is repaired from this
        Gram's order when the anchors moved little (as :meth:`LaplexOperator.with_anchors`).

        Parameters
        ----------
        a : array_like, shape (n',)
            The new anchors; per-anchor weights or noise need ``n' == n``.

        Returns
        -------
        LaplexGram

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 0.5, 2.0]), noise=0.1)
        >>> G.with_anchors(np.array([0.1, 0.5, 1.9])).a
        array([0.1, 0.5, 1.9])
        """
        op = self._op.with_anchors(a, a)
        return self._derived(
            op,
            self._w,
            self._u,
        )

    def _derived(self, op: LaplexOperator, weights: Any, noise: Any) -> LaplexGram:
        return LaplexGram._from_operator(op, weights, noise)

    # ------------------------------------------------------------------ the factor
    def _factor_object(self) -> Any:
        """The backend's LDLᵀ factor of this Gram, made once (the backend may run the recursion
        in the first member that uses it)."""
        if self._factor is None:
            op = self._op
            self._factor = self._gram.gram_factor(
                op._plan, self.rate, self._full(self._w), self._full(self._u)
            )
        return self._factor

    def _factorized(self) -> Any:
        """The factor, computed; ``LinAlgError`` when Σ is singular."""
        return self._checked(self._factor_object())

    def _checked(self, f: Any) -> Any:
        if f.zero_pivot is not None:
            raise np.linalg.LinAlgError(self._singular_message(*f.zero_pivot))
        return f

    def _singular_message(self, i: int, j: int) -> str:
        w, u = float(self._full(self._w)[i]), float(self._full(self._u)[i])
        a = self._op._anchors()[0]
        if w == 0 and u == 0:
            return f"Σ is singular: weights[{i}] and noise[{i}] are both 0 (row {i} of Σ is zero)"
        if j >= 0 and bool(a[i] == a[j]):
            return (
                f"Σ is singular: anchors {j} and {i} are equal ({float(a[i])!r}) and the noise "
                "is 0 there (repeated anchors need noise > 0)"
            )
        return f"Σ is singular: its pivot at anchor {i} (a = {float(a[i])!r}) is 0"

    # ------------------------------------------------------------------ products
    def _columns(self, v: Any, what: str, ndims: tuple[int, ...] = (1, 2)) -> tuple[Any, Any, Any]:
        """``v`` as a native (n, k) float array, its result dtype and the caller's array."""
        native, dtype, original = self._op._operand(v, self.shape[0], what, ndims)
        if native.ndim == 1:
            native = native.reshape(-1, 1)
        result = np.result_type(self._real, *(d for d in (dtype,) if d.kind in "fc"))
        return native, result, original

    def _out(self, out: Any, like: Any, one_d: bool, dtype: Any) -> Any:
        out = out.astype(dtype, copy=False)
        out = out.reshape(out.shape[0]) if one_d else out
        return ns.result_to(self._op._xp, out, like)

    def matmat(self, V: Any) -> Any:
        """``Σ @ V`` for ``V`` of shape ``(n, k)``: ``w * (K @ (w * V)) + u * V``; O(n k).

        Parameters
        ----------
        V : array, shape (n, k)
            Real or complex, from the anchors' namespace and device.

        Returns
        -------
        array, shape (n, k)

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 1.0]), noise=1.0)
        >>> np.round(G.matmat(np.eye(2)), 4)
        array([[2.    , 0.3679],
               [0.3679, 2.    ]])
        """
        return self._product(V, (2,), "V")

    def matvec(self, v: Any) -> Any:
        """``Σ @ v`` for ``v`` of shape ``(n,)`` or ``(n, 1)``; O(n).

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 1.0]), noise=1.0)
        >>> np.round(G.matvec(np.array([1.0, 0.0])), 4)
        array([2.    , 0.3679])
        """
        if getattr(v, "ndim", 1) == 2 and v.shape[1] != 1:
            raise ValueError(f"matvec takes shape (n,) or (n, 1); got {tuple(v.shape)}")
        return self._product(v, (1, 2), "v")

    #: Σ is symmetric: the adjoint products are the products
    rmatvec = matvec
    rmatmat = matmat

    def __matmul__(self, v: Any) -> Any:
        return self.matmat(v) if getattr(v, "ndim", 1) == 2 else self.matvec(v)

    def _product(self, v: Any, ndims: tuple[int, ...], what: str) -> Any:
        native, dtype, original = self._columns(v, what, ndims)
        op = self._op
        work = op._working_dtype(dtype, native.dtype)
        b = native.astype(work, copy=False)
        real = np.finfo(dtype).dtype
        w, u = (p if isinstance(p, float) else p.astype(real)[:, None] for p in (self._w, self._u))
        wb = w * b
        if isinstance(op.rate, complex):  # K = Re W: the real and imaginary parts apart
            k = wb.shape[1]
            parts = (
                wb
                if wb.dtype.kind != "c"
                else op._backend.xp.concatenate([wb.real, wb.imag], axis=1)
            )
            full = op._backend.apply(op._plan, Side.ROWS_X, op.rate, parts)[0].real
            k_wb = full if wb.dtype.kind != "c" else full[:, :k] + 1j * full[:, k:]
        else:
            k_wb = op._backend.apply(op._plan, Side.ROWS_X, op.rate, wb)[0]
        return self._out(w * k_wb + u * b, original, original.ndim == 1, dtype)

    @property
    def H(self) -> LaplexGram:
        """``Σ`` itself (it is real symmetric).

        Examples
        --------
        >>> G = lx.LaplexGram([0.0, 1.0])
        >>> G.H is G
        True
        """
        return self

    T = H

    def aslinearoperator(self) -> Any:
        """A :class:`scipy.sparse.linalg.LinearOperator` of ``Σ`` (host data).

        Examples
        --------
        >>> import scipy.sparse.linalg as sla
        >>> G = lx.LaplexGram(np.linspace(0.0, 3.0, 20), noise=0.5)
        >>> b = np.ones(20)
        >>> x, info = sla.cg(G.aslinearoperator(), b, rtol=1e-12)
        >>> info, bool(np.allclose(x, G.solve(b)))
        (0, True)
        """
        import scipy.sparse.linalg as sla

        n = self.shape[0]
        return sla.LinearOperator(
            (n, n),
            matvec=self.matvec,
            rmatvec=self.matvec,
            matmat=self.matmat,
            rmatmat=self.matmat,
            dtype=self._real,
        )

    def to_dense(self, force: bool = False) -> Any:
        """The explicit ``Σ`` (for tests and small n); ``ValueError`` above the size guard of
        :meth:`LaplexOperator.to_dense` unless ``force``.

        Examples
        --------
        >>> lx.LaplexGram([0.0, 0.0], noise=1.0).to_dense()
        array([[2., 1.],
               [1., 2.]])
        """
        K = self._op.to_dense(force=force)
        xp = ns.compat.array_namespace(K)
        K = xp.real(K) if isinstance(self._op.rate, complex) else K
        dtype = K.dtype
        w = xp.asarray(ns.result_to(self._op._xp, self._full(self._w), K), dtype=dtype)
        u = xp.asarray(ns.result_to(self._op._xp, self._full(self._u), K), dtype=dtype)
        return w[:, None] * K * w[None, :] + xp.diag(u)

    # ------------------------------------------------------------------ the factor's uses
    def solve(self, b: Any) -> Any:
        """``Σ⁻¹ b``, exact: a forward and a backward pass of the filter; O(n k).

        Parameters
        ----------
        b : array, shape (n,) or (n, k)
            Finite, real or complex, from the anchors' namespace and device.

        Returns
        -------
        array
            Of ``b``'s shape, dtype ``result_type(Σ.dtype, b.dtype)``.

        Raises
        ------
        numpy.linalg.LinAlgError
            When Σ is singular (the message names the cause).
        ValueError
            ``b`` not finite or of the wrong shape.

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 1.0, 3.0]), noise=0.5)
        >>> x = G.solve(np.array([1.0, 2.0, 3.0]))
        >>> np.allclose(G @ x, [1.0, 2.0, 3.0])
        True
        """
        native, dtype, original = self._columns(b, "b")
        self._finite(native, "b")
        f = self._factorized()
        backend = self._op._backend
        if native.dtype.kind == "c":
            xp = backend.xp
            parts = xp.concatenate([native.real, native.imag], axis=1).astype(np.float64)
            out = self._gram.gram_solve(f, parts)
            k = native.shape[1]
            x = out[:, :k] + 1j * out[:, k:]
        else:
            x = self._gram.gram_solve(f, native.astype(np.float64, copy=False))
        return self._out(x, original, original.ndim == 1, dtype)

    def logdet(self) -> float:
        """``log det Σ``, exact (the sum of the LDLᵀ pivots' logarithms, in float64); O(n) for
        the factor, then O(1).

        Returns
        -------
        float

        Raises
        ------
        numpy.linalg.LinAlgError
            When Σ is singular.

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 1.0]), noise=1.0)
        >>> round(G.logdet(), 6), round(float(np.log(4.0 - np.exp(-2.0))), 6)
        (1.351875, 1.351875)
        """
        return float(self._factorized().logdet)

    def sample(self, k: int = 1, seed: Any = None) -> Any:
        """``k`` exact draws from ``N(0, Σ)``: ``L D^½ z`` for standard normal ``z``; O(n k).

        Parameters
        ----------
        k : int, optional
            The number of draws (default 1).
        seed : int or numpy.random.Generator, optional
            The same seed gives the same draws.

        Returns
        -------
        array, shape (k, n)
            In the anchors' namespace, dtype and order.

        Examples
        --------
        >>> G = lx.LaplexGram(np.linspace(0.0, 10.0, 50), noise=0.01)
        >>> draws = G.sample(3, seed=0)
        >>> draws.shape, bool(np.array_equal(draws, G.sample(3, seed=0)))
        ((3, 50), True)
        """
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer; got {k!r}")
        n = self.shape[0]
        f = self._factorized()
        z = np.random.default_rng(seed).standard_normal((n, int(k)))
        backend = self._op._backend
        out = self._gram.gram_color(f, backend.xp.asarray(z))
        real = self._real
        return ns.result_to(self._op._xp, out.T.astype(real), self._op._like)

    def _finite(self, native: Any, what: str) -> None:
        xp = self._op._backend.xp
        if native.dtype.kind in "fc" and not bool(xp.all(xp.isfinite(native))):
            raise ValueError(f"{what} must be finite")

    def _residuals(self, X: Any, mean: Any) -> tuple[Any, Any, int]:
        """``X`` (batch, n) or (n,) as native (n, batch) columns, the mean as native (n,) float64
        or ``None``, and the batch size."""
        n = self.shape[0]
        X = ns.as_array(X)
        if getattr(X, "ndim", 0) not in (1, 2) or X.shape[-1] != n:
            raise ValueError(
                f"X must have shape (batch, {n}) or ({n},); got {tuple(getattr(X, 'shape', ()))}"
            )
        rows = X if X.ndim == 2 else X.reshape(1, n)
        native, dtype, _ = self._op._operand(rows.T, n, "X", ndims=(2,))
        if dtype.kind == "c":
            raise TypeError(f"X must be real; got dtype {X.dtype}")
        # X's finiteness is checked only when the likelihood is not finite (_value): a NaN or an
        # infinity in X always reaches it, and a pass over the batch is saved
        m = None
        if mean is not None:
            m, mdtype, _ = self._op._operand(ns.as_array(mean), n, "mean", ndims=(1,))
            if mdtype.kind == "c":
                raise TypeError(f"mean must be real; got dtype {mean.dtype}")
            m = m.astype(np.float64)
            self._finite(m, "mean")
        return native, m, native.shape[1]

    def nll(self, X: Any, mean: Any = None) -> float:
        """The mean Gaussian negative log-likelihood of the rows of ``X`` under ``N(mean, Σ)``.

        ``(1/B) sum_b [ (x_b - mean)ᵀ Σ⁻¹ (x_b - mean) + log det Σ + n log 2π ] / 2``, exact,
        accumulated in float64; O(n B).

        Parameters
        ----------
        X : array, shape (B, n) or (n,)
            Real and finite, from the anchors' namespace and device.
        mean : array, shape (n,), optional
            The mean (default zero).

        Returns
        -------
        float

        Raises
        ------
        numpy.linalg.LinAlgError
            When Σ is singular.
        ValueError
            ``X`` or ``mean`` not finite or of the wrong shape.
        FloatingPointError
            When the quadratic form of finite data overflows float64 (data beyond ~1e150).

        Examples
        --------
        >>> import scipy.stats
        >>> a = np.array([0.0, 0.5, 2.0])
        >>> G = lx.LaplexGram(a, noise=0.1)
        >>> x = np.array([0.3, -0.2, 1.0])
        >>> reference = -scipy.stats.multivariate_normal(cov=G.to_dense()).logpdf(x)
        >>> bool(np.isclose(G.nll(x), reference))
        True
        """
        r, mean_, batch = self._residuals(X, mean)
        if batch == 0:
            raise ValueError("X has no rows: the mean likelihood of no data is undefined")
        f = self._factor_object()
        quad = self._gram.gram_quadratic(f, r, mean_)  # may compute the factor in its own loop
        return self._value(self._checked(f), float(quad.sum()), r)

    def nll_gradient(self, X: Any, mean: Any = None) -> GramGradients:
        """The gradient of :meth:`nll` with respect to every parameter: one forward and one
        reverse pass of the filter for the whole batch; O(n B).

        At repeated anchors the derivative of ``|a_i - a_j|`` is taken as 0 (what central finite
        differences give).

        Parameters
        ----------
        X : array, shape (B, n) or (n,)
            As for :meth:`nll`.
        mean : array, shape (n,), optional
            As for :meth:`nll`.

        Returns
        -------
        GramGradients
            ``(a, rate, weights, noise, mean)``; arrays in the caller's order.

        See Also
        --------
        nll_and_gradient : The value and the gradient from the same passes.

        Examples
        --------
        >>> a = np.array([0.0, 0.5, 2.0])
        >>> G = lx.LaplexGram(a, rate=1.0, noise=0.1)
        >>> X = np.array([[0.3, -0.2, 1.0]])
        >>> h = 1e-6
        >>> fd = (G.with_params(rate=1.0 + h).nll(X) - G.with_params(rate=1.0 - h).nll(X)) / (2 * h)
        >>> bool(np.isclose(G.nll_gradient(X).rate, fd))
        True
        """
        return self.nll_and_gradient(X, mean)[1]

    def nll_and_gradient(self, X: Any, mean: Any = None) -> tuple[float, GramGradients]:
        """:meth:`nll` and :meth:`nll_gradient` together, from the gradient's passes (the value
        costs nothing extra): what an optimizer's objective returns (``jac=True`` in
        ``scipy.optimize.minimize``).

        Parameters
        ----------
        X : array, shape (B, n) or (n,)
            As for :meth:`nll`.
        mean : array, shape (n,), optional
            As for :meth:`nll`.

        Returns
        -------
        value : float
            :meth:`nll`.
        gradient : GramGradients
            :meth:`nll_gradient`.

        Examples
        --------
        >>> G = lx.LaplexGram(np.array([0.0, 0.5, 2.0]), noise=0.1)
        >>> X = np.array([[0.3, -0.2, 1.0], [1.0, 0.5, -0.4]])
        >>> value, grad = G.nll_and_gradient(X)
        >>> bool(np.isclose(value, G.nll(X))), grad.a.shape
        (True, (3,))
        """
        r, mean_, batch = self._residuals(X, mean)
        if batch == 0:
            raise ValueError("X has no rows: the mean likelihood of no data is undefined")
        f = self._factor_object()
        summed = (not self._weights_given, not self._noise_given)
        # may compute the factor in its own loop (one column); discarded when Σ is singular
        result = self._gram.gram_nll_gradient(f, r, mean_, summed)
        self._checked(f)
        quad, ga, grate, gw, gu, gmean = result
        op = self._op
        real = self._real

        def public(g: Any) -> Any:
            if isinstance(g, float):
                return g
            return ns.result_to(op._xp, g.astype(real, copy=False), op._like)

        value = self._value(f, float(quad), r)
        return value, GramGradients(
            public(ga),
            complex(grate) if isinstance(self._op.rate, complex) else float(grate),
            public(gw),
            public(gu),
            public(gmean),
        )

    def _value(self, f: Any, quad: float, r: Any) -> float:
        """The mean likelihood from the factor's log-determinant and the sum of the quadratic
        forms of the columns of ``r``; ``ValueError`` when ``r`` is not finite."""
        n, batch = r.shape
        if not math.isfinite(quad):
            self._finite(r, "X")
            raise FloatingPointError(
                f"the likelihood's quadratic form overflowed float64 ({quad}): scale the data"
            )
        return 0.5 * (float(f.logdet) + quad / batch + n * math.log(2 * math.pi))
