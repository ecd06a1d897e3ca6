"""The backend registry: a toy backend (pure NumPy, the dense matrix per product, O(m n)) plugs in
through the public registry alone, and the reference, adjoint and gradient tests run through it;
names, instances and the errors of ``backend=``."""

from __future__ import annotations

import numpy as np
import pytest

import laplexops as lx
from laplexops.backends import (
    Backend,
    Side,
    available,
    get_backend,
    register_backend,
    registered,
    set_backend,
    unregister_backend,
)

# the property tests of the other modules, collected again here to run through the toy backend
# (only those of small sizes: the toy is O(m n))
from test_adjoint import (  # noqa: F401
    test_dottest_float32,
    test_dottest_float64,
    test_transpose_is_conjugate_of_adjoint,
)
from test_gradient import (  # noqa: F401
    test_gradients_match_central_differences,
    test_gradients_match_dense_formulas_float64,
    test_ties_use_sign_zero,
)
from test_reference import (  # noqa: F401
    test_adjoint_product_matches_dense_reference,
    test_clustered_huge_spread_matches_reference,
    test_complex_operand_with_real_rate,
    test_empty_anchors,
    test_forward_product_matches_dense_reference,
    test_result_dtypes,
    test_small_sides,
    test_to_dense_matches_dense_reference,
    test_transpose_product_matches_dense_reference,
)


class DenseBackend:
    """A backend in a few lines: the plan keeps the anchors, a product forms the dense matrix."""

    name = "dense"
    device = "cpu"
    xp = np

    def __init__(self):
        self.plans = 0  # plans built (the front end shares one per operator family)

    def asarray(self, a):
        return np.asarray(a)

    def snapshot(self, a, dtype):
        copy = np.array(a, dtype=dtype)
        return copy, int(np.count_nonzero(~np.isfinite(copy))), None

    def plan(self, x, y, hint=None, ordered=(None, None)):
        self.plans += 1
        return x, y

    def apply(self, plan, side, rate, b, *, want_sum=True, want_signed=False, want_moment=False):
        rows, cols = plan if side == Side.ROWS_X else plan[::-1]
        d = rows.astype(np.float64)[:, None] - cols.astype(np.float64)[None, :]
        w = np.exp(-rate * np.abs(d))
        real = np.finfo(b.dtype).dtype
        value = np.result_type(
            b.dtype, np.result_type(real, np.complex64) if w.dtype.kind == "c" else real
        )
        b = b.astype(np.complex128 if value.kind == "c" else np.float64)
        outs = (
            w if want_sum else None,
            np.sign(d) * w if want_signed else None,
            np.abs(d) * w if want_moment else None,
        )
        return tuple(None if o is None else (o @ b).astype(value) for o in outs)


@pytest.fixture(scope="module", autouse=True)
def dense_backend():
    """The toy backend, registered and chosen by ``backend="auto"`` for every test here."""
    register_backend("dense", "cpu", DenseBackend)
    try:
        with set_backend("dense") as backend:
            yield backend
    finally:
        unregister_backend("dense")


def test_the_toy_backend_serves_auto(dense_backend):
    assert isinstance(dense_backend, Backend) and registered()["dense"] == "cpu"
    assert "dense" in available()
    op = lx.LaplexOperator(np.arange(4.0), np.arange(3.0), 0.5)
    assert op.backend == "dense" and get_backend("auto", "cpu") is dense_backend
    # a name forces the built-in one all the same
    assert lx.LaplexOperator(np.arange(4.0), np.arange(3.0), backend="numba").backend == "numba"


def test_an_instance_passes_to_derived_operators(rng):
    mine = DenseBackend()
    x, y = rng.standard_normal(7), rng.standard_normal(5)
    op = lx.LaplexOperator(x, y, 0.9 + 0.2j, backend=mine)
    v = rng.standard_normal(5)
    u = op @ v
    step = op.with_anchors(x + 0.01, y)
    assert step.backend == "dense" and op.H.backend == "dense"
    np.testing.assert_allclose(
        u, lx.LaplexOperator(x, y, 0.9 + 0.2j, backend="numba") @ v, rtol=1e-12
    )
    op.H @ rng.standard_normal(7)
    op.with_rate(2.0) @ v
    assert mine.plans == 1  # one plan for the operator, its adjoint and its re-rated copy
    step @ v
    assert mine.plans == 2


def test_backend_errors():
    x = np.arange(3.0)
    with pytest.raises(ValueError, match="registered name"):
        lx.LaplexOperator(x, x, backend="no-such-backend")
    with pytest.raises(TypeError, match="Backend instance"):
        lx.LaplexOperator(x, x, backend=object())

    class Gpu(DenseBackend):
        device = "cuda"

    with pytest.raises(ValueError, match="serves cuda data"):
        lx.LaplexOperator(x, x, backend=Gpu())
    with pytest.raises(ValueError, match="registered already"):
        register_backend("numba", "cpu", DenseBackend)
    for name in ("auto", ""):
        with pytest.raises(ValueError, match="backend name"):
            register_backend(name, "cpu", DenseBackend)
    with pytest.raises(ValueError, match="device"):
        register_backend("tpu-one", "tpu", DenseBackend)
    with pytest.raises(KeyError):
        unregister_backend("no-such-backend")


def test_a_backend_that_cannot_be_built_says_why():
    def missing():
        raise ImportError("No module named 'somegpulib'")

    register_backend("broken", "cpu", missing)
    try:
        assert "broken" not in available()
        with pytest.raises(RuntimeError, match="'broken' backend is not available") as info:
            lx.LaplexOperator(np.arange(3.0), np.arange(3.0), backend="broken")
        assert isinstance(info.value.__cause__, ImportError)
        assert "somegpulib" in str(info.value)
    finally:
        unregister_backend("broken")


def test_set_backend_nests_and_ends(dense_backend):
    other = DenseBackend()
    other.name = "dense-2"
    with set_backend(other):
        assert lx.LaplexOperator([1.0], [2.0]).backend == "dense-2"
        with set_backend("numba"):
            assert lx.LaplexOperator([1.0], [2.0]).backend == "numba"
        assert lx.LaplexOperator([1.0], [2.0]).backend == "dense-2"
    assert lx.LaplexOperator([1.0], [2.0]).backend == dense_backend.name == "dense"
