"""laplexops.jax: the product as a JAX custom-VJP function (skipped when JAX is not installed).

Checks: agreement with a dense jnp reference (float32 and float64), JAX's gradient checker under
jit for every input (real and complex rates and operands), agreement of ``jax.grad`` with the
library's ``gradient`` in JAX's complex convention, vmap against Python loops (over the operand,
the anchors, the rate, nested, and of gradients), the cache of operators, and the errors.
"""

import numpy as np
import pytest

import laplexops as lx

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
from jax.test_util import check_grads  # noqa: E402

import laplexops.jax  # noqa: E402
from laplexops.backends import get_backend  # noqa: E402
from laplexops.jax import cache_clear, cache_info, laplex_matmul  # noqa: E402


@pytest.fixture
def x64():
    """float64 JAX arrays for the test, and JAX's setting as it was afterwards."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def x32():
    """JAX's default: float32 arrays (whatever another test left)."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


def _anchors(rng, m, n):
    """Anchors in random order, every |x_i - y_j| at least 0.2: no tie within a finite
    difference step, where the kernel has a kink."""
    z = np.arange(m + n) * 0.45 + rng.uniform(0.0, 0.25, m + n)
    z = rng.permutation(z)
    return z[:m], z[m:]


def _operand(rng, shape, complex_):
    v = rng.standard_normal(shape)
    return v + 1j * rng.standard_normal(shape) if complex_ else v


def _dense(x, y, rate):
    return jnp.exp(-rate * jnp.abs(x[:, None] - y[None, :]))


RATES = [1.3, 0.6 + 1.7j]


# ---------------------------------------------------------------------------- the product
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("complex_v", [False, True])
@pytest.mark.parametrize("vshape", [(), (3,)])
def test_product_matches_dense_float64(x64, rng, rate, complex_v, vshape):
    x, y = _anchors(rng, 13, 9)
    v = _operand(rng, (9, *vshape), complex_v)
    out = jax.jit(laplex_matmul)(jnp.asarray(x), jnp.asarray(y), rate, jnp.asarray(v))
    complex_out = complex_v or isinstance(rate, complex)
    assert out.dtype == (jnp.complex128 if complex_out else jnp.float64)
    assert out.shape == (13, *vshape)
    ref = _dense(x, y, rate) @ v
    assert np.linalg.norm(np.asarray(out) - ref) <= 1e-12 * np.linalg.norm(ref)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("vshape", [(), (2,)])
def test_product_matches_dense_float32(x32, rng, rate, vshape):
    x, y = _anchors(rng, 11, 17)
    v = rng.standard_normal((17, *vshape))
    x32_, y32, v32 = (jnp.asarray(a, dtype=jnp.float32) for a in (x, y, v))
    out = jax.jit(laplex_matmul)(x32_, y32, rate, v32)
    assert out.dtype == (jnp.complex64 if isinstance(rate, complex) else jnp.float32)
    # the reference in float64 (NumPy) from the float32 inputs
    xd, yd, vd = (np.asarray(a, dtype=np.float64) for a in (x32_, y32, v32))
    ref = np.exp(-rate * np.abs(xd[:, None] - yd[None, :])) @ vd
    assert np.linalg.norm(np.asarray(out) - ref) <= 1e-5 * np.linalg.norm(ref)
    # and the dense jnp product in float32 agrees to float32 rounding
    dense = _dense(x32_, y32, rate) @ v32
    assert np.linalg.norm(np.asarray(out - dense)) <= 1e-5 * np.linalg.norm(ref)


def test_dtypes_follow_the_inputs(x64, rng):
    x, y = _anchors(rng, 5, 4)
    v = rng.standard_normal(4)
    f32 = jnp.float32
    # float32 anchors and operand stay float32 with x64 on; a float64 operand promotes
    assert (
        laplex_matmul(jnp.asarray(x, f32), jnp.asarray(y, f32), 2.0, jnp.asarray(v, f32)).dtype
        == f32
    )
    assert (
        laplex_matmul(jnp.asarray(x, f32), jnp.asarray(y, f32), 2.0, jnp.asarray(v)).dtype
        == jnp.float64
    )
    # integer anchors take the default float; gradients come back in each input's dtype
    xi, yi = jnp.arange(5), jnp.arange(4) + 2
    assert laplex_matmul(xi, yi, 2.0, jnp.asarray(v)).dtype == jnp.float64
    rate = jnp.asarray(2.0, f32)
    grads = jax.grad(lambda x, s, v: jnp.sum(laplex_matmul(x, y, s, v)), argnums=(0, 1, 2))(
        jnp.asarray(x, f32), rate, jnp.asarray(v)
    )
    assert [g.dtype for g in grads] == [f32, f32, jnp.float64]


def test_empty_anchors(x64):
    out = laplex_matmul(jnp.zeros(0), jnp.arange(3.0), 1.0, jnp.ones(3))
    assert out.shape == (0,)
    g = jax.grad(lambda v: jnp.sum(laplex_matmul(jnp.arange(2.0), jnp.zeros(0), 1.0, v)))(
        jnp.zeros(0)
    )
    assert g.shape == (0,)


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("complex_v", [False, True])
@pytest.mark.parametrize("vshape", [(), (2,)])
def test_check_grads_under_jit(x64, rng, rate, complex_v, vshape):
    """JAX's checker: reverse-mode products against central differences along random directions
    of all four inputs at once (complex ones included, in JAX's convention)."""
    x, y = _anchors(rng, 7, 6)
    v = _operand(rng, (6, *vshape), complex_v)
    args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(rate), jnp.asarray(v))
    check_grads(jax.jit(laplex_matmul), args, order=1, modes=["rev"])


@pytest.mark.parametrize("argnum", [0, 1, 2, 3])
def test_check_grads_per_input(x64, rng, argnum):
    """Each input alone (the others closed over), complex rate and operand."""
    x, y = _anchors(rng, 6, 8)
    args = [
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(0.8 - 0.9j),
        jnp.asarray(_operand(rng, 8, True)),
    ]

    def f(a):
        return laplex_matmul(*args[:argnum], a, *args[argnum + 1 :])

    check_grads(jax.jit(f), (args[argnum],), order=1, modes=["rev"])


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("complex_v", [False, True])
@pytest.mark.parametrize("vshape", [(), (3,)])
def test_jit_grad_matches_the_library_gradient(x64, rng, rate, complex_v, vshape):
    """For L = Re(sum(conj(g) * (W v))), jax.grad gives the library's gradients, conjugated for
    the complex inputs (JAX's convention against the library's PyTorch one)."""
    x, y = _anchors(rng, 9, 7)
    v = _operand(rng, (7, *vshape), complex_v)
    out_complex = complex_v or isinstance(rate, complex)
    g = _operand(rng, (9, *vshape), out_complex)

    def loss(x, y, rate, v):
        return jnp.real(jnp.sum(jnp.conj(g) * laplex_matmul(x, y, rate, v)))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(rate), jnp.asarray(v)
    )
    ref = lx.LaplexOperator(x, y, rate).gradient(v, g)
    np.testing.assert_allclose(grads[0], ref.x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads[1], ref.y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(complex(grads[2]), np.conj(ref.rate), rtol=1e-12)
    np.testing.assert_allclose(grads[3], np.conj(ref.v), rtol=1e-12, atol=1e-14)
    if isinstance(rate, complex):  # the convention matters: the two differ here
        assert abs(np.conj(ref.rate) - ref.rate) > 1e-3 * abs(ref.rate)


def test_grad_matches_dense_autodiff(x64, rng):
    """jax.grad through the custom VJP equals jax.grad through the dense jnp product."""
    x, y = _anchors(rng, 8, 5)
    v = jnp.asarray(_operand(rng, (5, 2), True))
    target = jnp.asarray(_operand(rng, (8, 2), True))

    def loss(product):
        return lambda x, y, s, v: jnp.sum(jnp.abs(product(x, y, s, v) - target) ** 2)

    args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(0.7 + 0.4j), v)
    ours = jax.grad(loss(laplex_matmul), argnums=(0, 1, 2, 3))(*args)
    theirs = jax.grad(loss(lambda x, y, s, v: _dense(x, y, s) @ v), argnums=(0, 1, 2, 3))(*args)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- vmap
def _loop(f, *batched):
    return jnp.stack([f(*args) for args in zip(*batched)])


@pytest.mark.parametrize("vshape", [(), (2,)])
def test_vmap_over_the_operand_is_one_product(x64, rng, vshape):
    x, y = (jnp.asarray(a) for a in _anchors(rng, 10, 8))
    vs = jnp.asarray(_operand(rng, (5, 8, *vshape), True))

    def f(v):
        return laplex_matmul(x, y, 0.9 + 0.3j, v)

    expected = _loop(f, vs)
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(vs), expected, rtol=1e-12, atol=1e-14)
    # the batch on another axis of the array
    moved = jnp.moveaxis(vs, 0, -1)
    np.testing.assert_allclose(
        jax.vmap(f, in_axes=-1, out_axes=-1)(moved), jnp.moveaxis(expected, 0, -1), rtol=1e-12
    )


def test_vmap_over_the_operand_is_columns_of_one_product(x64, rng):
    """Only v batched: the batch becomes the columns of one matmat on one operator (one scan of
    6 columns), not one product per element."""
    spy = _CountingBackend()
    x, y = (jnp.asarray(a) for a in _anchors(rng, 10, 8))
    vs = jnp.asarray(rng.standard_normal((6, 8, 2)))
    f = jax.jit(jax.vmap(lambda v: laplex_matmul(x, y, 1.1, v, backend=spy)))
    out = f(vs)
    assert spy.columns == [12]
    np.testing.assert_allclose(out, _loop(lambda v: _dense(x, y, 1.1) @ v, vs), rtol=1e-12)


@pytest.mark.parametrize("rate", RATES)
def test_vmap_over_anchors_and_rate(x64, rng, rate):
    pairs = [_anchors(rng, 7, 5) for _ in range(4)]
    xs = jnp.asarray(np.stack([p[0] for p in pairs]))
    ys = jnp.asarray(np.stack([p[1] for p in pairs]))
    rates = jnp.asarray(rate * np.array([1.0, 0.5, 2.0, 1.5]))
    v = jnp.asarray(rng.standard_normal(5))
    vs = jnp.asarray(rng.standard_normal((4, 5, 3)))
    cases = [
        ((0, None, None, None), (xs, ys[0], rate, v)),
        ((None, 0, None, None), (xs[0], ys, rate, v)),
        ((None, None, 0, None), (xs[0], ys[0], rates, v)),
        ((0, 0, 0, 0), (xs, ys, rates, vs)),
        ((0, None, None, 0), (xs, ys[0], rate, vs)),
    ]
    for in_axes, args in cases:
        batched = jax.jit(jax.vmap(laplex_matmul, in_axes=in_axes))(*args)
        expected = _loop(
            laplex_matmul,
            *(a if ax == 0 else [a] * 4 for a, ax in zip(args, in_axes)),
        )
        np.testing.assert_allclose(batched, expected, rtol=1e-12, atol=1e-14, err_msg=str(in_axes))


def test_nested_vmap(x64, rng):
    """vmap over anchors of vmap over operands: two leading batch dimensions in the callback."""
    pairs = [_anchors(rng, 6, 5) for _ in range(3)]
    xs = jnp.asarray(np.stack([p[0] for p in pairs]))
    y = jnp.asarray(pairs[0][1])
    vs = jnp.asarray(rng.standard_normal((4, 5)))
    inner = jax.vmap(lambda x, v: laplex_matmul(x, y, 0.7, v), in_axes=(None, 0))
    batched = jax.jit(jax.vmap(inner, in_axes=(0, None)))(xs, vs)
    assert batched.shape == (3, 4, 6)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(
                batched[i, j], laplex_matmul(xs[i], y, 0.7, vs[j]), rtol=1e-12, atol=1e-14
            )


@pytest.mark.parametrize("rate", RATES)
def test_vmap_of_grad_gives_per_example_gradients(x64, rng, rate):
    """Per-example gradients of every input, over a batch of operands and upstream targets:
    the anchors' and the rate's gradients differ per example and must not be summed."""
    x, y = (jnp.asarray(a) for a in _anchors(rng, 8, 6))
    vs = jnp.asarray(rng.standard_normal((5, 6)))
    targets = jnp.asarray(rng.standard_normal((5, 8)))

    def loss(x, y, s, v, t):
        return jnp.sum(jnp.abs(laplex_matmul(x, y, s, v) - t) ** 2)

    grad = jax.grad(loss, argnums=(0, 1, 2, 3))
    s = jnp.asarray(rate)
    batched = jax.jit(jax.vmap(grad, in_axes=(None, None, None, 0, 0)))(x, y, s, vs, targets)
    for got, ref in zip(batched, zip(*(grad(x, y, s, v, t) for v, t in zip(vs, targets)))):
        np.testing.assert_allclose(got, jnp.stack(ref), rtol=1e-11, atol=1e-13)


def test_grad_of_vmap_sums_over_the_batch(x64, rng):
    x, y = (jnp.asarray(a) for a in _anchors(rng, 8, 6))
    vs = jnp.asarray(rng.standard_normal((5, 6)))

    def batch_loss(x, y, s, vs):
        return jnp.sum(jax.vmap(lambda v: laplex_matmul(x, y, s, v))(vs) ** 2)

    got = jax.jit(jax.grad(batch_loss, argnums=(0, 1, 2, 3)))(x, y, 1.2, vs)
    single = jax.grad(lambda x, y, s, v: jnp.sum(laplex_matmul(x, y, s, v) ** 2), (0, 1, 2, 3))
    parts = [single(x, y, 1.2, v) for v in vs]
    for i in range(3):
        np.testing.assert_allclose(got[i], sum(p[i] for p in parts), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got[3], jnp.stack([p[3] for p in parts]), rtol=1e-11, atol=1e-13)
    # the same batch as the columns of one operand: the same gradients
    cols = jax.grad(lambda x, y, s, V: jnp.sum(laplex_matmul(x, y, s, V) ** 2), (0, 1, 2, 3))(
        x, y, 1.2, vs.T
    )
    for i in range(3):
        np.testing.assert_allclose(got[i], cols[i], rtol=1e-11, atol=1e-13)


def test_jacrev_batches_the_cotangents(x64, rng):
    """jax.jacrev vmaps the backward pass over cotangents only: each row of the Jacobian is one
    gradient call, and together they equal the dense Jacobian."""
    x, y = (jnp.asarray(a) for a in _anchors(rng, 5, 4))
    v = jnp.asarray(rng.standard_normal(4))
    jac = jax.jit(jax.jacrev(laplex_matmul, argnums=(0, 1, 2, 3)))(x, y, 0.9, v)
    ref = jax.jacrev(lambda x, y, s, v: _dense(x, y, s) @ v, argnums=(0, 1, 2, 3))(x, y, 0.9, v)
    for a, b in zip(jac, ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------- the cache
class _CountingBackend:
    """The Numba backend, counting the plans it builds and how many started from a hint."""

    name = "numba-counting"
    device = "cpu"

    def __init__(self):
        self._inner = get_backend("numba", "cpu")
        self.xp = self._inner.xp
        self.plans = 0
        self.hinted = 0
        self.columns = []  # the number of columns of each scan

    def asarray(self, a):
        return self._inner.asarray(a)

    def snapshot(self, a, dtype):
        return self._inner.snapshot(a, dtype)

    def plan(self, x, y, hint=None, ordered=(None, None)):
        self.plans += 1
        self.hinted += hint is not None
        return self._inner.plan(x, y, hint, ordered)

    def apply(self, plan, side, rate, b, **wants):
        self.columns.append(b.shape[1])
        return self._inner.apply(plan, side, rate, b, **wants)


def test_cache_reuses_plans_and_repairs_them(x64, rng):
    spy = _CountingBackend()
    x, y = (jnp.asarray(a) for a in _anchors(rng, 12, 9))
    v = jnp.asarray(rng.standard_normal(9))

    def loss(x, y, s, v):
        return jnp.sum(laplex_matmul(x, y, s, v, backend=spy) ** 2)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    cache_clear()
    step(x, y, 1.0, v)  # forward and backward: one plan
    assert (spy.plans, spy.hinted) == (1, 0)
    step(x, y, 2.0, 2 * v)  # same anchors, another rate and operand: no new plan
    jax.jit(lambda x, y, v: laplex_matmul(x, y, 0.5 + 1j, v, backend=spy))(x, y, v)
    assert (spy.plans, spy.hinted) == (1, 0)
    info = cache_info()
    assert (info.misses, info.repairs, info.currsize) == (1, 0, 1) and info.hits == 4
    # new anchors of the same shapes: the plan is repaired from the cached one, and is right
    x2 = x + 0.01 * jnp.asarray(rng.standard_normal(12))
    value, _ = step(x2, y, 1.0, v)
    assert (spy.plans, spy.hinted) == (2, 1)
    assert cache_info().repairs == 1
    np.testing.assert_allclose(value, jnp.sum((_dense(x2, y, 1.0) @ v) ** 2), rtol=1e-12)


def test_cache_evicts_the_least_recently_used(x64, rng, monkeypatch):
    monkeypatch.setattr(laplexops.jax, "CACHE_SIZE", 3)
    spy = _CountingBackend()
    cache_clear()
    anchors = [jnp.asarray(_anchors(rng, 4 + i, 3)[0]) for i in range(4)]
    y = jnp.asarray([0.1, 0.2, 0.3])
    for x in anchors:  # distinct shapes: no repairs, one plan each
        laplex_matmul(x, y, 1.0, jnp.ones(3), backend=spy)
    assert spy.plans == 4
    assert cache_info()[3:] == (3, 3)  # maxsize, currsize
    laplex_matmul(anchors[1], y, 1.0, jnp.ones(3), backend=spy)  # still cached, now the newest
    assert spy.plans == 4
    laplex_matmul(anchors[0], y, 1.0, jnp.ones(3), backend=spy)  # evicted: planned again
    assert spy.plans == 5
    laplex_matmul(anchors[1], y, 1.0, jnp.ones(3), backend=spy)  # kept by its recent use
    assert spy.plans == 5


def test_a_hash_hit_is_confirmed_by_the_values(x64, rng, monkeypatch):
    """With every digest equal, the cache must still tell anchors apart by their values."""

    class Collide:
        def __init__(self, digest_size):
            pass

        def update(self, data):
            pass

        def digest(self):
            return b"same"

    monkeypatch.setattr(laplexops.jax.hashlib, "blake2b", Collide)
    cache_clear()
    y, v = jnp.asarray([0.5, 2.5]), jnp.asarray([1.0, -1.0])
    for _ in range(2):
        x = jnp.asarray(rng.uniform(0.0, 3.0, 4))
        out = laplex_matmul(x, y, 1.0, v)
        np.testing.assert_allclose(out, _dense(x, y, 1.0) @ v, rtol=1e-12)
    assert cache_info().misses == 2


# ---------------------------------------------------------------------------- errors
def test_shape_and_type_errors(x64):
    x, y, v = jnp.arange(3.0), jnp.arange(2.0), jnp.ones(2)
    with pytest.raises(ValueError, match="leading dimension 2"):
        laplex_matmul(x, y, 1.0, jnp.ones(3))
    with pytest.raises(ValueError, match="ndim 1 or 2"):
        laplex_matmul(x, y, 1.0, jnp.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="1-D"):
        laplex_matmul(jnp.ones((3, 1)), y, 1.0, v)
    with pytest.raises(TypeError, match="real"):
        laplex_matmul(x + 0j, y, 1.0, v)
    with pytest.raises(TypeError, match="scalar"):
        laplex_matmul(x, y, jnp.ones(2), v)
    with pytest.raises(TypeError, match="numeric"):
        laplex_matmul(x, y, 1.0, jnp.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="serves cuda data"):
        laplex_matmul(x, y, 1.0, v, backend=_GpuOnly())


class _GpuOnly(_CountingBackend):
    name = "gpu-only"
    device = "cuda"


@pytest.mark.parametrize("jit", [False, True])
def test_value_errors_surface_from_the_callback(x64, jit):
    f = jax.jit(laplex_matmul) if jit else laplex_matmul
    with pytest.raises(Exception, match="real part of rate must be > 0"):
        f(jnp.arange(3.0), jnp.arange(2.0), -1.0, jnp.ones(2)).block_until_ready()
    with pytest.raises(Exception, match="must be finite"):
        f(jnp.array([0.0, jnp.nan]), jnp.arange(2.0), 1.0, jnp.ones(2)).block_until_ready()
