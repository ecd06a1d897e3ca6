"""Errors (docs/reference.md, Errors): bad input never yields a number; ``ValueError`` /
``TypeError`` with a message that says what was expected and what was given."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx

X = np.array([0.5, -1.0, 2.0, 3.5])
Y = np.array([1.0, 0.25, -0.75])
M, N = X.size, Y.size


def _op(rate=1.0):
    return lx.LaplexOperator(X, Y, rate)


# ------------------------------------------------------------------ anchors
BAD_VALUES = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_anchors(bad, side, dtype):
    x, y = X.astype(dtype), Y.astype(dtype)
    if side == "x":
        x = x.copy()
        x[2] = bad
    else:
        y = y.copy()
        y[0] = bad
    with pytest.raises(ValueError, match="(?i)finite"):
        lx.LaplexOperator(x, y, 1.0)


@given(data=st.data())
def test_nonfinite_anchor_anywhere(data):
    n = data.draw(st.integers(1, 50))
    where = data.draw(st.integers(0, n - 1))
    x = np.random.default_rng(data.draw(st.integers(0, 2**32))).uniform(-5, 5, n)
    x[where] = data.draw(st.sampled_from(BAD_VALUES))
    good = np.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="(?i)finite"):
        lx.LaplexOperator(x, good, 1.0)
    with pytest.raises(ValueError, match="(?i)finite"):
        lx.LaplexOperator(good, x, 1.0 + 1.0j)


@pytest.mark.parametrize(
    "x,y",
    [
        (np.array(1.0), Y),  # 0-d
        (X, np.array(2.0)),
        (X.reshape(-1, 1), Y),  # 2-D column
        (X, Y.reshape(1, -1)),  # 2-D row
        (np.ones((2, 2)), Y),
        (X, np.ones((1, 1, 3))),
    ],
    ids=["x-0d", "y-0d", "x-col", "y-row", "x-2x2", "y-3d"],
)
def test_anchors_not_1d(x, y):
    with pytest.raises(ValueError) as info:
        lx.LaplexOperator(x, y, 1.0)
    assert (
        "1-d" in str(info.value).lower()
        or "shape" in str(info.value).lower()
        or "dim" in str(info.value).lower()
    ), str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        np.array(["a", "b"]),
        np.array([b"a", b"b"]),
        np.array([1.0, "x"], dtype=object),
        np.array([True, False]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
    ],
    ids=["str", "bytes", "object", "bool", "datetime"],
)
@pytest.mark.parametrize("side", ["x", "y"])
def test_non_numeric_anchors(bad, side):
    with pytest.raises(TypeError):
        if side == "x":
            lx.LaplexOperator(bad, Y, 1.0)
        else:
            lx.LaplexOperator(X, bad, 1.0)


def test_complex_anchors_are_rejected():
    with pytest.raises((TypeError, ValueError)):
        lx.LaplexOperator(X.astype(np.complex128), Y, 1.0)


# ------------------------------------------------------------------ rate
@pytest.mark.parametrize(
    "rate",
    [
        np.nan,
        np.inf,
        -np.inf,
        complex(np.nan, 0),
        complex(1, np.inf),
        complex(1, np.nan),
        complex(np.inf, 1),
    ],
    ids=["nan", "inf", "-inf", "nan+0j", "1+infj", "1+nanj", "inf+1j"],
)
def test_nonfinite_rate(rate):
    with pytest.raises(ValueError, match="(?i)finite"):
        lx.LaplexOperator(X, Y, rate)
    with pytest.raises(ValueError, match="(?i)finite"):
        _op().with_rate(rate)


@pytest.mark.parametrize(
    "rate", [0.0, -0.0, -1.0, -1e-300, 0j, 2j, -1.0 + 3.0j, np.float32(-2.0)], ids=str
)
def test_rate_real_part_not_positive(rate):
    with pytest.raises(ValueError, match="(?i)rate"):
        lx.LaplexOperator(X, Y, rate)
    with pytest.raises(ValueError, match="(?i)rate"):
        _op().with_rate(rate)


@given(
    st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)
def test_rate_real_part_not_positive_property(a, w):
    with pytest.raises(ValueError):
        lx.LaplexOperator(X, Y, complex(a, w))
    with pytest.raises(ValueError):
        lx.LaplexOperator(X, Y, a)


@pytest.mark.parametrize(
    "rate",
    ["1.0", None, [1.0], object(), True, np.array([1.0, 2.0])],
    ids=["str", "None", "list", "obj", "bool", "array"],
)
def test_non_numeric_rate(rate):
    with pytest.raises(TypeError):
        lx.LaplexOperator(X, Y, rate)


# ------------------------------------------------------------------ operands
def _products(op):
    return {
        "matvec": op.matvec,
        "matmat": op.matmat,
        "@": op.__matmul__,
        "rmatvec": op.rmatvec,
        "rmatmat": op.rmatmat,
        "H@": op.H.__matmul__,
    }


@pytest.mark.parametrize("rate", [1.0, 1.0 + 1.0j], ids=["real", "complex"])
@pytest.mark.parametrize(
    "name,shape",
    [
        ("matvec", (N + 1,)),
        ("matvec", (N - 1, 1)),
        ("matvec", (M,)),
        ("matmat", (N + 1, 2)),
        ("matmat", (M, 3)),
        ("@", (N + 2,)),
        ("@", (N + 2, 3)),
        ("rmatvec", (M + 1,)),
        ("rmatvec", (N,)),
        ("rmatmat", (M - 1, 2)),
        ("H@", (N,)),
        ("H@", (N, 2)),
    ],
)
def test_leading_dimension_mismatch(rate, name, shape, rng):
    op = _op(rate)
    v = rng.standard_normal(shape)
    with pytest.raises(ValueError) as info:
        _products(op)[name](v)
    msg = str(info.value)
    # the message names what was expected and what was given
    expected = N if name in ("matvec", "matmat", "@") else M
    assert str(shape[0]) in msg and str(expected) in msg, msg


@pytest.mark.parametrize(
    "name,shape",
    [
        ("matvec", (N, 1, 1)),
        ("matmat", (N, 2, 2)),
        ("@", (N, 1, 1)),
        ("@", ()),
        ("rmatvec", (M, 1, 1)),
        ("rmatmat", (M, 2, 1)),
        ("H@", (M, 1, 2)),
        ("matvec", ()),
        ("rmatvec", ()),
    ],
)
def test_operand_ndim(name, shape, rng):
    op = _op()
    v = rng.standard_normal(shape) if shape else np.float64(1.5)
    v = np.asarray(v)
    with pytest.raises(ValueError):
        _products(op)[name](v)


def test_matvec_rejects_several_columns_and_matmat_rejects_vectors(rng):
    op = _op()
    with pytest.raises(ValueError):
        op.matvec(rng.standard_normal((N, 3)))
    with pytest.raises(ValueError):
        op.rmatvec(rng.standard_normal((M, 2)))
    with pytest.raises(ValueError):
        op.matmat(rng.standard_normal(N))
    with pytest.raises(ValueError):
        op.rmatmat(rng.standard_normal(M))


@pytest.mark.parametrize(
    "bad",
    [
        np.array(["a", "b", "c"]),
        np.array([1, "b", None], dtype=object),
        np.array([True, False, True]),
    ],
    ids=["str", "object", "bool"],
)
def test_non_numeric_operands(bad):
    op = _op()
    for f in (op.matvec, op.__matmul__, op.T.rmatvec):
        with pytest.raises(TypeError):
            f(bad)
    with pytest.raises(TypeError):
        op.matmat(bad.reshape(N, 1))
    g = np.ones(M)
    with pytest.raises(TypeError):
        op.gradient(bad, g)


# ------------------------------------------------------------------ gradient
@pytest.mark.parametrize(
    "vshape,gshape",
    [
        ((N,), (M + 1,)),
        ((N,), (M, 1)),
        ((N, 2), (M,)),
        ((N, 2), (M, 3)),
        ((N,), (N,)),
        ((N + 1,), (M,)),
        ((N, 2), (M, 2, 1)),
    ],
)
def test_gradient_shape_errors(vshape, gshape, rng):
    with pytest.raises(ValueError):
        _op().gradient(rng.standard_normal(vshape), rng.standard_normal(gshape))


# ------------------------------------------------------------------ to_dense guard, backends
def test_to_dense_guard():
    m, n = 100_001, 1_000  # 1.00001e8 entries > 1e8
    op = lx.LaplexOperator(np.linspace(0, 1, m), np.linspace(0, 1, n), 1.0)
    with pytest.raises(ValueError) as info:
        op.to_dense()
    assert "force" in str(info.value)
    with pytest.raises(ValueError):
        op.H.to_dense()
    small = lx.LaplexOperator(np.linspace(0, 1, 3), np.linspace(0, 1, 2), 1.0)
    assert small.to_dense(force=True).shape == (3, 2)


def test_backends():
    assert lx.LaplexOperator(X, Y, 1.0, backend="numba").shape == (M, N)
    with pytest.raises(ValueError):
        lx.LaplexOperator(X, Y, 1.0, backend="no-such-backend")
    with pytest.raises(ValueError):
        lx.LaplexOperator(X, Y, 1.0, backend="")
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if not has_gpu:
        # host data, or no CuPy/GPU at all: the cupy backend cannot serve it
        with pytest.raises((RuntimeError, ValueError)):
            lx.LaplexOperator(X, Y, 1.0, backend="cupy")
    else:  # NumPy data on a GPU machine: forcing the GPU backend is still an error (no silent copy)
        with pytest.raises((RuntimeError, ValueError, TypeError)):
            lx.LaplexOperator(X, Y, 1.0, backend="cupy") @ np.ones(N)


def test_with_anchors_validates():
    op = _op()
    with pytest.raises(ValueError, match="(?i)finite"):
        op.with_anchors(np.array([np.nan, 1.0]), Y)
    with pytest.raises(ValueError):
        op.with_anchors(X.reshape(2, 2), Y)
    with pytest.raises(TypeError):
        op.with_anchors(np.array(["a"]), Y)
