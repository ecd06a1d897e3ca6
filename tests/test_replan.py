"""``with_anchors``: the next step's plan is repaired from the previous one when anchors moved
little."""

import numpy as np
import pytest

import laplexops as lx
from laplexops.backends import _numba_sort


def _no_full_sort(monkeypatch):
    def refuse(*args):
        raise AssertionError("a full sort ran although the previous plan should have served")

    monkeypatch.setattr(_numba_sort, "argsort", refuse)
    monkeypatch.setattr(_numba_sort, "argsort_two", refuse)


def _step(rng, a, fraction):
    """Move every anchor by up to ``fraction`` of the typical spacing."""
    spacing = (a.max() - a.min()) / a.shape[0]
    return a + rng.uniform(-fraction, fraction, a.shape[0]) * spacing


@pytest.mark.parametrize("rate", [0.8, 0.8 + 1.9j], ids=["real", "complex"])
@pytest.mark.parametrize("view", ["op", "H", "T"])
def test_small_step_repairs_the_previous_plan(monkeypatch, rng, rate, view):
    m, n = 30_000, 20_000
    x, y = rng.uniform(0, m, m), rng.uniform(0, m, n)
    base = lx.LaplexOperator(x, y, rate)
    op = {"op": base, "H": base.H, "T": base.T}[view]
    rows, cols = op.shape
    v = rng.standard_normal(cols)
    g = rng.standard_normal(rows)
    op @ v  # builds the plan
    new_rows, new_cols = _step(rng, np.asarray(op.x), 0.01), _step(rng, np.asarray(op.y), 0.01)
    fresh = lx.LaplexOperator(new_rows, new_cols, op.rate)
    want, want_h, want_g = fresh @ v, fresh.rmatvec(g), fresh.gradient(v, g)
    _no_full_sort(monkeypatch)
    nxt = op.with_anchors(new_rows, new_cols)
    assert nxt.shape == op.shape and nxt.rate == op.rate
    np.testing.assert_allclose(nxt @ v, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(
        nxt.rmatvec(g), want_h, rtol=1e-12, atol=1e-12 * np.abs(want_h).max()
    )
    for ours, theirs in zip(nxt.gradient(v, g), want_g):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10 * np.max(np.abs(theirs)))
    np.testing.assert_array_equal(nxt.x, new_rows)
    np.testing.assert_array_equal(nxt.y, new_cols)


def test_shared_and_sorted_anchors_repair(monkeypatch, rng):
    n = 25_000
    a = np.sort(rng.uniform(0, n, n))
    op = lx.LaplexOperator(a, a, 1.1)
    v = rng.standard_normal(n)
    op @ v  # a sorted plan: its order is the identity
    b = _step(rng, a, 0.5)
    assert not np.all(np.diff(b) >= 0)  # the step did unsort some neighbours
    want = lx.LaplexOperator(b, b, 1.1) @ v
    _no_full_sort(monkeypatch)
    got = op.with_anchors(b, b) @ v
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("change", ["shuffled", "resized"])
def test_large_changes_fall_back_to_a_sort(rng, change):
    m, n = 5_000, 4_000
    x, y = rng.uniform(0, 100, m), rng.uniform(0, 100, n)
    op = lx.LaplexOperator(x, y, 0.3)
    op @ rng.standard_normal(n)
    if change == "shuffled":
        x2, y2 = rng.uniform(0, 100, m), rng.uniform(0, 100, n)
    else:
        x2, y2 = rng.uniform(0, 100, m + 7), rng.uniform(0, 100, n - 3)
    v = rng.standard_normal(y2.shape[0])
    nxt = op.with_anchors(x2, y2)
    dense = np.exp(-0.3 * np.abs(x2[:, None] - y2[None, :]))
    np.testing.assert_allclose(nxt @ v, dense @ v, rtol=1e-10, atol=1e-10)


def test_repair_gives_up_past_its_budget(rng):
    values = rng.standard_normal(1000)
    perm = np.arange(1000)
    assert not _numba_sort.repair(values.copy(), perm.copy(), 10)
    out, p = values.copy(), perm.copy()
    assert _numba_sort.repair(out, p, 10**7)
    np.testing.assert_array_equal(out, np.sort(values))
    np.testing.assert_array_equal(values[p], out)


def test_repair_orders_ties_by_original_index(rng):
    """float32 anchors in runs of ties, moved by one ulp: the repaired order is a fresh plan's
    (NumPy's stable argsort), not the previous order of the ties, and so are the products."""
    ulp = np.spacing(np.float32(600))
    x = np.float32(600) + rng.integers(0, 300, 3000).astype(np.float32) * ulp
    step = rng.integers(-1, 2, x.shape[0]).astype(np.float32)
    x2 = np.nextafter(x, x + step * np.float32(2000))
    old = np.argsort(x, kind="stable")
    values, perm = x2[old], old.copy()
    assert _numba_sort.repair(values, perm, 10**7)
    np.testing.assert_array_equal(perm, np.argsort(x2, kind="stable"))
    y = np.float32(600) + rng.integers(0, 300, 2000).astype(np.float32) * ulp
    v = rng.standard_normal(2000).astype(np.float32)
    op = lx.LaplexOperator(x, y, 2000.0)
    op @ v
    y2 = np.nextafter(y, y - 1)
    np.testing.assert_array_equal(
        op.with_anchors(x2, y2) @ v, lx.LaplexOperator(x2, y2, 2000.0) @ v
    )
