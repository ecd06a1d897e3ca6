"""PyTorch: tensors in the operator (CPU tensors in -> tensors out), and ``laplexops.torch``, the
product as a differentiable custom operator and the ``LaplexLinear`` layer (skipped without torch).

Checks of ``laplexops.torch``: ``gradcheck`` in float64 for every input (real and phased rates,
real and complex operands, 1-D and batched), ``torch.library.opcheck`` of the three custom
operators, agreement with autograd through the dense matrix, float32 against float64, which
gradients a backward pass computes, the plan cache (one plan per training step, repaired from the
previous step's order), zero-copy DLPack at the backend boundary, a model compiled with
``torch.compile(fullgraph=True)`` that trains, the layer's shapes, parameters, initial conditioning
and errors. The CUDA tests skip without a GPU.
"""

import copy
import pickle

import numpy as np
import pytest

import laplexops as lx

torch = pytest.importorskip("torch")

import laplexops.torch as lxt  # noqa: E402
from laplexops.backends import _numba_sort  # noqa: E402
from laplexops.backends._numba import NumbaBackend  # noqa: E402
from laplexops.torch import LaplexLinear, PlanCache, laplex_linear, laplex_matmul  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA device here")
F64 = torch.float64


def _dense(x, y, s):
    return torch.exp(-s * torch.abs(x[:, None] - y[None, :]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rate", [1.3, 0.6 + 1.7j])
def test_products_and_gradient_in_torch(dtype, rate, rng):
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    m, n = 37, 23
    x = torch.rand(m, dtype=dtype, generator=gen) * 8
    y = torch.rand(n, dtype=dtype, generator=gen) * 8
    v = torch.randn(n, dtype=dtype, generator=gen, requires_grad=True)  # a parameter
    op = lx.LaplexOperator(x, y, rate)
    out = op @ v
    assert isinstance(out, torch.Tensor) and out.device == v.device
    W = _dense(x.double(), y.double(), rate)
    ref = W @ v.detach().double().to(W.dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.linalg.norm(out.to(ref.dtype) - ref) <= tol * torch.linalg.norm(ref)

    g = torch.randn(m, dtype=dtype, generator=gen)
    grads = op.gradient(v, g)
    assert all(isinstance(a, torch.Tensor) for a in (grads.x, grads.y, grads.v))
    assert grads.x.dtype == dtype and grads.v.dtype == dtype
    # autograd through the dense reference gives the same gradients (PyTorch's convention)
    xr = x.double().clone().requires_grad_(True)
    yr = y.double().clone().requires_grad_(True)
    vr = v.detach().double().clone().requires_grad_(True)
    s = torch.tensor(
        rate,
        dtype=torch.complex128 if isinstance(rate, complex) else torch.float64,
        requires_grad=True,
    )
    Wr = torch.exp(-s * torch.abs(xr[:, None] - yr[None, :]))
    loss = torch.real(torch.sum(torch.conj(g.double().to(Wr.dtype)) * (Wr @ vr.to(Wr.dtype))))
    loss.backward()
    gtol = 1e-10 if dtype == torch.float64 else 1e-3
    for ours, theirs in ((grads.x, xr.grad), (grads.y, yr.grad), (grads.v, vr.grad)):
        assert torch.allclose(ours.double(), theirs, rtol=gtol, atol=gtol * theirs.abs().max())
    assert abs(complex(grads.rate) - complex(s.grad.item())) <= gtol * max(1, abs(s.grad.item()))


def test_torch_and_numpy_do_not_mix():
    x = torch.rand(5, dtype=torch.float64)
    op = lx.LaplexOperator(x, x)
    with pytest.raises(TypeError):
        op @ np.ones(5)
    with pytest.raises(TypeError):
        lx.LaplexOperator(x, np.ones(5))


def test_integer_tensors_become_default_float():
    xi = torch.randint(0, 10, (6,))
    assert lx.LaplexOperator(xi, xi).dtype == torch.get_default_dtype()


# ---------------------------------------------------------------------- laplexops.torch: helpers
RATES = {"real": [1.3], "phased": [0.6, 1.7]}


def _gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def _anchors(rng, m, n, dtype=F64, device="cpu"):
    """Anchors in random order with every |x_i - y_j| at least 0.2: no tie (a kink of the kernel)
    within a finite-difference step."""
    z = rng.permutation(np.arange(m + n) * 0.45 + rng.uniform(0.0, 0.25, m + n))
    x = torch.tensor(z[:m], dtype=dtype, device=device)
    y = torch.tensor(z[m:], dtype=dtype, device=device)
    return x, y


def _rate(kind, dtype=F64, device="cpu"):
    return torch.tensor(RATES[kind], dtype=dtype, device=device).reshape(
        () if kind == "real" else (2,)
    )


def _complex_rate(rate):
    """The rate tensor as the complex number it stands for (differentiably)."""
    return rate if rate.ndim == 0 else torch.complex(rate[0], rate[1])


def _operand(gen, shape, kind, dtype=F64, device="cpu"):
    v = torch.randn(shape, dtype=dtype, generator=gen).to(device)
    if kind == "complex":
        v = torch.complex(v, torch.randn(shape, dtype=dtype, generator=gen).to(device))
    return v


def _grad_inputs(*tensors):
    return tuple(t.detach().clone().requires_grad_(True) for t in tensors)


# ---------------------------------------------------------------------- gradcheck and opcheck
@pytest.mark.parametrize("rate_kind", ["real", "phased"])
@pytest.mark.parametrize(
    ("shape", "v_kind", "real"),
    [
        ((11,), "real", False),  # 1-D
        ((2, 11, 3), "real", False),  # batched (..., n, k)
        ((11, 2), "complex", False),
        ((11, 3), "real", True),  # the real part of the product
        ((11, 2), "complex", True),
    ],
    ids=["1d", "batched", "complex-v", "real-part", "complex-v-real-part"],
)
def test_gradcheck_every_input(rng, rate_kind, shape, v_kind, real):
    x, y = _anchors(rng, 9, 11)
    v = _operand(_gen(rng), shape, v_kind)
    inputs = _grad_inputs(x, y, _rate(rate_kind), v)
    assert torch.autograd.gradcheck(lambda x, y, r, v: laplex_matmul(x, y, r, v, real=real), inputs)


@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_gradcheck_linear_over_the_last_dimension(rng, rate_kind):
    x, y = _anchors(rng, 7, 10)
    inputs = _grad_inputs(x, y, _rate(rate_kind), torch.randn(2, 3, 10, dtype=F64))
    assert torch.autograd.gradcheck(lambda x, y, r, u: laplex_linear(u, x, y, r), inputs)


def test_gradcheck_complex_parameter_through_view_as_real(rng):
    """A complex rate parameter enters as ``torch.view_as_real``; its gradient is PyTorch's."""
    x, y = _anchors(rng, 6, 8)
    s = torch.tensor(0.7 + 1.1j, dtype=torch.complex128, requires_grad=True)
    v = torch.randn(8, dtype=F64)
    assert torch.autograd.gradcheck(lambda s: laplex_matmul(x, y, torch.view_as_real(s), v), (s,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_opcheck_every_custom_operator(rng, dtype, rate_kind):
    gen = _gen(rng)
    x, y = _anchors(rng, 6, 5, dtype)
    x.requires_grad_(True)
    rate = _rate(rate_kind, dtype).requires_grad_(True)
    v = torch.randn(5, 3, dtype=dtype, generator=gen, requires_grad=True)
    out_dtype = dtype if rate_kind == "real" else dtype.to_complex()
    g = torch.randn(6, 3, dtype=out_dtype, generator=gen)
    ops = torch.ops.laplexops
    # the backward's operators are not differentiable again: they get detached inputs
    xd, rd, vd = x.detach(), rate.detach(), v.detach()
    cases = [
        (ops.matmat, (x, y, rate, v, -1, False)),
        (ops.matmat, (x, y, rate, v, -1, True)),
        (ops.matmat_adjoint, (xd, y, rd, g, -1, dtype)),
        (ops.matmat_gradient, (xd, y, rd, vd, g, -1)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# ---------------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_matches_autograd_through_the_dense_matrix(rng, rate_kind):
    """Values and the four gradients against autograd of ``W @ v`` formed densely, batched."""
    gen = _gen(rng)
    x, y = _anchors(rng, 13, 17)
    rate = _rate(rate_kind)
    v = torch.randn(2, 17, 3, dtype=F64, generator=gen)
    ours = _grad_inputs(x, y, rate, v)
    theirs = _grad_inputs(x, y, rate, v)
    out = laplex_matmul(*ours)
    W = _dense(theirs[0], theirs[1], _complex_rate(theirs[2]))
    want = W @ theirs[3].to(W.dtype)
    assert out.shape == want.shape == (2, 13, 3) and out.dtype == want.dtype
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(want.shape, dtype=want.dtype, generator=gen)
    torch.real(torch.sum(torch.conj(g) * out)).backward()
    torch.real(torch.sum(torch.conj(g) * want)).backward()
    for a, b in zip(ours, theirs):
        assert a.grad.shape == b.grad.shape and a.grad.dtype == b.grad.dtype
        assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-10 * b.grad.abs().max())


def test_one_tensor_for_both_sides(rng):
    """``x is y`` (a Gram matrix): ties on the diagonal, where ``sign(0) = 0`` as for autograd
    through ``abs``; the anchors' gradient sums both roles."""
    x, _ = _anchors(rng, 12, 0)
    v = torch.randn(12, 2, dtype=F64, generator=_gen(rng))
    ours, theirs = _grad_inputs(x, x)
    out = laplex_matmul(ours, ours, 0.8, v)
    want = _dense(theirs, theirs, 0.8) @ v
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    want.square().sum().backward()
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-10, atol=1e-10)


def test_linear_is_the_product_over_the_last_dimension(rng):
    gen = _gen(rng)
    x, y = _anchors(rng, 5, 4)
    u = torch.randn(2, 3, 4, dtype=F64, generator=gen)
    out = laplex_linear(u, x, y, torch.tensor([0.9, 0.4], dtype=F64), real=True)
    want = torch.real(u.to(torch.complex128) @ _dense(x, y, 0.9 + 0.4j).T)
    assert out.shape == (2, 3, 5) and out.dtype == F64
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12)
    one = laplex_linear(u[0, 0], x, y, 0.9)
    assert one.shape == (5,)
    assert torch.allclose(one, _dense(x, y, 0.9) @ u[0, 0], rtol=1e-12, atol=1e-12)


def test_dtypes_follow_the_library_and_gradients_their_inputs(rng):
    x32, y64 = _anchors(rng, 5, 4)
    x32 = x32.float().requires_grad_(True)
    y64 = y64.requires_grad_(True)
    rate = torch.tensor([0.8, 0.3], dtype=torch.float32, requires_grad=True)
    v = torch.randn(4, dtype=torch.float32, requires_grad=True)
    out = laplex_matmul(x32, y64, rate, v)
    assert out.dtype == torch.complex128  # the wider anchors', complex for a phased rate
    assert laplex_matmul(x32, y64, rate, v, real=True).dtype == F64
    torch.real(out).sum().backward()
    for t in (x32, y64, rate, v):
        assert t.grad.dtype == t.dtype and t.grad.shape == t.shape


@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_float32_agrees_with_float64(rng, rate_kind):
    gen = _gen(rng)
    layer64 = LaplexLinear(24, 16, phased=rate_kind == "phased", dtype=F64)
    with torch.no_grad():
        for p in layer64.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=F64, generator=gen))
    layer32 = copy.deepcopy(layer64).float()
    inp = torch.randn(5, 24, dtype=F64, generator=gen)
    outs = []
    for layer, data in ((layer64, inp), (layer32, inp.float())):
        out = layer(data)
        out.square().sum().backward()
        outs.append(out)
    assert outs[1].dtype == torch.float32
    assert torch.linalg.norm(outs[1].double() - outs[0]) <= 1e-5 * torch.linalg.norm(outs[0])
    for (name, p64), p32 in zip(layer64.named_parameters(), layer32.parameters()):
        err = torch.linalg.norm(p32.grad.double() - p64.grad)
        assert err <= 1e-4 * torch.linalg.norm(p64.grad), name


def test_empty_operands_and_anchors(rng):
    """Empty anchors and operands as for a dense matrix of that shape (zero when n = 0)."""
    x, y = _anchors(rng, 4, 3)
    assert laplex_matmul(x, y, 1.0, torch.zeros(2, 3, 0, dtype=F64)).shape == (2, 4, 0)
    assert laplex_matmul(x, y, 1.0, torch.zeros(0, 3, 2, dtype=F64)).shape == (0, 4, 2)
    for in_features, out_features in ((0, 3), (3, 0)):
        layer = LaplexLinear(in_features, out_features, dtype=F64)
        out = layer(torch.ones(2, in_features, dtype=F64))
        assert out.shape == (2, out_features)
        out.sum().backward()
        assert torch.equal(out, layer.bias.expand(2, -1))
        assert all(p.grad.shape == p.shape for p in layer.parameters())


# ---------------------------------------------------------------------- what a backward computes
def _count_calls(monkeypatch, names):
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(lx.LaplexOperator, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(lx.LaplexOperator, name, counted)
    return calls


@pytest.mark.parametrize("needs", ["v", "x", "rate", "all"])
def test_backward_is_one_call(monkeypatch, rng, needs):
    """One ``gradient`` call when an anchor or the rate needs a gradient, else one ``rmatmat``;
    gradients that are not needed are not returned."""
    x, y = _anchors(rng, 6, 5)
    rate = _rate("phased")
    v = torch.randn(5, 2, dtype=F64)
    wanted = {"v": ["v"], "x": ["x"], "rate": ["rate"], "all": ["x", "y", "rate", "v"]}[needs]
    inputs = {"x": x, "y": y, "rate": rate, "v": v}
    for name in wanted:
        inputs[name].requires_grad_(True)
    out = laplex_matmul(inputs["x"], inputs["y"], inputs["rate"], inputs["v"])
    calls = _count_calls(monkeypatch, ["gradient", "rmatmat", "matmat"])
    torch.real(out).sum().backward()
    only_v = needs == "v"
    assert calls == {"gradient": int(not only_v), "rmatmat": int(only_v), "matmat": 0}
    for name, t in inputs.items():
        assert (t.grad is not None) == (name in wanted), name


# ---------------------------------------------------------------------- the plan cache
def _spy_plans(monkeypatch):
    """The hints the Numba backend's plans are built from (None: a sort from scratch)."""
    hints = []
    original = NumbaBackend.plan

    def plan(self, x, y, hint=None, ordered=(None, None)):
        hints.append(hint)
        return original(self, x, y, hint, ordered)

    monkeypatch.setattr(NumbaBackend, "plan", plan)
    return hints


def _train(model, steps, gen, lr=1e-2, in_features=20, out_features=12):
    """Adam steps on a fixed regression batch; the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    inp = torch.randn(16, in_features, generator=gen)
    target = torch.randn(16, out_features, generator=gen)
    losses = []
    for _ in range(steps):
        loss = (model(inp) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_one_plan_per_training_step_repaired_from_the_previous(monkeypatch, rng):
    layer = LaplexLinear(20, 12, phased=True)
    with torch.no_grad():  # anchors in random order: each plan needs the previous order
        for p in (layer.x, layer.y):
            p.copy_(p[torch.randperm(p.shape[0], generator=_gen(rng))])
    layer(torch.zeros(20))  # the first plan: a sort
    hints = _spy_plans(monkeypatch)
    _no_full_sort(monkeypatch)
    _train(layer, 4, _gen(rng))
    # the first step runs on that plan; each later one moved the anchors: one plan per step (the
    # backward reuses the forward's), repaired from the previous step's order without a sort
    assert len(hints) == 3 and all(h is not None for h in hints)


def _no_full_sort(monkeypatch):
    def refuse(*args):
        raise AssertionError("a full sort ran although the previous plan should have served")

    monkeypatch.setattr(_numba_sort, "argsort", refuse)
    monkeypatch.setattr(_numba_sort, "argsort_two", refuse)


def test_rate_only_training_keeps_the_plan(monkeypatch, rng):
    layer = LaplexLinear(20, 12, phased=True)
    for p in (layer.x, layer.y):
        p.requires_grad_(False)
    hints = _spy_plans(monkeypatch)
    rate = layer.rate
    _train(layer, 3, _gen(rng))
    assert layer.rate != rate and hints == [None]  # one plan, then with_rate


def test_plan_cache_returns_the_fresh_operator(rng):
    x, y = _anchors(rng, 30, 20)
    cache = PlanCache()
    first = cache.operator(x, y, 1.0)
    v = torch.randn(20, dtype=F64)
    first @ v
    assert cache.operator(x.clone(), y.clone(), 1.0) is first  # equal values: the same one
    rerated = cache.operator(x, y, 0.5 + 1.0j)
    assert rerated.rate == 0.5 + 1.0j
    assert torch.equal(rerated @ v, lx.LaplexOperator(x, y, 0.5 + 1.0j) @ v)
    x2 = x + 0.01 * torch.randn(30, dtype=F64)
    step = cache.operator(x2, y, 1.0)
    assert torch.equal(step @ v, lx.LaplexOperator(x2, y, 1.0) @ v)  # bitwise: the repaired plan
    x.add_(1.0)  # the slot holds a copy of the anchors: changing the caller's does not fool it
    assert cache.operator(x, y, 1.0) is not step
    cache.clear()
    assert cache.operator(x, y, 1.0) is not step


def test_plan_caches_are_not_shared_by_copies():
    layer = LaplexLinear(4, 3)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._plans.key != layer._plans.key
        assert torch.equal(clone(torch.ones(4)), layer(torch.ones(4)))


# ---------------------------------------------------------------------- devices
def _spy_operands(monkeypatch, backend_class):
    """The native arrays the backend's ``asarray`` hands to the operator."""
    seen = []
    original = backend_class.asarray

    def asarray(self, a):
        out = original(self, a)
        seen.append(out)
        return out

    monkeypatch.setattr(backend_class, "asarray", asarray)
    return seen


def _pointer(a):
    """The data pointer of a NumPy or CuPy array."""
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_tensors_reach_the_backend_without_a_copy(monkeypatch, rng, device):
    """DLPack at the boundary: the backend reads the tensors' own memory, on their device, and
    nothing goes through the host (``.cpu()`` and ``.numpy()`` refuse for CUDA tensors)."""
    if device == "cuda":
        from laplexops.backends._cupy import CupyBackend as backend_class

        for name in ("cpu", "numpy"):
            monkeypatch.setattr(torch.Tensor, name, _refuse_host_copy)
    else:
        backend_class = NumbaBackend
    x, y = _anchors(rng, 6, 5, device=device)
    v = torch.randn(5, 3, dtype=F64, device=device, requires_grad=True)
    x.requires_grad_(True)
    seen = _spy_operands(monkeypatch, backend_class)
    out = laplex_matmul(x, y, _rate("phased", device=device), v)
    assert _pointer(seen[-1]) == v.data_ptr()  # the operand, as the backend sees it
    assert {_pointer(a) for a in seen[:2]} == {x.data_ptr(), y.data_ptr()}  # anchors, snapshot
    g = torch.randn(out.shape, dtype=out.dtype, device=device)
    seen.clear()
    out.backward(g)
    assert v.data_ptr() in {_pointer(a) for a in seen}
    assert g.data_ptr() in {_pointer(a) for a in seen}
    assert out.device == x.grad.device == v.grad.device == v.device


def _refuse_host_copy(self, *args, **kwargs):
    raise AssertionError("a tensor was copied to the host")


@CUDA
@pytest.mark.parametrize("rate_kind", ["real", "phased"])
def test_gradcheck_on_cuda(rng, rate_kind):
    x, y = _anchors(rng, 9, 11, device="cuda")
    v = torch.randn(2, 11, 3, dtype=F64, device="cuda")
    inputs = _grad_inputs(x, y, _rate(rate_kind, device="cuda"), v)
    assert torch.autograd.gradcheck(lambda x, y, r, v: laplex_matmul(x, y, r, v), inputs)


@CUDA
def test_cuda_kernels_run_on_torchs_current_stream(monkeypatch, rng):
    import cupy

    from laplexops.backends._cupy import CupyBackend

    streams = []
    original = CupyBackend.apply

    def apply(self, *args, **kwargs):
        streams.append(cupy.cuda.get_current_stream().ptr)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CupyBackend, "apply", apply)
    x, y = _anchors(rng, 50, 40, device="cuda")
    v = torch.randn(40, 2, dtype=F64, device="cuda", requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = laplex_matmul(x, y, 0.7, v)
        out.sum().backward()
    torch.cuda.synchronize()
    assert streams and set(streams) == {side.cuda_stream}
    want = _dense(x, y, 0.7) @ v.detach()
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12)


@CUDA
def test_layer_on_cuda_matches_the_cpu(rng):
    gen = _gen(rng)
    cpu = LaplexLinear(30, 20, phased=True, dtype=F64)
    gpu = copy.deepcopy(cpu).cuda()
    inp = torch.randn(8, 30, dtype=F64, generator=gen)
    outs = []
    for layer, data in ((cpu, inp), (gpu, inp.cuda())):
        out = layer(data)
        out.square().sum().backward()
        outs.append(out)
    assert outs[1].device.type == "cuda"
    assert torch.allclose(outs[1].cpu(), outs[0], rtol=1e-12, atol=1e-12)
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        assert torch.allclose(q.grad.cpu(), p.grad, rtol=1e-10, atol=1e-10 * p.grad.abs().max())


# ---------------------------------------------------------------------- torch.compile
def test_compiled_model_trains_without_graph_break(monkeypatch, rng):
    """``fullgraph=True`` raises on a graph break; the compiled model computes what the eager one
    does, forward and backward, its loss decreases, and every step builds one plan, repaired from
    the previous one."""
    gen = _gen(rng)
    torch.manual_seed(int(rng.integers(2**31)))
    model = torch.nn.Sequential(
        LaplexLinear(20, 12, phased=True), torch.nn.Tanh(), LaplexLinear(12, 3)
    )
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    inp = torch.randn(16, 20, generator=gen)  # the training batch's shape: no recompilation
    for net in (compiled, eager):
        net(inp).square().sum().backward()
    assert torch.allclose(compiled(inp), eager(inp), rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), eager.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5 * q.grad.abs().max())
    hints = _spy_plans(monkeypatch)
    losses = _train(compiled, 5, gen, lr=3e-2, out_features=3)
    assert losses[-1] < losses[0]
    # two layers, five steps: the first step runs on the plans of the check above
    assert len(hints) == 2 * 4 and all(h is not None for h in hints)


# ---------------------------------------------------------------------- the layer
@pytest.mark.parametrize(
    ("shape", "out_shape"), [((7,), (5,)), ((3, 7), (3, 5)), ((2, 4, 7), (2, 4, 5))]
)
def test_layer_shapes(shape, out_shape):
    layer = LaplexLinear(7, 5)
    assert layer(torch.randn(shape)).shape == out_shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_computes_half_precision_in_float32(dtype):
    layer = LaplexLinear(4, 3)
    inp = torch.randn(2, 4).to(dtype)
    out = layer(inp)
    assert out.dtype == torch.float32
    assert torch.equal(out, layer(inp.float()))


def test_layer_is_its_formula(rng):
    gen = _gen(rng)
    layer = LaplexLinear(9, 6, rate=0.8, phased=True, frequency=0.6, dtype=F64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=F64, generator=gen))
    inp = torch.randn(4, 9, dtype=F64, generator=gen)
    s = torch.exp(layer.log_rate) + 1j * layer.frequency
    K = torch.real(_dense(layer.x, layer.y, s))
    want = layer.out_scale * ((inp * layer.in_scale) @ K.T) + layer.bias
    assert torch.allclose(layer(inp), want, rtol=1e-12, atol=1e-12)
    assert layer.rate == pytest.approx(complex(s.item()))
    assert np.allclose(layer.operator().to_dense().real.numpy(), K.detach().numpy())


@pytest.mark.parametrize(
    ("options", "count"),
    [
        ({}, 3 * 5 + 2 * 8 + 1),  # x, out_scale, bias (5 each); y, in_scale (8 each); log_rate
        ({"phased": True}, 3 * 5 + 2 * 8 + 2),  # and the frequency
        ({"bias": False, "in_scale": False, "out_scale": False}, 5 + 8 + 1),
    ],
)
def test_layer_parameters(options, count):
    layer = LaplexLinear(8, 5, **options)
    assert sum(p.numel() for p in layer.parameters()) == count
    assert all(p.requires_grad for p in layer.parameters())
    assert layer.y.shape == (8,) and layer.x.shape == (5,)


@pytest.mark.parametrize("sizes", [(8, 8), (64, 63), (63, 64), (100, 37), (3, 200), (1, 5)])
@pytest.mark.parametrize(("rate", "phased"), [(1.0, False), (2.0, False), (1.0, True)])
def test_initial_weight_is_well_conditioned(sizes, rate, phased):
    """The initialisation's bound (see LaplexLinear): cond(K) <= coth(rate / 2) ** 2 for every
    pair of sizes, the phased layer's real part included."""
    layer = LaplexLinear(*sizes, rate=rate, phased=phased, dtype=F64)
    assert torch.all(layer.x[1:] > layer.x[:-1]) and torch.all(layer.y[1:] > layer.y[:-1])
    K = layer.operator().to_dense().real.numpy()
    assert K.shape == sizes[::-1]
    bound = 1.0 / np.tanh(rate / 2) ** 2
    assert np.linalg.cond(K) <= bound * (1 + 1e-9)


def test_evenly_spaced_anchors_alone_would_be_ill_conditioned():
    """Why the smaller side sits on the larger one's grid: both sides merely evenly spaced on one
    interval drift half a spacing apart, and there the matrix nearly loses rank."""
    x = torch.arange(64, dtype=F64) + 0.5
    y = (torch.arange(63, dtype=F64) + 0.5) * 64 / 63
    assert np.linalg.cond(_dense(x, y, 1.0).numpy()) > 4 * (1 / np.tanh(0.5) ** 2)


def test_layer_repr_and_reset():
    layer = LaplexLinear(3, 2, rate=2.0, phased=True, bias=False)
    assert repr(layer) == (
        "LaplexLinear(in_features=3, out_features=2, rate=2.0, phased=True, bias=False)"
    )
    initial = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    layer.reset_parameters()
    assert all(torch.equal(v, initial[k]) for k, v in layer.state_dict().items())
    assert layer.rate == pytest.approx(2.0 + 1.0j)


# ---------------------------------------------------------------------- errors
def test_errors(rng):
    x, y = _anchors(rng, 4, 3)
    v = torch.ones(3, dtype=F64)
    with pytest.raises(TypeError, match="view_as_real"):
        laplex_matmul(x, y, torch.tensor(1.0 + 1.0j), v)
    with pytest.raises(TypeError, match="floating"):
        laplex_matmul(x, y, torch.tensor(1), v)
    with pytest.raises(ValueError, match="shape"):
        laplex_matmul(x, y, torch.ones(3, dtype=F64), v)
    with pytest.raises(ValueError, match="real part"):
        laplex_matmul(x, y, torch.tensor([-1.0, 2.0], dtype=F64), v)
    with pytest.raises(ValueError, match="finite"):
        laplex_matmul(x, y, torch.tensor(float("nan"), dtype=F64), v)
    with pytest.raises(ValueError, match="finite"):
        laplex_matmul(torch.tensor([0.0, float("inf")], dtype=F64), y, 1.0, v)
    with pytest.raises(ValueError, match="length 3"):
        laplex_matmul(x, y, 1.0, torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, k\)"):
        laplex_matmul(x, y, 1.0, torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        laplex_linear(torch.ones(2, 4, dtype=F64), x, y, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        laplex_matmul(torch.arange(4), y, 1.0, v)
    with pytest.raises(ValueError, match="1-D"):
        laplex_matmul(x.reshape(2, 2), y, 1.0, v)
    with pytest.raises(TypeError, match="int64"):
        laplex_matmul(x, y, 1.0, torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        laplex_matmul(x, y, 1.0, np.ones(3))
    with pytest.raises(TypeError, match="number"):
        laplex_matmul(x, y, "1.0", v)
    layer = LaplexLinear(3, 2)
    with pytest.raises(TypeError, match="real floating"):
        layer(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        layer(torch.ones(4))
    for bad in ({"rate": 0.0}, {"rate": float("inf")}, {"phased": True, "frequency": 0.0}):
        with pytest.raises(ValueError):
            LaplexLinear(3, 2, **bad)
    with pytest.raises(ValueError, match="in_features"):
        LaplexLinear(-1, 2)


def test_the_module_names_its_public_api():
    assert sorted(lxt.__all__) == [
        "LaplexLinear",
        "PlanCache",
        "gram_nll",
        "laplex_linear",
        "laplex_matmul",
    ]


# ---------------------------------------------------------------------- the Gram's likelihood
def _gram_inputs(rng, n=12, batch=3):
    a = torch.tensor(rng.uniform(0.0, 4.0, n), dtype=F64, requires_grad=True)
    rate = torch.tensor(float(rng.uniform(0.5, 2.0)), dtype=F64, requires_grad=True)
    weights = torch.tensor(rng.uniform(0.5, 1.5, n), dtype=F64, requires_grad=True)
    noise = torch.tensor(rng.uniform(0.1, 0.3, n), dtype=F64, requires_grad=True)
    X = torch.tensor(rng.standard_normal((batch, n)), dtype=F64, requires_grad=True)
    mean = torch.tensor(rng.standard_normal(n), dtype=F64, requires_grad=True)
    return a, rate, weights, noise, X, mean


def test_gram_nll_matches_the_gram_and_dense_autograd(rng):
    a, rate, weights, noise, X, mean = _gram_inputs(rng)
    value = lxt.gram_nll(a, X, rate, weights, noise, mean)
    gram = lx.LaplexGram(a.detach().numpy(), float(rate.detach()), weights.detach().numpy(),
                         noise.detach().numpy())  # fmt: skip
    assert value.dtype == F64 and value.shape == ()
    assert np.isclose(float(value.detach()), gram.nll(X.detach().numpy(), mean.detach().numpy()))
    value.backward()
    # the same loss through a dense covariance and torch's own autograd
    leaves = [t.detach().clone().requires_grad_() for t in (a, rate, weights, noise, X, mean)]
    a2, r2, w2, u2, X2, m2 = leaves
    S = w2[:, None] * _dense(a2, a2, r2) * w2[None, :] + torch.diag(u2)
    dist = torch.distributions.MultivariateNormal(m2, covariance_matrix=S)
    (-dist.log_prob(X2).mean()).backward()
    for ours, ref in zip((a, rate, weights, noise, X, mean), leaves):
        assert torch.allclose(ours.grad, ref.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scalar", [False, True])
def test_gram_nll_gradcheck(rng, scalar):
    a, rate, weights, noise, X, mean = _gram_inputs(rng, n=8, batch=2)
    if scalar:
        weights = torch.tensor(1.3, dtype=F64, requires_grad=True)
        noise = torch.tensor(0.2, dtype=F64, requires_grad=True)
    inputs = (a, rate, weights, noise, X, mean)
    assert torch.autograd.gradcheck(lambda *t: lxt.gram_nll(t[0], t[4], *t[1:4], t[5]), inputs)
    # 1-D data and no mean
    assert torch.autograd.gradcheck(lambda a, x: lxt.gram_nll(a, x, 1.0, noise=0.2), (a, X[0]))


def test_gram_nll_gradcheck_phased(rng):
    """The phased Gram's rate as ``[a, ω]``: its gradient is ``[dL/da, dL/dω]``."""
    a, _, weights, noise, X, mean = _gram_inputs(rng, n=8, batch=2)
    rate = torch.tensor([0.8, 2.5], dtype=F64, requires_grad=True)
    inputs = (a, rate, weights, noise, X, mean)
    assert torch.autograd.gradcheck(lambda *t: lxt.gram_nll(t[0], t[4], *t[1:4], t[5]), inputs)


def test_gram_nll_opcheck(rng):
    a, rate, weights, noise, X, mean = (t.detach() for t in _gram_inputs(rng))
    torch.library.opcheck(torch.ops.laplexops.gram_nll, (a, rate, weights, noise, X, mean, -1))
    torch.library.opcheck(
        torch.ops.laplexops.gram_nll_gradient, (a, rate, weights, noise, X, mean, -1, True)
    )


def test_gram_nll_compiled_training(rng):
    """A model whose loss is the Gram's likelihood, compiled with ``fullgraph=True``, trains."""
    n = 30
    data = torch.tensor(rng.standard_normal((16, n)), dtype=F64)
    anchors = torch.nn.Parameter(torch.tensor(np.linspace(0.0, 3.0, n), dtype=F64))
    log_rate = torch.nn.Parameter(torch.tensor(0.0, dtype=F64))
    log_noise = torch.nn.Parameter(torch.tensor(-1.0, dtype=F64))
    cache = lxt.PlanCache()

    def loss():
        return lxt.gram_nll(anchors, data, log_rate.exp(), noise=log_noise.exp(), cache=cache)

    compiled = torch.compile(loss, fullgraph=True)
    opt = torch.optim.Adam([anchors, log_rate, log_noise], lr=0.05)
    values = []
    for _ in range(20):
        opt.zero_grad()
        value = compiled()
        value.backward()
        opt.step()
        values.append(float(value))
    assert values[-1] < values[0]


@CUDA
def test_gram_nll_on_cuda_matches_the_cpu(rng):
    """The likelihood and every gradient on CUDA tensors (the CuPy backend's filter) equal the
    CPU's (Numba's) to 1e-10; gradcheck on CUDA."""
    inputs = _gram_inputs(rng)
    on_gpu = [t.detach().cuda().requires_grad_() for t in inputs]
    values = []
    for a, rate, weights, noise, X, mean in (inputs, on_gpu):
        value = lxt.gram_nll(a, X, rate, weights, noise, mean)
        value.backward()
        values.append(value)
    assert values[1].device.type == "cuda"
    assert abs(float(values[1]) - float(values[0])) <= 1e-10 * abs(float(values[0]))
    for cpu, gpu in zip(inputs, on_gpu):
        assert gpu.grad.device.type == "cuda"
        assert torch.allclose(gpu.grad.cpu(), cpu.grad, rtol=1e-10, atol=1e-12)
    small = [t.detach().cuda().requires_grad_() for t in _gram_inputs(rng, n=8, batch=2)]
    assert torch.autograd.gradcheck(lambda *t: lxt.gram_nll(t[0], t[4], *t[1:4], t[5]), small)


def test_gram_nll_errors():
    a = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="rate must have shape"):
        lxt.gram_nll(a, torch.ones(3, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(TypeError, match="1-D float32 or float64"):
        lxt.gram_nll(torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=F64))
    with pytest.raises(np.linalg.LinAlgError, match="equal"):
        lxt.gram_nll(a, torch.ones(3, dtype=F64))  # three equal anchors, no noise
