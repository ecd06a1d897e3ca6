"""Array-API namespaces (docs/reference.md, Namespaces and devices): array-api-strict in,
array-api-strict out; mixing namespaces or devices is a ``TypeError``, never a silent copy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx
from laplex_testing import (
    apply_ref,
    assert_close_to_ref,
    dense_ref,
    gradient_ref,
    operand,
    problems,
    rel_err,
)

xp = pytest.importorskip("array_api_strict")
compat = pytest.importorskip("array_api_compat")


def is_strict(a) -> bool:
    return (
        compat.is_array_api_obj(a)
        and compat.array_namespace(a) is xp
        and not isinstance(a, np.ndarray)
    )


def to_np(a) -> np.ndarray:
    if is_strict(a) and a.device != xp.Device("CPU_DEVICE"):
        a = a.to_device(xp.Device("CPU_DEVICE"))
    return np.asarray(a)


def S(a, device=None):
    """A NumPy array as an array-api-strict array."""
    a = np.asarray(a)
    return xp.asarray(a) if device is None else xp.asarray(a, device=device)


@given(data=st.data())
def test_strict_in_strict_out(data):
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    p = data.draw(problems(dtype=dtype, max_m=25, max_n=25))
    rng = p["rng"]
    kind = data.draw(st.sampled_from(["1d", "col", "mat"]))
    vdt = data.draw(
        st.sampled_from([dtype, np.complex64 if dtype == np.float32 else np.complex128])
    )
    x, y, rate, m, n = p["x"], p["y"], p["rate"], p["m"], p["n"]
    v = operand(rng, n, kind, vdt, k=2)
    u = operand(rng, m, kind, vdt, k=2)
    op = lx.LaplexOperator(S(x), S(y), rate)
    assert op.shape == (m, n)
    assert is_strict(op.x) and is_strict(op.y)
    np.testing.assert_array_equal(to_np(op.x), x)

    got = op @ S(v)
    assert is_strict(got), type(got)
    assert got.shape == (m,) + v.shape[1:]
    ref = apply_ref(x, y, rate, v)
    want_dtype = np.result_type(
        np.float32 if dtype == np.float32 else np.float64,
        np.complex64 if isinstance(rate, complex) else np.float32,
        vdt,
    )
    assert to_np(got).dtype == want_dtype
    assert_close_to_ref(to_np(got), ref, want_dtype, v, m, n)
    # the same numbers as with NumPy in and out
    assert rel_err(to_np(got), lx.LaplexOperator(x, y, rate) @ v) <= 1e-14

    got_h = op.H @ S(u)
    assert is_strict(got_h)
    assert_close_to_ref(
        to_np(got_h), dense_ref(x, y, rate).conj().T @ u.astype(np.complex128), want_dtype, u, n, m
    )
    if kind == "1d":
        assert is_strict(op.matvec(S(v))) and is_strict(op.rmatvec(S(u)))
    else:
        assert is_strict(op.matmat(S(v))) and is_strict(op.rmatmat(S(u)))
    assert is_strict(op.T @ S(u))


@pytest.mark.parametrize("rate", [1.1, 0.4 + 1.2j], ids=["real", "complex"])
def test_strict_gradient_and_dense(rng, rate):
    m, n = 13, 9
    x, y = rng.uniform(-2, 2, m), rng.uniform(-2, 2, n)
    v, g = rng.standard_normal(n), rng.standard_normal(m)
    op = lx.LaplexOperator(S(x), S(y), rate)
    grads = op.gradient(S(v), S(g))
    assert isinstance(grads, lx.Gradients)
    assert is_strict(grads.x) and is_strict(grads.y) and is_strict(grads.v)
    assert type(grads.rate) is (complex if isinstance(rate, complex) else float)
    ref, _ = gradient_ref(x, y, rate, v, g)
    for got, want in zip((grads.x, grads.y, grads.v), (ref[0], ref[1], ref[3])):
        np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-12)
    assert abs(grads.rate - ref[2]) <= 1e-10 * (1 + abs(ref[2]))
    dense = op.to_dense()
    assert is_strict(dense)
    np.testing.assert_allclose(to_np(dense), dense_ref(x, y, rate), rtol=1e-13, atol=0)
    assert is_strict(op.H.to_dense())


def test_strict_float32_and_integer_anchors(rng):
    x = rng.uniform(-1, 1, 11).astype(np.float32)
    y = rng.uniform(-1, 1, 7).astype(np.float32)
    op = lx.LaplexOperator(S(x), S(y), 2.0)
    assert op.dtype == xp.float32
    out = op @ S(rng.standard_normal(7).astype(np.float32))
    assert is_strict(out) and out.dtype == xp.float32
    opi = lx.LaplexOperator(S(np.arange(5)), S(np.arange(3) * 2), 1.0)
    assert opi.dtype == xp.float64
    out = opi @ S(np.ones(3))
    assert out.dtype == xp.float64
    np.testing.assert_allclose(
        to_np(out), dense_ref(np.arange(5), np.arange(3) * 2, 1.0).sum(1), rtol=1e-14
    )
    opc = lx.LaplexOperator(S(x), S(y), 1.0 + 1.0j)
    assert opc.dtype == xp.complex64


# ------------------------------------------------------------------ mixing is an error
def test_mixed_anchor_namespaces():
    x, y = np.linspace(0, 1, 4), np.linspace(0, 2, 3)
    with pytest.raises(TypeError):
        lx.LaplexOperator(S(x), y, 1.0)
    with pytest.raises(TypeError):
        lx.LaplexOperator(x, S(y), 1.0)


@pytest.mark.parametrize("strict_anchors", [True, False], ids=["strict-anchors", "numpy-anchors"])
def test_mixed_operand_namespace(strict_anchors):
    x, y = np.linspace(0, 1, 4), np.linspace(0, 2, 3)
    op = lx.LaplexOperator(S(x), S(y), 1.0) if strict_anchors else lx.LaplexOperator(x, y, 1.0)
    other = (lambda a: np.asarray(a)) if strict_anchors else S
    v, u = other(np.ones(3)), other(np.ones(4))
    V, U = other(np.ones((3, 2))), other(np.ones((4, 2)))
    for f, a in (
        (op.matvec, v),
        (op.__matmul__, v),
        (op.matmat, V),
        (op.rmatvec, u),
        (op.rmatmat, U),
        (op.H.__matmul__, u),
        (op.T.matvec, u),
    ):
        with pytest.raises(TypeError):
            f(a)
    with pytest.raises(TypeError):
        op.gradient(v, u)
    same = S if strict_anchors else np.asarray
    with pytest.raises(TypeError):  # v from the anchors' namespace, g from the other
        op.gradient(same(np.ones(3)), u)
    with pytest.raises(TypeError):
        op.gradient(v, same(np.ones(4)))


def test_strict_devices():
    """array-api-strict has several virtual devices: results land on the operand's device, and
    anchors and operands on different devices are an error."""
    dev = xp.Device("device1")
    x, y = np.linspace(0, 1, 5), np.linspace(0, 2, 4)
    op = lx.LaplexOperator(S(x, dev), S(y, dev), 0.9)
    out = op @ S(np.ones(4), dev)
    assert is_strict(out) and out.device == dev
    np.testing.assert_allclose(to_np(out), dense_ref(x, y, 0.9).sum(1), rtol=1e-14)
    assert op.x.device == dev
    with pytest.raises(TypeError):
        op @ S(np.ones(4))  # default device
    with pytest.raises(TypeError):
        lx.LaplexOperator(S(x, dev), S(y), 0.9)


def test_sequences_are_read_as_numpy():
    op = lx.LaplexOperator([0.0, 1.0, 2.5], (1.0, 3.0), 0.5)
    out = op @ np.array([1.0, -2.0])
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(
        out, dense_ref([0.0, 1.0, 2.5], [1.0, 3.0], 0.5) @ [1.0, -2.0], rtol=1e-14
    )
    np.testing.assert_allclose(op @ [1.0, -2.0], out, rtol=0, atol=0)


def test_half_precision_anchors_compute_in_float32(rng):
    """float16 anchors (docs/reference.md, Dtypes: the operator is float32 or float64) become
    float32, as integer anchors become the default float."""
    x = rng.uniform(0, 50, 40).astype(np.float16)
    y = rng.uniform(0, 50, 30).astype(np.float16)
    op = lx.LaplexOperator(x, y, 0.5)
    assert op.dtype == np.float32
    v = rng.standard_normal(30).astype(np.float32)
    want = lx.LaplexOperator(x.astype(np.float32), y.astype(np.float32), 0.5) @ v
    np.testing.assert_array_equal(op @ v, want)


@pytest.mark.parametrize("library", ["array_api_strict", "torch"])
def test_anchor_attributes_cannot_change_the_operator(rng, library):
    """``op.x`` / ``op.y`` outside NumPy are copies: writing to them leaves the operator as it was
    (a view of the read-only snapshot would be a writable alias in a namespace without read-only
    arrays)."""
    lib = pytest.importorskip(library)
    x, y = rng.uniform(0, 5, 6), rng.uniform(0, 5, 4)
    op = lx.LaplexOperator(lib.asarray(x), lib.asarray(y), 0.7)
    before = to_np(op.to_dense()) if library != "torch" else op.to_dense().numpy()
    for anchors in (op.x, op.y):
        anchors[...] = 100.0
    after = to_np(op.to_dense()) if library != "torch" else op.to_dense().numpy()
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(np.asarray(op.x), x)
