"""PyTorch CPU tensors in -> PyTorch tensors out (skipped when torch is not installed)."""

import numpy as np
import pytest

import laplexops as lx

torch = pytest.importorskip("torch")


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
