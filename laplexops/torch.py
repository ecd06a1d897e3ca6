"""PyTorch integration: the LAPLEX product as a differentiable, compilable op, and a layer.

``import laplexops.torch`` (``import laplexops`` does not import PyTorch). Public names:

- :func:`laplex_matmul` -- ``W(x, y, rate) @ v`` with autograd for all four inputs
  (``torch.matmul`` shapes: ``(n,)`` or batched ``(..., n, k)``);
- :func:`laplex_linear` -- the same product over the last dimension, as
  ``torch.nn.functional.linear`` (``(..., n) -> (..., m)``);
- :class:`LaplexLinear` -- a ``torch.nn.Module`` with learnable anchors, rate (and frequency),
  scales and bias;
- :class:`PlanCache` -- where an operator's plan (the sort of its anchors) is kept between calls;
- :func:`gram_nll` -- the Gaussian negative log-likelihood of :class:`laplexops.LaplexGram`, with
  autograd for the anchors, rate, weights, noise, data and mean.

The product is the custom operator ``torch.ops.laplexops.matmat`` (``torch.library.custom_op``),
with its fake (meta) implementation and its autograd formula registered, so that ``torch.compile``
traces through it without a graph break. Its backward is one call of
:meth:`LaplexOperator.gradient <laplexops.LaplexOperator.gradient>` (all four gradients from two
scans), or of ``rmatmat`` alone when only ``v`` needs a gradient (the custom operators
``matmat_gradient`` and ``matmat_adjoint``). Second derivatives are not implemented: a backward
through the backward raises ``RuntimeError``.

**The rate** is a real tensor: shape ``()`` for a real rate ``s``, shape ``(2,)`` holding
``[a, w]`` for the phased rate ``s = a + i w`` (a complex parameter ``s`` goes in as
``torch.view_as_real(s)``). Custom operators cannot differentiate a Python complex scalar; a real
tensor is learnable and keeps complex numbers out of the traced graph. Its gradient has its shape:
``[dL/da, dL/dw]`` for a phased rate.

**Devices.** CPU tensors run on the Numba backend, CUDA tensors on the CuPy backend: the same code,
the backend chosen by the anchors' device. Tensors cross into the backend through DLPack without a
copy and the results come back the same way; on a GPU the kernels run on PyTorch's current CUDA
stream of the tensors' device. The rate is read on the host (one scalar), as the kernels take it as
an argument.
"""

import contextlib
import itertools
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ._gram import LaplexGram
from ._operator import LaplexOperator

__all__ = ["laplex_matmul", "laplex_linear", "LaplexLinear", "PlanCache", "gram_nll"]


# ---------------------------------------------------------------------- plan cache
class PlanCache:
    """A slot that keeps the last operator built through it, so that the next call reuses its plan.

    Building a :class:`~laplexops.LaplexOperator`'s plan sorts its N = m + n anchors (O(N log N)).
    Given the anchors and rate of a call, the slot returns:

    - the operator it holds when the anchors hold the same values (``with_rate`` when only the rate
      changed): no sort, no copy -- the backward pass of a forward, or a step that trains the rate
      only;
    - ``with_anchors`` of the operator it holds when the anchors changed but their shapes, dtypes
      and device did not -- a training step: the new plan repairs the previous sorting order in
      O(N + moves) instead of sorting;
    - a new operator otherwise.

    The result always equals ``LaplexOperator(x, y, rate)``: the slot only decides how much work the
    plan takes. It holds one operator and a copy of its anchors (O(N) memory) until :meth:`clear`.
    A module keeps one slot per product it computes (:class:`LaplexLinear` does); calls given no
    slot share a few slots keyed by the anchors' storage. Copies (``copy.deepcopy``, pickling) of a
    slot are new, empty slots. A slot is thread-safe.

    Attributes
    ----------
    key : int
        The slot's identifier: the custom operators take it as an integer argument.

    Examples
    --------
    >>> import torch
    >>> from laplexops.torch import PlanCache, laplex_matmul
    >>> cache = PlanCache()
    >>> x = torch.linspace(0.0, 9.0, 10, dtype=torch.float64)
    >>> v = torch.ones(10, dtype=torch.float64)
    >>> u = laplex_matmul(x, x, torch.tensor(1.0), v, cache=cache)
    >>> op = cache.operator(x, x, 1.0)  # the operator of that call, plan built
    >>> op.shape
    (10, 10)
    >>> cache.operator(x, x, 2.0).rate  # with_rate: the same plan
    2.0
    """

    _ids = itertools.count(1)
    _live: "weakref.WeakValueDictionary[int, PlanCache]" = weakref.WeakValueDictionary()

    def __init__(self) -> None:
        self.key = next(PlanCache._ids)
        self._lock = threading.Lock()
        self._op: LaplexOperator | None = None
        self._anchors: tuple[Tensor, Tensor] | None = None
        PlanCache._live[self.key] = self

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (PlanCache, ())

    def __deepcopy__(self, memo: dict) -> "PlanCache":
        return PlanCache()

    def __repr__(self) -> str:
        return f"PlanCache(key={self.key}, operator={self._op!r})"

    def clear(self) -> None:
        """Drop the operator held (its plan and anchors); the next call builds a new one.

        Examples
        --------
        >>> import torch
        >>> from laplexops.torch import PlanCache
        >>> cache = PlanCache()
        >>> _ = cache.operator(torch.zeros(3), torch.ones(2), 1.0)
        >>> cache.clear()
        >>> cache
        PlanCache(key=..., operator=None)
        """
        with self._lock:
            self._op = None
            self._anchors = None

    def operator(self, x: Tensor, y: Tensor, rate: float | complex) -> LaplexOperator:
        """The operator ``LaplexOperator(x, y, rate)``, reusing the plan of the one held.

        Parameters
        ----------
        x : torch.Tensor, shape (m,)
            Row anchors: real, finite (the operator checks).
        y : torch.Tensor, shape (n,)
            Column anchors, on ``x``'s device.
        rate : float or complex
            The rate, finite with a positive real part.

        Returns
        -------
        LaplexOperator
            Held by the slot until the next call or :meth:`clear`. Its plan is built on its first
            product (from the previous order after a step, see the class docstring).

        Raises
        ------
        ValueError, TypeError
            As :class:`~laplexops.LaplexOperator` for the anchors and the rate.

        Examples
        --------
        >>> import torch
        >>> from laplexops.torch import PlanCache
        >>> cache = PlanCache()
        >>> x = torch.tensor([0.0, 1.0, 2.0])
        >>> first = cache.operator(x, x, 1.0).prepare()  # sorts
        >>> cache.operator(x, x, 1.0) is first  # same anchors and rate: the same operator
        True
        >>> step = cache.operator(x + 0.01, x, 1.0)  # a step: the plan repairs first's order
        >>> step is first
        False
        """
        shared = y is x  # one array for both sides: one sort serves both
        x = x.detach()
        y = x if shared else y.detach()
        with self._lock:
            op, held = self._op, self._anchors
            if op is not None and held is not None and _same_values(held, (x, y)):
                if op.rate != rate or type(op.rate) is not type(rate):
                    op = op.with_rate(rate)
            else:
                if op is not None and held is not None and _same_layout(held, (x, y)):
                    op = op.with_anchors(x, y)
                    if op.rate != rate or type(op.rate) is not type(rate):
                        op = op.with_rate(rate)
                else:
                    op = LaplexOperator(x, y, rate)
                xc = x.clone()
                held = (xc, xc if shared else y.clone())
            self._op, self._anchors = op, held
            return op


def _same_layout(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> bool:
    """Whether two pairs of anchors have the same shapes, dtypes and devices."""
    return all(
        p.shape == q.shape and p.dtype == q.dtype and p.device == q.device for p, q in zip(a, b)
    )


def _same_values(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> bool:
    """Whether two pairs of anchors hold the same values (and layout)."""
    return _same_layout(a, b) and all(torch.equal(p, q) for p, q in zip(a, b))


#: the slots of calls given no PlanCache, keyed by the anchors' storage, least recently used first
_SHARED_SLOTS = 8
_shared: "OrderedDict[tuple, PlanCache]" = OrderedDict()
_shared_lock = threading.Lock()


def _slot(key: int, x: Tensor, y: Tensor) -> PlanCache:
    """The slot of a call: the PlanCache ``key`` names, else one keyed by the anchors' storage (data
    pointers, shapes, dtypes and device: a parameter updated in place keeps its slot)."""
    if key >= 0:
        slot = PlanCache._live.get(key)
        if slot is not None:
            return slot
    ident = (x.device, x.data_ptr(), y.data_ptr(), x.shape, y.shape, x.dtype, y.dtype)
    with _shared_lock:
        slot = _shared.pop(ident, None) or PlanCache()
        _shared[ident] = slot
        while len(_shared) > _SHARED_SLOTS:
            _shared.popitem(last=False)
    return slot


# ---------------------------------------------------------------------- devices
@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """Run the backend on ``device``: for a CUDA device, make it CuPy's current device and
    PyTorch's current stream of it CuPy's current stream, so that the kernels and the DLPack
    exchanges are ordered with PyTorch's work without a synchronisation. Nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    try:
        import cupy
    except ImportError:  # the operator raises the backend registry's error, with the reason
        yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield


def _rate_value(rate: Tensor) -> float | complex:
    """The rate tensor as the operator's rate: shape () a float, shape (2,) the complex a + i w."""
    values = rate.detach().tolist()
    if rate.ndim == 0:
        return float(values)
    return complex(values[0], values[1])


def _result_dtype(x: Tensor, y: Tensor, rate: Tensor, v: Tensor, real: bool) -> torch.dtype:
    """The dtype of ``W @ v`` (``docs/reference.md``, Dtypes), or of its real part."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), v.dtype)
    if rate.ndim == 1:
        dtype = torch.promote_types(dtype, torch.complex64)
    return dtype.to_real() if real else dtype


# ---------------------------------------------------------------------- custom operators
@torch.library.custom_op("laplexops::matmat", mutates_args=())
def _matmat(x: Tensor, y: Tensor, rate: Tensor, v: Tensor, cache: int, real: bool) -> Tensor:
    """``W(x, y, rate) @ v`` for ``v`` of shape (n, k); its real part when ``real``."""
    with _on_device(v.device):
        out = _slot(cache, x, y).operator(x, y, _rate_value(rate)).matmat(v)
    if real and out.is_complex():
        out = out.real.contiguous()
    return out


@_matmat.register_fake
def _matmat_fake(x: Tensor, y: Tensor, rate: Tensor, v: Tensor, cache: int, real: bool) -> Tensor:
    return v.new_empty((x.shape[0], v.shape[1]), dtype=_result_dtype(x, y, rate, v, real))


@torch.library.custom_op("laplexops::matmat_adjoint", mutates_args=())
def _matmat_adjoint(
    x: Tensor, y: Tensor, rate: Tensor, g: Tensor, cache: int, dtype: torch.dtype
) -> Tensor:
    """``W^H g`` as the gradient of an operand of ``dtype`` (its real part for a real one)."""
    with _on_device(g.device):
        out = _slot(cache, x, y).operator(x, y, _rate_value(rate)).rmatmat(g)
    if out.is_complex() and not dtype.is_complex:
        out = out.real
    return out.to(dtype).contiguous()


@_matmat_adjoint.register_fake
def _matmat_adjoint_fake(
    x: Tensor, y: Tensor, rate: Tensor, g: Tensor, cache: int, dtype: torch.dtype
) -> Tensor:
    return g.new_empty((y.shape[0], g.shape[1]), dtype=dtype)


@torch.library.custom_op("laplexops::matmat_gradient", mutates_args=())
def _matmat_gradient(
    x: Tensor, y: Tensor, rate: Tensor, v: Tensor, g: Tensor, cache: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The gradients of ``L = Re(sum conj(g) (W v))`` with respect to x, y, rate and v, from one
    call of ``LaplexOperator.gradient``; each in its input's dtype (the rate's as its shape)."""
    with _on_device(v.device):
        grads = _slot(cache, x, y).operator(x, y, _rate_value(rate)).gradient(v, g)
    value = grads.rate
    parts = [value.real, value.imag] if rate.ndim == 1 else value.real
    # contiguous: a real part taken of a complex intermediate is a strided view
    return (
        grads.x.to(x.dtype).contiguous(),
        grads.y.to(y.dtype).contiguous(),
        torch.tensor(parts, dtype=rate.dtype, device=rate.device),
        grads.v.to(v.dtype).contiguous(),
    )


@_matmat_gradient.register_fake
def _matmat_gradient_fake(
    x: Tensor, y: Tensor, rate: Tensor, v: Tensor, g: Tensor, cache: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(rate), torch.empty_like(v)


def _matmat_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, y, rate, v, cache, _real = inputs
    ctx.save_for_backward(x, y, rate, v)
    ctx.cache = cache


def _matmat_backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    """For ``out = W v`` (or its real part: then ``g`` is real, and ``L = Re(sum conj(g) W v)`` is
    the same loss): one ``gradient`` call when an anchor or the rate needs a gradient, else the
    adjoint product alone for ``v``."""
    x, y, rate, v = ctx.saved_tensors
    need_x, need_y, need_rate, need_v = ctx.needs_input_grad[:4]
    g = g.contiguous()
    if need_x or need_y or need_rate:
        gx, gy, grate, gv = _matmat_gradient(x, y, rate, v, g, ctx.cache)
        return (
            gx if need_x else None,
            gy if need_y else None,
            grate if need_rate else None,
            gv if need_v else None,
            None,
            None,
        )
    if need_v:
        return None, None, None, _matmat_adjoint(x, y, rate, g, ctx.cache, v.dtype), None, None
    return None, None, None, None, None, None


_matmat.register_autograd(_matmat_backward, setup_context=_matmat_setup)


# ---------------------------------------------------------------------- the Gram's likelihood
def _gram(a: Tensor, rate: Tensor, weights: Tensor, noise: Tensor, cache: int) -> LaplexGram:
    """The Gram of the op's inputs, its plan from the slot (``PlanCache``) of the anchors."""
    op = _slot(cache, a, a).operator(a, a, _rate_value(rate))
    w, u = weights.detach(), noise.detach()
    return LaplexGram._from_operator(op, w if w.ndim else float(w), u if u.ndim else float(u))


def _batch(X: Tensor) -> Tensor:
    return X if X.ndim == 2 else X.reshape(1, -1)


@torch.library.custom_op("laplexops::gram_nll", mutates_args=())
def _gram_nll(
    a: Tensor,
    rate: Tensor,
    weights: Tensor,
    noise: Tensor,
    X: Tensor,
    mean: Tensor | None,
    cache: int,
) -> Tensor:
    """The mean negative log-likelihood of the rows of ``X`` under ``N(mean, Σ)``; float64."""
    with _on_device(a.device):
        gram = _gram(a, rate, weights, noise, cache)
        value = gram.nll(X.detach(), None if mean is None else mean.detach())
    return torch.tensor(value, dtype=torch.float64, device=X.device)


@_gram_nll.register_fake
def _gram_nll_fake(
    a: Tensor, rate: Tensor, weights: Tensor, noise: Tensor, X: Tensor, mean: Tensor | None,
    cache: int,
) -> Tensor:  # fmt: skip
    return X.new_empty((), dtype=torch.float64)


@torch.library.custom_op("laplexops::gram_nll_gradient", mutates_args=())
def _gram_nll_gradient(
    a: Tensor,
    rate: Tensor,
    weights: Tensor,
    noise: Tensor,
    X: Tensor,
    mean: Tensor | None,
    cache: int,
    want_x: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of :func:`_gram_nll` with respect to a, rate, weights, noise, X (zeros
    unless ``want_x``: ``Σ⁻¹ (x_b - mean) / B``, one solve) and the mean, each of its input's
    shape and dtype (the mean's of shape (n,) also when it was None)."""
    m = None if mean is None else mean.detach()
    rows = _batch(X.detach())
    with _on_device(a.device):
        gram = _gram(a, rate, weights, noise, cache)
        grads = gram.nll_gradient(X.detach(), m)
        if want_x:
            centred = rows if m is None else rows - m
            gx = (gram.solve(centred.T.to(a.dtype)).T / rows.shape[0]).reshape(X.shape)
        else:
            gx = torch.zeros_like(X)

    def like(g: Any, ref: Tensor) -> Tensor:
        return torch.as_tensor(g, dtype=ref.dtype, device=ref.device).reshape(ref.shape)

    value = grads.rate
    parts = [value.real, value.imag] if rate.ndim == 1 else value
    return (
        like(grads.a, a),
        like(parts, rate),
        like(grads.weights, weights),
        like(grads.noise, noise),
        gx.to(X.dtype).contiguous(),
        like(grads.mean, a if mean is None else mean),
    )


@_gram_nll_gradient.register_fake
def _gram_nll_gradient_fake(
    a: Tensor, rate: Tensor, weights: Tensor, noise: Tensor, X: Tensor, mean: Tensor | None,
    cache: int, want_x: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    return (
        torch.empty_like(a),
        torch.empty_like(rate),
        torch.empty_like(weights),
        torch.empty_like(noise),
        torch.empty_like(X),
        torch.empty_like(a if mean is None else mean),
    )


def _gram_nll_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    a, rate, weights, noise, X, mean, cache = inputs
    ctx.save_for_backward(a, rate, weights, noise, X, mean)
    ctx.cache = cache


def _gram_nll_backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    """One call of ``LaplexGram.nll_gradient`` (and a solve when the data need a gradient),
    scaled by the upstream gradient ``g`` (a scalar)."""
    a, rate, weights, noise, X, mean = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads = _gram_nll_gradient(a, rate, weights, noise, X, mean, ctx.cache, bool(needs[4]))
    scaled = [grad * g.to(grad.dtype) if need else None for grad, need in zip(grads, needs[:6])]
    if mean is None:
        scaled[5] = None
    return (*scaled, None)


_gram_nll.register_autograd(_gram_nll_backward, setup_context=_gram_nll_setup)


def gram_nll(
    a: Tensor,
    X: Tensor,
    rate: Tensor | float | complex = 1.0,
    weights: Tensor | float | None = None,
    noise: Tensor | float | None = None,
    mean: Tensor | None = None,
    *,
    cache: PlanCache | None = None,
) -> Tensor:
    """The mean Gaussian negative log-likelihood of the rows of ``X`` under ``N(mean, Σ)``,
    ``Σ = diag(w) K(a, a) diag(w) + diag(u)``, differentiable: :meth:`laplexops.LaplexGram.nll`.

    The backward is one call of :meth:`laplexops.LaplexGram.nll_gradient` (all parameters from
    one forward and one reverse pass of the filter), plus one solve when ``X`` needs a gradient.
    The custom operators ``laplexops::gram_nll`` and ``laplexops::gram_nll_gradient`` run under
    ``torch.compile`` without a graph break. CPU and CUDA tensors (on CUDA, a real rate: the phased
    Gram has no GPU kernels yet). Second derivatives are not implemented.

    Parameters
    ----------
    a : torch.Tensor, shape (n,)
        The anchors, float32 or float64.
    X : torch.Tensor, shape (B, n) or (n,)
        The data, real and finite.
    rate : torch.Tensor of shape () or (2,), float or complex, optional
        The rate ``s > 0``, or ``[a, ω]`` (a tensor of shape (2,)) for the phased Gram of the
        complex rate ``a + iω`` (kernel ``exp(-a |d|) cos(ω d)``).
    weights, noise : torch.Tensor of shape () or (n,), float or None, optional
        The weights ``w`` (default 1) and the noise variances ``u >= 0`` (default 0).
    mean : torch.Tensor of shape (n,), optional
        The mean (default 0).
    cache : PlanCache, optional
        The slot that keeps the anchors' plan between calls (a module keeps one); by default a
        slot keyed by the anchors' storage.

    Returns
    -------
    torch.Tensor
        A float64 scalar.

    Raises
    ------
    ValueError, TypeError, numpy.linalg.LinAlgError
        As :class:`laplexops.LaplexGram` and its ``nll``.

    Examples
    --------
    >>> import torch
    >>> from laplexops.torch import gram_nll
    >>> a = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    >>> log_noise = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    >>> X = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    >>> loss = gram_nll(a, X, rate=1.0, noise=log_noise.exp())
    >>> loss.backward()
    >>> a.grad.shape, log_noise.grad.shape
    (torch.Size([3]), torch.Size([]))
    """
    if not isinstance(a, Tensor) or not isinstance(X, Tensor):
        raise TypeError("a and X must be torch tensors")
    if a.dtype not in (torch.float32, torch.float64) or a.ndim != 1:
        raise TypeError(f"a must be a 1-D float32 or float64 tensor; got {a.dtype}, {a.ndim}-D")

    def parameter(value: Tensor | float | None, default: float, name: str) -> Tensor:
        if value is None:
            value = default
        if isinstance(value, Tensor):
            if value.is_complex():
                raise TypeError(f"{name} must be real; got {value.dtype}")
            return value
        return torch.tensor(float(value), dtype=a.dtype, device=a.device)

    rate_t = _rate_tensor(rate, a)
    key = -1 if cache is None else cache.key
    return _gram_nll(
        a,
        rate_t,
        parameter(weights, 1.0, "weights"),
        parameter(noise, 0.0, "noise"),
        X,
        mean,
        key,
    )


# ---------------------------------------------------------------------- functional API
def _rate_tensor(rate: Tensor | float | complex, like: Tensor) -> Tensor:
    """``rate`` as the operators take it: a real tensor of shape () or (2,) ([a, w])."""
    if isinstance(rate, Tensor):
        if rate.is_complex():
            raise TypeError(
                "rate must be a real tensor: shape () for a real rate, (2,) = [a, w] for the "
                "phased rate a + i w (pass a complex parameter as torch.view_as_real(rate))"
            )
        if not rate.is_floating_point():
            raise TypeError(f"rate must have a floating dtype; got {rate.dtype}")
        if rate.shape not in ((), (2,)):
            raise ValueError(
                "rate must have shape () (a real rate) or (2,) ([a, w]: the phased rate a + i w); "
                f"got {tuple(rate.shape)}"
            )
        return rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float, complex)):
        raise TypeError(f"rate must be a tensor or a number; got {type(rate).__name__}")
    value: list[float] | float = (
        [rate.real, rate.imag] if isinstance(rate, complex) else float(rate)
    )
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _check(x: Tensor, y: Tensor, v: Tensor, what: str) -> None:
    """The errors of :func:`laplex_matmul` and :func:`laplex_linear` that shapes and dtypes tell."""
    for a, name in ((x, "x"), (y, "y"), (v, what)):
        if not isinstance(a, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(a).__name__}")
    for a, name in ((x, "x"), (y, "y")):
        if a.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"anchors must be float32 or float64; {name} has dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"anchors must be 1-D; {name} has shape {tuple(a.shape)}")
    if v.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        raise TypeError(f"{what} must be float32, float64, complex64 or complex128; got {v.dtype}")
    if not (x.device == y.device == v.device):
        raise TypeError(
            f"x, y and {what} must be on one device; got {x.device}, {y.device} and {v.device}"
        )


def laplex_matmul(
    x: Tensor,
    y: Tensor,
    rate: Tensor | float | complex,
    v: Tensor,
    *,
    real: bool = False,
    cache: PlanCache | None = None,
) -> Tensor:
    """The product ``W @ v`` with ``W[i, j] = exp(-rate * |x[i] - y[j]|)``, differentiable.

    Shapes as ``torch.matmul(W, v)`` for a matrix ``W`` of shape (m, n). The product is exact and
    costs O(N k) on the anchors' plan (N = m + n, k the columns), never forming ``W``. Gradients
    flow to ``x``, ``y``, ``rate`` and ``v``: the backward is one call of
    :meth:`~laplexops.LaplexOperator.gradient` (``docs/reference.md``, Gradients; for a complex
    tensor the gradient is ``dL/dRe + i dL/dIm``), or the adjoint product ``W^H g`` alone when only
    ``v`` needs a gradient. Runs under ``torch.compile`` (``fullgraph=True``) as the custom
    operator ``torch.ops.laplexops.matmat``.

    Parameters
    ----------
    x : torch.Tensor, shape (m,)
        Row anchors, float32 or float64, finite.
    y : torch.Tensor, shape (n,)
        Column anchors, float32 or float64, on ``x``'s device.
    rate : torch.Tensor or float or complex
        A real tensor of shape () for a real rate ``s > 0``, or of shape (2,) holding ``[a, w]``
        for the phased rate ``s = a + i w`` (``a > 0``); a complex parameter ``s`` goes in as
        ``torch.view_as_real(s)``. It may require grad; its gradient has its shape. A Python
        number is taken as a constant (a complex one is phased).
    v : torch.Tensor, shape (n,) or (..., n, k)
        Real or complex (float32, float64, complex64, complex128), on ``x``'s device. Batch
        dimensions become columns of one product.
    real : bool, optional
        Return the real part of ``W @ v``. For a phased rate and a real ``v`` this is the product
        with the real matrix ``exp(-a |d|) cos(w |d|)``, and keeps complex numbers out of the
        computation graph. Default False.
    cache : PlanCache, optional
        Where the plan is kept between calls (a module keeps one). Without it, calls share a few
        slots keyed by the anchors' storage (the data pointers of ``x`` and ``y``). Either way the
        backward pass reuses the forward's plan, and the next step repairs it.

    Returns
    -------
    torch.Tensor, shape (m,) or (..., m, k)
        On ``v``'s device, with dtype ``result_type`` of the anchors' dtype (complex for a phased
        rate) and ``v``'s (``docs/reference.md``, Dtypes); the real dtype of that precision when
        ``real``.

    Raises
    ------
    ValueError
        Anchors that are not 1-D or not finite, a rate that is not finite, has a real part
        ``<= 0`` or a shape other than () and (2,), or a ``v`` whose dimension of length n does
        not match ``y``.
    TypeError
        Anchors or ``v`` of another dtype, a complex or integer rate tensor, tensors on different
        devices.

    See Also
    --------
    laplex_linear : The product over the last dimension, as ``torch.nn.functional.linear``.
    LaplexLinear : A layer built on it.

    Notes
    -----
    CPU tensors run on the Numba backend, CUDA tensors on the CuPy backend, through DLPack without
    copies and on PyTorch's current CUDA stream. The rate is read on the host (a synchronisation
    on a GPU, as when the operator checks the anchors are finite).

    Examples
    --------
    >>> import torch
    >>> from laplexops.torch import laplex_matmul
    >>> x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> y = torch.tensor([0.5, 1.5], dtype=torch.float64)
    >>> rate = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    >>> v = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> u = laplex_matmul(x, y, rate, v)
    >>> u
    tensor([1.0528, 1.8196, 1.4362], dtype=torch.float64, grad_fn=<...>)
    >>> u.sum().backward()
    >>> x.grad
    tensor([ 1.0528,  0.6065, -1.4362], dtype=torch.float64)

    A phased rate ``0.5 + 2i`` as ``[a, w]``, and a batch of 4 matrices of 3 columns:

    >>> phased = torch.tensor([0.5, 2.0], dtype=torch.float64)
    >>> laplex_matmul(x, y, phased, torch.ones(4, 2, 3, dtype=torch.float64)).shape
    torch.Size([4, 3, 3])
    """
    _check(x, y, v, "v")
    rate = _rate_tensor(rate, x)
    n = y.shape[0]
    key = -1 if cache is None else cache.key
    if v.ndim == 1:
        if v.shape[0] != n:
            raise ValueError(f"v must have length {n} to match y; got shape {tuple(v.shape)}")
        out = _matmat(x, y, rate, v.reshape(n, 1), key, real)
        return out.reshape(x.shape[0])
    if v.ndim == 0 or v.shape[-2] != n:
        raise ValueError(
            f"v must have shape ({n},) or (..., {n}, k) to match y; got {tuple(v.shape)}"
        )
    batch, k = v.shape[:-2], v.shape[-1]
    columns = v.movedim(-2, 0).reshape(n, math.prod(batch) * k).contiguous()
    out = _matmat(x, y, rate, columns, key, real)
    return out.reshape(x.shape[0], *batch, k).movedim(0, -2)


def laplex_linear(
    input: Tensor,
    x: Tensor,
    y: Tensor,
    rate: Tensor | float | complex,
    *,
    real: bool = False,
    cache: PlanCache | None = None,
) -> Tensor:
    """``W`` applied over the last dimension: ``input @ W.T``, as ``torch.nn.functional.linear``.

    ``out[..., i] = sum_j exp(-rate * |x[i] - y[j]|) * input[..., j]``: every leading index of
    ``input`` is one column of a single product (flattened, then restored), which
    :func:`laplex_matmul` computes; the parameters, gradients, devices and errors are its.

    Parameters
    ----------
    input : torch.Tensor, shape (..., n)
        Real or complex, on the anchors' device.
    x : torch.Tensor, shape (m,)
        Row (output) anchors.
    y : torch.Tensor, shape (n,)
        Column (input) anchors.
    rate : torch.Tensor or float or complex
        Shape () or (2,) = ``[a, w]``, as for :func:`laplex_matmul`.
    real : bool, optional
        Return the real part. Default False.
    cache : PlanCache, optional
        Where the plan is kept between calls.

    Returns
    -------
    torch.Tensor, shape (..., m)
        With the dtype :func:`laplex_matmul` gives.

    Raises
    ------
    ValueError, TypeError
        As :func:`laplex_matmul`; ``ValueError`` when the last dimension of ``input`` is not n.

    Examples
    --------
    >>> import torch
    >>> from laplexops.torch import laplex_linear
    >>> x = torch.tensor([0.0, 1.0, 2.0])
    >>> y = torch.tensor([0.5, 1.5])
    >>> out = laplex_linear(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), x, y, 1.0)
    >>> out
    tensor([[1.0528, 1.8196, 1.4362],
            [0.2231, 0.6065, 0.6065]])
    """
    _check(x, y, input, "input")
    rate = _rate_tensor(rate, x)
    n = y.shape[0]
    if input.ndim == 0 or input.shape[-1] != n:
        raise ValueError(f"input must have shape (..., {n}) to match y; got {tuple(input.shape)}")
    batch = input.shape[:-1]
    columns = input.reshape(math.prod(batch), n).mT.contiguous()
    key = -1 if cache is None else cache.key
    out = _matmat(x, y, rate, columns, key, real)
    return out.mT.reshape(*batch, x.shape[0])


# ---------------------------------------------------------------------- the layer
def _grid(m: int, n: int) -> tuple[list[int], list[int]]:
    """Initial anchors of ``m`` rows and ``n`` columns: the larger set on the integers ``0 .. L-1``
    (``L = max(m, n)``), the smaller one (``c`` anchors) on ``floor((k + 1/2) L / c)``, ``k < c``:
    evenly spread and distinct, a subset of the larger set's positions."""
    size = max(m, n)

    def spread(c: int) -> list[int]:
        return [((2 * k + 1) * size) // (2 * c) for k in range(c)]

    return spread(m), spread(n)


class LaplexLinear(torch.nn.Module):
    """A linear layer whose weight is a LAPLEX matrix, over the last dimension of its input.

    ``out = out_scale * (K @ (in_scale * input)) + bias`` over the last dimension, where
    ``K[i, j] = exp(-s |x[i] - y[j]|)`` for a real rate ``s``, and
    ``K[i, j] = exp(-s |d|) cos(w |d|)`` (``d = x[i] - y[j]``, the real part of the phased matrix of
    rate ``s + i w``) when ``phased``. ``K`` has ``in_features * out_features`` entries and is
    never formed: a forward and a backward pass cost O(N k) for N = ``in_features +
    out_features`` anchors and k input rows, plus the plan (the anchors' sort), which the layer
    keeps between steps.

    Parameters
    ----------
    in_features : int
        ``n``: the input anchors ``y``.
    out_features : int
        ``m``: the output anchors ``x``.
    rate : float, optional
        The initial rate ``s > 0``, in units of the anchors' initial spacing (1). Default 1.0.
    phased : bool, optional
        Add a learnable frequency ``w``: the weight ``exp(-s |d|) cos(w |d|)``. Default False.
    bias : bool, optional
        Learn an additive bias (initially zero). Default True.
    frequency : float, optional
        The initial frequency ``w`` of a phased layer (default 1.0). Not 0: ``cos(w |d|)`` is
        even in ``w``, so ``w = 0`` is a stationary point that gradient descent cannot leave.
    in_scale, out_scale : bool, optional
        Learn a per-input (per-output) scale, initially 1. Default True.
    device, dtype : optional
        Of the parameters (float32 or float64), as for ``torch.nn.Linear``.

    Attributes
    ----------
    x : torch.nn.Parameter, shape (out_features,)
        The output (row) anchors.
    y : torch.nn.Parameter, shape (in_features,)
        The input (column) anchors.
    log_rate : torch.nn.Parameter, shape ()
        ``log(s)``: the rate is ``exp(log_rate)``, positive whatever the step.
    frequency : torch.nn.Parameter or None, shape ()
        ``w``, for a phased layer.
    in_scale : torch.nn.Parameter or None, shape (in_features,)
    out_scale : torch.nn.Parameter or None, shape (out_features,)
    bias : torch.nn.Parameter or None, shape (out_features,)

    Notes
    -----
    **Initialisation.** The larger set of anchors sits on the integers ``0, 1, ..., L - 1``
    (``L = max(in_features, out_features)``), the smaller one on ``L / c``-spaced points of that
    grid (``c`` anchors; for equal sizes ``x = y``). Then ``K`` is made of columns (or rows) of
    the ``L x L`` matrix ``exp(-s |i - j|)`` (times ``cos(w |i - j|)``), whose eigenvalues lie in
    ``[tanh(s / 2), coth(s / 2)]`` (the range of its symbol, the Poisson kernel; both kernels are
    positive definite), and a block of ``K`` is a principal submatrix of it. So
    ``cond(K) <= coth(s / 2) ** 2`` for every pair of sizes: 4.7 at the default ``rate=1``, 1.7 at
    ``rate=2``. Anchors merely evenly spaced on an interval for both sides are not enough: where
    the two grids drift half a spacing apart, alternating inputs cancel and ``K`` is
    ill-conditioned (``cond ~ 26`` for 64 x 63 at ``s = 1``). Coordinates in units of the spacing
    keep every parameter of order one, so that one learning rate suits the anchors and the rate.
    The initial anchors are sorted, so the first plan needs no sort.

    **The plan** is kept in the layer's :class:`PlanCache`: the backward pass reuses the forward's,
    and after an optimizer step the new plan repairs the previous order (anchors that moved by a
    fraction of their spacing) instead of sorting; a step that changes only the rate, the
    frequency, the scales or the bias keeps the plan as it is. Freeze the anchors with
    ``layer.x.requires_grad_(False)`` (and ``y``): their gradients are then not returned.

    Examples
    --------
    >>> import torch
    >>> from laplexops.torch import LaplexLinear
    >>> layer = LaplexLinear(8, 5)
    >>> layer
    LaplexLinear(in_features=8, out_features=5, rate=1.0, phased=False, bias=True)
    >>> layer(torch.randn(3, 8)).shape
    torch.Size([3, 5])
    >>> sum(p.numel() for p in layer.parameters())  # x, y, log_rate, scales, bias
    32
    >>> LaplexLinear(4, 4, phased=True).rate
    (1+1j)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: float = 1.0,
        phased: bool = False,
        bias: bool = True,
        *,
        frequency: float = 1.0,
        in_scale: bool = True,
        out_scale: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        for value, name in ((in_features, "in_features"), (out_features, "out_features")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be finite and > 0; got {rate!r}")
        if phased and not (math.isfinite(frequency) and frequency != 0):
            raise ValueError(f"frequency must be finite and non-zero; got {frequency!r}")
        self.in_features, self.out_features, self.phased = in_features, out_features, phased
        self._initial = (float(rate), float(frequency))
        kw = {"device": device, "dtype": dtype}
        self.x = torch.nn.Parameter(torch.empty(out_features, **kw))
        self.y = torch.nn.Parameter(torch.empty(in_features, **kw))
        self.log_rate = torch.nn.Parameter(torch.empty((), **kw))
        optional = (
            ("frequency", phased, ()),
            ("in_scale", in_scale, (in_features,)),
            ("out_scale", out_scale, (out_features,)),
            ("bias", bias, (out_features,)),
        )
        for name, wanted, shape in optional:
            param = torch.nn.Parameter(torch.empty(shape, **kw)) if wanted else None
            self.register_parameter(name, param)
        self._plans = PlanCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the parameters to their initial values (see Notes of the class).

        The anchors on the grid, the rate and the frequency to the constructor's values, the
        scales to 1, the bias to 0.

        Examples
        --------
        >>> import torch
        >>> from laplexops.torch import LaplexLinear
        >>> layer = LaplexLinear(4, 2)
        >>> layer.x, layer.y
        (Parameter containing:
        tensor([1., 3.], requires_grad=True), Parameter containing:
        tensor([0., 1., 2., 3.], requires_grad=True))
        >>> with torch.no_grad():
        ...     _ = layer.x.add_(0.5)
        >>> layer.reset_parameters()
        >>> layer.x.tolist()
        [1.0, 3.0]
        """
        rate, frequency = self._initial
        xs, ys = _grid(self.out_features, self.in_features)
        with torch.no_grad():
            self.x.copy_(torch.tensor(xs, dtype=self.x.dtype))
            self.y.copy_(torch.tensor(ys, dtype=self.y.dtype))
            self.log_rate.fill_(math.log(rate))
            if self.frequency is not None:
                self.frequency.fill_(frequency)
            for scale in (self.in_scale, self.out_scale):
                if scale is not None:
                    scale.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def _rate(self) -> Tensor:
        """The rate as the operators take it: ``exp(log_rate)``, or ``[exp(log_rate), w]``."""
        s = torch.exp(self.log_rate)
        return s if self.frequency is None else torch.stack((s, self.frequency))

    @property
    def rate(self) -> float | complex:
        """The current rate: ``s`` (a float), or ``s + i w`` (a complex) for a phased layer.

        Examples
        --------
        >>> from laplexops.torch import LaplexLinear
        >>> LaplexLinear(3, 3, rate=2.0).rate
        2.0
        """
        return _rate_value(self._rate().detach())

    def operator(self) -> LaplexOperator:
        """The current ``LaplexOperator(x, y, rate)`` (complex for a phased layer, whose weight is
        its real part), from the layer's plan cache; without the scales.

        Returns
        -------
        LaplexOperator
            On detached anchors: for inspection (``to_dense()`` at small sizes, products).

        Examples
        --------
        >>> import numpy as np
        >>> from laplexops.torch import LaplexLinear
        >>> W = LaplexLinear(6, 6, rate=2.0).operator().to_dense()
        >>> bool(np.linalg.cond(W.numpy()) < 1.72)
        True
        """
        return self._plans.operator(self.x.detach(), self.y.detach(), self.rate)

    def forward(self, input: Tensor) -> Tensor:
        """``out_scale * (K @ (in_scale * input)) + bias`` over the last dimension.

        Parameters
        ----------
        input : torch.Tensor, shape (..., in_features)
            Real floating, on the parameters' device. Half precision (float16, bfloat16, as an
            autocast region makes it) computes in float32, as the library computes float16
            anchors: the decays need float32's range.

        Returns
        -------
        torch.Tensor, shape (..., out_features)
            Real, with the dtype of ``input`` and the parameters promoted.

        Raises
        ------
        TypeError
            A complex or non-floating ``input``.
        ValueError
            An ``input`` whose last dimension is not ``in_features``.

        Examples
        --------
        >>> import torch
        >>> from laplexops.torch import LaplexLinear
        >>> LaplexLinear(3, 2, bias=False)(torch.ones(3))
        tensor([1.5032, 1.5032], grad_fn=<MulBackward0>)
        """
        if input.is_complex() or not input.is_floating_point():
            raise TypeError(f"input must be real floating; got {input.dtype}")
        if input.dtype in (torch.float16, torch.bfloat16):
            input = input.float()
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"input must have shape (..., {self.in_features}); got {tuple(input.shape)}"
            )
        u = input if self.in_scale is None else input * self.in_scale
        out = laplex_linear(u, self.x, self.y, self._rate(), real=True, cache=self._plans)
        if self.out_scale is not None:
            out = out * self.out_scale
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rate={self._initial[0]}, phased={self.phased}, bias={self.bias is not None}"
        )
