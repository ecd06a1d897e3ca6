"""The plan (docs/reference.md, The plan): anchors are snapshots, ``with_rate`` / ``with_anchors``
match fresh operators, ``H.H`` and ``T.T`` are the operator again, sorted and shuffled anchors
agree, float32 stays float32, and repeated calls are bitwise identical (docs/reference.md,
Accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx
from laplex_testing import apply_ref, assert_close_to_ref, operand, problems, rel_err


# ------------------------------------------------------------------ bitwise repeats
@given(data=st.data())
def test_repeated_products_are_bitwise_identical(data):
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    p = data.draw(problems(dtype=dtype))
    rng = p["rng"]
    kind = data.draw(st.sampled_from(["1d", "mat"]))
    v = operand(rng, p["n"], kind, data.draw(st.sampled_from([dtype, np.complex128])), k=3)
    u = operand(rng, p["m"], kind, dtype, k=3)
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    first = op @ v
    first_h = op.H @ u
    grads = op.gradient(v, op @ v)
    for _ in range(2):
        assert np.array_equal(op @ v, first)
        assert np.array_equal(op.H @ u, first_h)
        again = op.gradient(v, op @ v)
        for a, b in zip(grads, again):
            assert np.array_equal(a, b)
    # a fresh operator on the same data (same backend): the same bits
    fresh = lx.LaplexOperator(p["x"].copy(), p["y"].copy(), p["rate"])
    assert np.array_equal(fresh @ v, first)
    assert np.array_equal(fresh.rmatmat(u) if kind == "mat" else fresh.rmatvec(u), first_h)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rate", [0.02, 0.3 + 0.8j], ids=["real", "complex"])
def test_large_repeats_are_bitwise_identical(rng, dtype, rate):
    n = 300_000
    x = rng.uniform(0, n / abs(rate), n).astype(dtype)
    y = rng.uniform(0, n / abs(rate), n // 2).astype(dtype)
    v = operand(rng, n // 2, "1d", dtype)
    g = operand(rng, n, "1d", dtype)
    op = lx.LaplexOperator(x, y, rate)
    a, b = op @ v, op @ v
    assert np.array_equal(a, b)
    assert np.array_equal(op.rmatvec(g), op.rmatvec(g))
    ga, gb = op.gradient(v, g), op.gradient(v, g)
    for p, q in zip(ga, gb):
        assert np.array_equal(p, q)
    assert np.array_equal(lx.LaplexOperator(x, y, rate) @ v, a)


@pytest.mark.parametrize("rate", [0.4, 0.4 - 1.1j], ids=["real", "complex"])
def test_decays_of_sums_and_split_decays_with_ties(rng, rate):
    """A side whose rows tie with columns keeps two sets of right decays (``_numba_scan``'s
    notation): the one sums take, against the first column at or right of the row (1 for a tied
    row), and the split one that signed and moment reductions take, against the first column
    strictly right of it. Each matches the direct formula, the split set shares the other's
    arrays but ``er``, and a gradient gives the same bits whether or not a product made the set
    of sums first."""
    from laplexops.backends._base import Side

    m, n = 3000, 2000
    x, y = np.round(rng.uniform(0, 300, m), 1), np.round(rng.uniform(5, 295, n), 1)
    x[:2] = 0.0, 300.0  # rows left and right of every column (el, er 0 there)
    v, g = rng.standard_normal(n), rng.standard_normal(m)
    op = lx.LaplexOperator(x, y, rate).prepare()
    plan = op._build_plan()
    s = plan.side(Side.ROWS_X)
    assert s.ties and s.hi is not s.lo and np.any(s.lo < s.hi)
    decay = np.dtype(complex if isinstance(rate, complex) else float)
    d, el, er = plan.decays(Side.ROWS_X, rate, decay)
    d2, el2, er2 = plan.decays(Side.ROWS_X, rate, decay, split=True)
    assert d2 is d and el2 is el and er2 is not er
    rs, cs = np.sort(x), np.sort(y)
    lo, hi = s.lo.astype(np.int64), s.hi.astype(np.int64)

    def decay_to(c, rows):  # exp(-rate |cs[c] - rows|), 0 where c is past either end
        inside = (c >= 0) & (c < n)
        return np.where(inside, np.exp(-rate * np.abs(cs[np.clip(c, 0, n - 1)] - rows)), 0)

    assert np.all(er[lo < hi] == 1)
    np.testing.assert_allclose(er, decay_to(lo, rs), rtol=1e-13, atol=0)
    np.testing.assert_allclose(er2, decay_to(hi, rs), rtol=1e-13, atol=0)
    np.testing.assert_allclose(el, decay_to(lo - 1, rs), rtol=1e-13, atol=0)
    assert_close_to_ref(op @ v, apply_ref(x, y, rate, v), np.float64, v, m, n)
    after_product = op.gradient(v, g)
    fresh = lx.LaplexOperator(x, y, rate)
    for a, b in zip(after_product, fresh.gradient(v, g)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------ snapshots
@pytest.mark.parametrize("when", ["before-first-use", "after-first-use"])
@pytest.mark.parametrize("rate", [0.7, 0.7 - 1.4j], ids=["real", "complex"])
def test_anchors_are_snapshots(rng, when, rate):
    m, n = 50, 40
    x, y = rng.uniform(-5, 5, m), rng.uniform(-5, 5, n)
    x0, y0 = x.copy(), y.copy()
    v = rng.standard_normal(n)
    op = lx.LaplexOperator(x, y, rate)
    want = lx.LaplexOperator(x0, y0, rate) @ v
    if when == "after-first-use":
        assert np.array_equal(op @ v, want)
    x[:] = rng.uniform(-5, 5, m)  # the caller reuses its buffers
    y[::2] = 1e6
    x.sort()
    assert np.array_equal(op @ v, want)
    assert_close_to_ref(op @ v, apply_ref(x0, y0, rate, v), op.dtype, v, m, n)
    np.testing.assert_array_equal(op.x, x0)
    np.testing.assert_array_equal(op.y, y0)
    assert rel_err(op.H.H @ v, want) == 0


def test_same_array_for_both_sides_is_a_snapshot(rng):
    a = rng.uniform(0, 10, 30)
    a0 = a.copy()
    op = lx.LaplexOperator(a, a, 1.0)
    a *= 3.0
    v = rng.standard_normal(30)
    assert_close_to_ref(op @ v, apply_ref(a0, a0, 1.0, v), np.float64, v, 30, 30)


def test_returned_anchors_do_not_alias_the_plan(rng):
    x, y = rng.uniform(-1, 1, 8), rng.uniform(-1, 1, 6)
    op = lx.LaplexOperator(x, y, 1.0)
    v = rng.standard_normal(6)
    want = op @ v
    got_x = op.x
    try:
        got_x[:] = 100.0  # read-only views are fine; writable copies must not feed back
    except ValueError:
        pass
    assert np.array_equal(op @ v, want)


# ------------------------------------------------------------------ derived operators
@given(data=st.data())
def test_with_rate_and_with_anchors_match_fresh_operators(data):
    p = data.draw(problems())
    rng = p["rng"]
    x, y, m, n = p["x"], p["y"], p["m"], p["n"]
    v = operand(rng, n, data.draw(st.sampled_from(["1d", "mat"])), np.complex128)
    op = lx.LaplexOperator(x, y, p["rate"])
    op @ v  # build the plan
    new_rate = data.draw(
        st.one_of(
            st.floats(0.01, 30.0).map(lambda c: c / p["scale"]),
            st.tuples(st.floats(0.01, 30.0), st.floats(-5, 5)).map(
                lambda t: complex(t[0], t[0] * t[1]) / p["scale"]
            ),
        )
    )
    r = op.with_rate(new_rate)
    assert isinstance(r, lx.LaplexOperator)
    assert r.rate == new_rate and r.shape == op.shape
    assert type(r.rate) is type(new_rate)
    assert op.rate == p["rate"]  # the original is unchanged
    fresh = lx.LaplexOperator(x, y, new_rate)
    assert r.dtype == fresh.dtype
    assert rel_err(r @ v, fresh @ v) <= 1e-12
    assert_close_to_ref(r @ v, apply_ref(x, y, new_rate, v), r.dtype, v, m, n)
    u = operand(rng, m, "1d", np.complex128)
    assert rel_err(r.H @ u, fresh.H @ u) <= 1e-12
    assert rel_err(op.H.with_rate(new_rate) @ u, lx.LaplexOperator(y, x, new_rate) @ u) <= 1e-12

    x2 = rng.permutation(np.concatenate([x, rng.uniform(-1, 1, 3) * p["scale"]]))
    y2 = y[: max(1, n - 2)] * 1.5
    a = op.with_anchors(x2, y2)
    assert isinstance(a, lx.LaplexOperator)
    assert a.shape == (x2.size, y2.size) and a.rate == op.rate
    w = operand(rng, y2.size, "1d", np.float64)
    assert rel_err(a @ w, lx.LaplexOperator(x2, y2, p["rate"]) @ w) <= 1e-12
    assert_close_to_ref(a @ w, apply_ref(x2, y2, p["rate"], w), a.dtype, w, x2.size, y2.size)
    # and the original still answers for its own anchors
    assert_close_to_ref(op @ v, apply_ref(x, y, p["rate"], v), op.dtype, v, m, n)


@given(data=st.data())
def test_double_adjoint_and_double_transpose_are_the_operator(data):
    p = data.draw(problems())
    rng = p["rng"]
    v = operand(rng, p["n"], data.draw(st.sampled_from(["1d", "mat"])), np.complex128)
    op = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    want = op @ v
    for other in (op.H.H, op.T.T, op.adjoint().adjoint(), op.H.T.H.T):
        assert other.shape == op.shape and other.rate == op.rate
        assert np.array_equal(other @ v, want)
    # derived before or after the plan exists: the same results
    op2 = lx.LaplexOperator(p["x"], p["y"], p["rate"])
    hh = op2.H.H
    assert np.array_equal(hh @ v, want)


@given(data=st.data())
def test_sorted_and_shuffled_anchors_agree(data):
    p = data.draw(problems(layouts=("random", "ties", "dup", "grid", "clustered", "shared")))
    rng = p["rng"]
    x, y, rate = p["x"], p["y"], p["rate"]
    px, py = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    v = operand(rng, p["n"], "1d", np.float64)
    base = lx.LaplexOperator(x, y, rate) @ v
    sorted_op = lx.LaplexOperator(x[px], y[py], rate)
    got = sorted_op @ v[py]
    assert rel_err(got, base[px]) <= 1e-12
    # descending order, and a sorted side next to a shuffled one
    rx, ry = px[::-1], py[::-1]
    assert rel_err(lx.LaplexOperator(x[rx], y[ry], rate) @ v[ry], base[rx]) <= 1e-12
    assert rel_err(lx.LaplexOperator(x[px], y, rate) @ v, base[px]) <= 1e-12
    # the adjoint as well
    u = operand(rng, p["m"], "1d", np.float64)
    base_h = lx.LaplexOperator(x, y, rate).rmatvec(u)
    assert rel_err(sorted_op.rmatvec(u[px]), base_h[py]) <= 1e-12


# ------------------------------------------------------------------ float32 end to end
@pytest.mark.parametrize("rate", [1.5, 1.5 + 2.0j], ids=["real", "complex"])
def test_float32_end_to_end(rng, rate):
    m, n = 70, 45
    x = rng.uniform(-20, 20, m).astype(np.float32)
    y = rng.uniform(-20, 20, n).astype(np.float32)
    op = lx.LaplexOperator(x, y, rate)
    real = isinstance(rate, float)
    assert op.dtype == (np.float32 if real else np.complex64)
    assert op.x.dtype == np.float32 and op.y.dtype == np.float32
    v = rng.standard_normal(n).astype(np.float32)
    V = rng.standard_normal((n, 3)).astype(np.float32)
    u = rng.standard_normal(m).astype(np.float32)
    U = rng.standard_normal((m, 2)).astype(np.float32)
    for out in (
        op @ v,
        op.matvec(v),
        op.matmat(V),
        op.rmatvec(u),
        op.rmatmat(U),
        op.H @ u,
        op.T @ u,
        op @ V,
    ):
        assert out.dtype == op.dtype
    assert op.to_dense().dtype == op.dtype
    grads = op.gradient(v, (op @ v).real.astype(np.float32))
    assert grads.x.dtype == np.float32 and grads.y.dtype == np.float32
    assert grads.v.dtype == np.float32
    assert_close_to_ref(op @ v, apply_ref(x, y, rate, v), op.dtype, v, m, n)
    # a float64 operand promotes; an integer operand does not
    assert (op @ v.astype(np.float64)).dtype == np.result_type(op.dtype, np.float64)
    assert (op @ np.arange(1, n + 1)).dtype == op.dtype
    assert (op @ np.arange(1, n + 1, dtype=np.int32)).dtype == op.dtype


def test_integer_anchors_become_float64(rng):
    x = rng.integers(-50, 50, 20)
    y = rng.integers(-50, 50, 15).astype(np.int32)
    op = lx.LaplexOperator(x, y, 0.3)
    assert op.dtype == np.float64
    assert lx.LaplexOperator(x, y, 0.3 + 0.1j).dtype == np.complex128
    v = rng.standard_normal(15)
    out = op @ v
    assert out.dtype == np.float64
    assert_close_to_ref(out, apply_ref(x, y, 0.3, v), np.float64, v, 20, 15)
    # mixing a float32 side with an integer side: float32
    assert lx.LaplexOperator(x, y.astype(np.float32), 0.3).dtype in (np.float32, np.float64)


# ------------------------------------------------------------------ prepare
@pytest.mark.parametrize("rate", [0.7, 0.7 - 1.5j], ids=["real", "complex"])
@pytest.mark.parametrize("how", ["op", "T", "H", "square with ties"])
def test_prepare_lays_out_the_first_product(rng, monkeypatch, rate, how):
    """After ``prepare()`` the first matvec on the CPU merges and exponentiates nothing and finds
    its scratch laid out (the same arrays before and after); its result has the bits of the same
    product on an operator never prepared."""
    from laplexops.backends import _numba

    m, n = 3000, 2000
    x, y = rng.uniform(0, 50, m), rng.uniform(0, 50, n)
    if how == "square with ties":
        y = x = np.round(x, 1)
    derive = {"T": lambda o: o.T, "H": lambda o: o.H}.get(how, lambda o: o)
    op = derive(lx.LaplexOperator(x, y, rate)).prepare()
    twin = derive(lx.LaplexOperator(x, y, rate))
    v = operand(rng, op.shape[1], "1d", np.float64)
    sets = dict(op._plan.scratch._sets)
    calls = []
    monkeypatch.setattr(_numba, "merge_counts", lambda *a: calls.append("merge"))
    monkeypatch.setattr(_numba, "decays", lambda *a: calls.append("decays"))
    got = op @ v
    assert calls == []
    assert {k: [id(a) for a in arrays] for k, arrays in op._plan.scratch._sets.items()} == {
        k: [id(a) for a in arrays] for k, arrays in sets.items()
    }
    monkeypatch.undo()
    assert np.array_equal(got, twin @ v)
