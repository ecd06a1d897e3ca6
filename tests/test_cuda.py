"""The CUDA backend against the float64 dense reference and the Numba backend.

Every test runs on two targets:

* ``host``: the CuPy backend's host code with NumPy arrays and the kernels of ``laplex_scan.cu``
  compiled for the CPU (``tests/cuda_host``), in a small launch geometry (many tiles, carry chunks
  and sort windows for short inputs). Needs g++; this is what checks the kernels without a GPU.
* ``gpu``: CuPy on a CUDA device, the production geometry. Skips cleanly without one.

Agreement with the Numba backend: 1e-12 (float64) / 1e-5 (float32) relative (docs/reference.md,
Accuracy).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laplexops as lx
from cuda_host.targets import require_gpu, require_host
from laplex_testing import (
    FLOOR,
    apply_ref,
    assert_close_to_ref,
    gradient_ref,
    operand,
    operand_dtypes,
    problems,
    rel_err,
    rows_ref,
    shape_kinds,
)
from laplexops.backends import _cupy, _cupy_sort

AGREE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _agreement(x, y, rate, dtype) -> float:
    """AGREE, or more when the kernel is ill-conditioned in this precision: exp(-s d) has condition
    number |s| |d| in d, so two correct float32 implementations may differ by about
    |s| max|x_i - y_j| eps (a phase of hundreds of radians is only known to ~1e-5 in float32)."""
    spread = max(float(np.ptp(np.concatenate([x, y]))), 0.0) if len(x) and len(y) else 0.0
    kappa = abs(complex(rate)) * spread
    return max(AGREE[np.dtype(dtype)], 4 * kappa * float(np.finfo(dtype).eps))


def _term_size(x, y, rate, a, forward: bool) -> float:
    """``|| |W| |a| ||`` (``|W|^T`` when not forward): the size of the terms a product sums. Two
    correct implementations that add in different orders differ by about eps times this."""
    d = np.abs(np.subtract.outer(np.asarray(x, np.float64), np.asarray(y, np.float64)))
    w = np.exp(-complex(rate).real * d)
    a = np.abs(np.asarray(a, np.complex128))
    a = a[:, None] if a.ndim == 1 else a
    return float(np.linalg.norm((w if forward else w.T) @ a))


# ------------------------------------------------------------------------------------ targets
class Host:
    """The CUDA backend on the CPU."""

    name = "host"

    def __init__(self, geometry):
        from cuda_host.kernels import HostKernels

        self.xp = np
        self.kernels = HostKernels(geometry)
        # the host build serves host data (device "cpu"): snapshots, plans and products of its
        # operators all run on the host kernels
        self.backend = _cupy.CupyBackend(xp=self.xp, kernels=self.kernels)

    def operator(self, x, y, rate):
        return lx.LaplexOperator(x, y, rate, backend=self.backend)

    def to(self, a):
        return np.asarray(a)

    def back(self, a):
        return np.asarray(a)


class Gpu:
    name = "gpu"

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.backend = None

    def operator(self, x, y, rate):
        x = self.cupy.asarray(x)
        return lx.LaplexOperator(x, x if y is None else self.cupy.asarray(y), rate)

    def to(self, a):
        return self.cupy.asarray(a)

    def back(self, a):
        return self.cupy.asnumpy(a)


def _full_sorts(target) -> int:
    """How many radix scatter passes the host target has launched (plans sorted from scratch;
    every plan counts the first digit, which also tells whether the anchors are in order)."""
    return sum("laplex_radix_scatter" in name for name in target.kernels.launches)


_TARGETS: dict = {}


def _target(name):
    if name not in _TARGETS:
        if name == "gpu":
            require_gpu()
            _TARGETS[name] = Gpu()
        else:
            require_host()
            from cuda_host.kernels import SMALL

            # host-plain: the small geometry with the kernel variants off (host turns them on):
            # phase 1 merges rows and columns, shared memory unpadded
            geometry = {
                "host": SMALL,
                "host-plain": dict(SMALL, LAPLEX_PAD=0, LAPLEX_LEAN_PHASE1=0),
            }.get(name)
            _TARGETS[name] = Host(geometry)
    return _TARGETS[name]


@pytest.fixture(params=["host", "gpu"], scope="module")
def target(request):
    return _target(request.param)


@pytest.fixture(params=["host", "host-plain", "gpu"], scope="module")
def any_target(request):
    """``target``, plus the small host geometry with the kernel variants off."""
    return _target(request.param)


def _operator(target, x, y, rate):
    """The target's operator; ``y is x`` is kept (one shared sort)."""
    if isinstance(target, Gpu):
        return target.operator(x, None if y is x else y, rate)
    return target.operator(x, y, rate)


DTYPES = [np.float64, np.float32]


# ------------------------------------------------------------------------------------ products
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_products_match_reference_and_numba(any_target, dtype, data):
    target = any_target
    p = data.draw(problems(dtype=dtype, min_size=0, max_m=70, max_n=70))
    x, y, rate, m, n, rng = p["x"], p["y"], p["rate"], p["m"], p["n"], p["rng"]
    vdtype = data.draw(operand_dtypes(dtype))
    shape_kind = data.draw(shape_kinds)
    k = data.draw(st.integers(1, 3))
    v = operand(rng, n, shape_kind, vdtype, k)
    u = operand(rng, m, shape_kind, vdtype, k)
    cpu = lx.LaplexOperator(x, y, rate)
    op = _operator(target, x, y, rate)
    tol = _agreement(x, y, rate, dtype)
    for label, got, want, ref, lead in (
        ("W v", op @ target.to(v), cpu @ v, apply_ref(x, y, rate, v), m),
        (
            "W^H u",
            op.H @ target.to(u),
            cpu.H @ u,
            apply_ref(y, x, complex(rate).conjugate() if isinstance(rate, complex) else rate, u),
            n,
        ),
        ("W^T u", op.T @ target.to(u), cpu.T @ u, apply_ref(y, x, rate, u), n),
    ):
        got = target.back(got)
        assert got.shape == want.shape and got.dtype == want.dtype, label
        assert_close_to_ref(got, ref, got.dtype, v if lead == m else u, m, n, label)
        # relative to the size of the terms summed (cancellation in W v is not an error)
        err = rel_err(got, want, _term_size(x, y, rate, v if lead == m else u, lead == m))
        assert err <= tol, f"{label}: differs from the Numba backend by {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_gradients_match_numba(any_target, dtype, data):
    target = any_target
    p = data.draw(problems(dtype=dtype, max_m=60, max_n=60))
    x, y, rate, m, n, rng = p["x"], p["y"], p["rate"], p["m"], p["n"], p["rng"]
    vdtype = data.draw(operand_dtypes(dtype))
    k = data.draw(st.integers(1, 3))
    v = operand(rng, n, "mat", vdtype, k)
    g = operand(
        rng,
        m,
        "mat",
        np.result_type(vdtype, np.complex64 if isinstance(rate, complex) else vdtype),
        k,
    )
    want = lx.LaplexOperator(x, y, rate).gradient(v, g)
    got = _operator(target, x, y, rate).gradient(target.to(v), target.to(g))
    # relative to the sum of the magnitudes of the terms each entry adds up (gradient_ref)
    _, scales = gradient_ref(x, y, rate, v, g)
    tol = _agreement(x, y, rate, dtype)
    # terms below the floor are lost to underflow in float32 (weights exp(-|s| d) under 1e-38)
    floor = (
        FLOOR[np.dtype(dtype)]
        * float(np.linalg.norm(v) * np.linalg.norm(g))
        * (1 + abs(complex(rate)))
        * (1 + float(np.ptp(np.concatenate([x, y]))))
    )
    for name, scale in zip(("x", "y", "rate", "v"), scales):
        a, b = getattr(got, name), getattr(want, name)
        if name == "rate":
            assert type(a) is type(b)
        else:
            a = target.back(a)
            assert a.dtype == b.dtype and a.shape == b.shape, name
        diff = np.abs(np.asarray(a) - np.asarray(b))
        assert np.all(diff <= tol * (np.asarray(scale) + floor)), (
            f"{name}: differs from the Numba backend by {np.max(diff / (scale + 1e-300)):.2e}"
        )


@pytest.mark.parametrize("rate", [1.0, 0.5 + 3j])
def test_spread_1e8_and_ties(target, rng, rate):
    """Anchors over 1e8 / |s| in clusters, with exact ties across and within the sides."""
    m = n = 3000
    centers = rng.uniform(-5e7, 5e7, 6)
    x = rng.choice(centers, m) + rng.uniform(-20, 20, m)
    y = rng.choice(centers, n) + rng.uniform(-20, 20, n)
    y[:300] = x[rng.integers(0, m, 300)]  # ties between the sides
    x[-200:] = x[:200]  # repeats within x
    v = rng.standard_normal(n)
    op = _operator(target, x, y, rate)
    got = target.back(op @ target.to(v))
    rows = rng.choice(m, 200, replace=False)
    assert rel_err(got[rows], rows_ref(x, y, rate, v, rows)) <= 1e-10
    want = lx.LaplexOperator(x, y, rate) @ v
    assert rel_err(got, want) <= 1e-12


def test_square_and_sorted_paths(any_target, rng):
    """x = y (the square mode), sorted anchors (no permutations), and a shared array with
    repeats (merged as two sides): all three against the Numba backend."""
    n = 2500
    a = rng.uniform(0, n, n)
    s = np.sort(a)
    rep = a.copy()
    rep[::7] = rep[0]
    v = rng.standard_normal((n, 2))
    for label, x, y in (
        ("square", a, a),
        ("sorted", s, np.sort(rng.uniform(0, n, n))),
        ("sorted square", s, s),
        ("repeats", rep, rep),
    ):
        op = _operator(any_target, x, y, 0.7)
        want = lx.LaplexOperator(x, y, 0.7)
        assert rel_err(any_target.back(op @ any_target.to(v)), want @ v) <= 1e-12, label
        g = want.gradient(v, v)
        got = op.gradient(any_target.to(v), any_target.to(v))
        assert rel_err(any_target.back(got.x), g.x) <= 1e-11, label


def test_columns_beyond_one_launch(target, rng):
    """More right-hand sides than one launch's grid.y holds run in chunks (65535 on a GPU; 2 here),
    sharing the tile maps and the staged column values between chunks."""
    if isinstance(target, Gpu):
        pytest.skip("the chunk size is a device limit; the host target shrinks it")
    backend = _cupy.CupyBackend(xp=np, kernels=target.kernels, max_grid_y=2)
    x, y = rng.uniform(0, 50, 300), rng.uniform(0, 50, 200)
    V = rng.standard_normal((200, 5)) + 1j * rng.standard_normal((200, 5))
    op = lx.LaplexOperator(x, y, 0.7, backend=backend)
    assert rel_err(target.back(op @ target.to(V)), lx.LaplexOperator(x, y, 0.7) @ V) <= 1e-12
    G = rng.standard_normal((300, 5))
    got, want = op.gradient(target.to(V), G), lx.LaplexOperator(x, y, 0.7).gradient(V, G)
    assert rel_err(target.back(got.x), want.x) <= 1e-11
    assert abs(got.rate - want.rate) <= 1e-11 * abs(want.rate)


@pytest.mark.parametrize("rate", [0.05, 0.02 + 0.3j])
def test_carries_over_many_spans(target, rng, rate):
    """Enough tiles that phase 2 takes its three-launch path (span totals, their scan, the scan:
    on the host target from 33 tiles on), for two columns, products and gradients (moments)."""
    m, n = 2600, 2100
    x, y = rng.uniform(0, 300, m), rng.uniform(0, 300, n)
    V = rng.standard_normal((n, 2)) + 1j * rng.standard_normal((n, 2))
    G = rng.standard_normal((m, 2))
    op, cpu = _operator(target, x, y, rate), lx.LaplexOperator(x, y, rate)
    assert rel_err(target.back(op @ target.to(V)), cpu @ V) <= 1e-12
    assert rel_err(target.back(op.H @ target.to(G)), cpu.H @ G) <= 1e-12
    got, want = op.gradient(target.to(V), target.to(G)), cpu.gradient(V, G)
    for name in ("x", "y", "v"):
        assert rel_err(target.back(getattr(got, name)), getattr(want, name)) <= 1e-10, name
    assert abs(got.rate - want.rate) <= 1e-10 * abs(want.rate)


def test_empty_sides(target, rng):
    for m, n in ((0, 5), (5, 0), (0, 0)):
        x, y = rng.standard_normal(m), rng.standard_normal(n)
        op = _operator(target, x, y, 1.0)
        out = target.back(op @ target.to(rng.standard_normal(n)))
        assert out.shape == (m,) and not np.any(out)


def test_repeated_calls_are_bitwise_identical(target, rng):
    x, y = rng.uniform(0, 1e3, 4000), rng.uniform(0, 1e3, 3000)
    op = _operator(target, x, y, 0.3 + 1j)
    v = target.to(rng.standard_normal((3000, 2)))
    first = target.back(op @ v)
    assert np.array_equal(first, target.back(op @ v))
    assert np.array_equal(first, target.back(_operator(target, x, y, 0.3 + 1j) @ v))


def test_threads_first_rows_are_kept_from_the_first_product(rng):
    """The plan keeps each scan thread's first row from its first product (``thread_rows``) and
    marks the end of that product with an event on its stream; later products read the rows
    instead of searching, after making their stream wait for the event while it has not
    completed. Same results every way."""
    import types

    target = _target("host")
    x, y = rng.uniform(0, 50, 300), rng.uniform(0, 50, 200)
    v = rng.standard_normal(200)
    log = []  # rows_known of each scan launch, events recorded, waits

    class Event:
        done = False

        def __init__(self, disable_timing=False):
            assert disable_timing

        def record(self, stream):
            log.append(("record", stream.name))

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_event(self, event):
            assert isinstance(event, Event)
            log.append(("wait", self.name))

    class Spy:
        """The host kernels, logging ``rows_known`` (argument 7) of every scan launch."""

        geometry = target.kernels.geometry

        def get(self, name):
            kernel = target.kernels.get(name)
            if "laplex_tiles" not in name:
                return kernel

            def launch(grid, block, args):
                log.append(("known", int(args[7])))
                return kernel(grid, block, args)

            return launch

    current = [Stream("a")]
    streams = types.SimpleNamespace(Event=Event, get_current_stream=lambda: current[0])
    backend = _cupy.CupyBackend(xp=np, kernels=Spy(), streams=streams)
    op = lx.LaplexOperator(x, y, 0.8, backend=backend)
    first = op @ v
    # phases 1 and 3 of the first product search, then its stream records the event
    assert log == [("known", 0), ("known", 0), ("record", "a")]
    current[0] = Stream("b")
    del log[:]
    assert np.array_equal(op @ v, first)
    assert log == [("wait", "b"), ("known", 1), ("known", 1)]
    Event.done = True  # the first product has finished: no more waits
    del log[:]
    assert np.array_equal(op @ v, first) and log == [("known", 1), ("known", 1)]
    del log[:]
    Event.done = False  # the mark was dropped once done: not waited on again
    assert np.array_equal(op @ v, first) and log == [("known", 1), ("known", 1)]


def test_products_on_two_streams(rng):
    """On a device: a plan's first product on one stream, the next on another, which waits for
    the first's event before it reads the threads' first rows; both equal the Numba backend's."""
    target = _target("gpu")
    cupy = target.cupy
    x, y = rng.uniform(0, 500, 300_000), rng.uniform(0, 500, 200_000)
    v = rng.standard_normal(200_000)
    want = lx.LaplexOperator(x, y, 0.8) @ v
    op = target.operator(x, y, 0.8)
    vd = target.to(v)
    first_stream, second_stream = (
        cupy.cuda.Stream(non_blocking=True),
        cupy.cuda.Stream(non_blocking=True),
    )
    with first_stream:
        first = op @ vd
    with second_stream:
        second = op @ vd
    second_stream.synchronize()
    first_stream.synchronize()
    assert rel_err(target.back(first), want) <= 1e-12
    assert np.array_equal(target.back(second), target.back(first))


# ------------------------------------------------------------------------------------ plans
def _backend(target):
    return target.backend if target.backend is not None else _cupy.CupyBackend()


@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@given(data=st.data())
def test_radix_sort_is_numpys_stable_argsort(target, dtype, index, data):
    """The plan's sort of fresh anchors: keys and permutation exactly NumPy's stable argsort
    (ties in input order, -0.0 equal to +0.0), across tiles, with passes skipped when a digit is
    the same for every key."""
    n = data.draw(st.integers(0, 300), label="n")
    kind = data.draw(st.sampled_from(["normal", "ties", "spread", "narrow", "zeros"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a = {
        "normal": lambda: rng.standard_normal(n),
        "ties": lambda: rng.integers(-3, 4, n) * 0.25,
        "spread": lambda: rng.uniform(-1, 1, n) * 10.0 ** rng.integers(-8, 9, n),
        "narrow": lambda: 1 + rng.random(n) * 2.0**-20,
        "zeros": lambda: rng.choice([-0.0, 0.0, 1.0, -1.0], n),
    }[kind]().astype(dtype)
    keys, perm = _cupy_sort.radix_sort(_backend(target), target.to(a), np.dtype(index))
    want = np.argsort(a, kind="stable")
    if perm is None:  # every digit the same for every key (or fewer than two): in order
        assert np.all(a == a[:1])
    else:
        assert perm.dtype == index
        np.testing.assert_array_equal(target.back(perm), want)
    np.testing.assert_array_equal(target.back(keys), a[want])


def test_radix_sort_skips_constant_digits(rng):
    """float32 values in [1, 1 + 2^-20) differ in their lowest byte only: one scatter pass."""
    target = _target("host")
    a = (1 + rng.random(500) * 2.0**-20).astype(np.float32)
    before = len(target.kernels.launches)
    keys, perm = _cupy_sort.radix_sort(target.backend, a, np.dtype(np.int32))
    launched = target.kernels.launches[before:]
    assert sum("radix_counts" in name for name in launched) == 4
    assert sum("radix_scatter" in name for name in launched) == 1
    np.testing.assert_array_equal(perm, np.argsort(a, kind="stable"))


@pytest.mark.parametrize("fraction", [0.01, 0.3])
def test_plan_repair_from_previous_order(target, rng, fraction):
    """Anchors moved by a fraction of their spacing: the plan is repaired from the previous
    order by window sorts (no radix sort), and products equal those of a fresh plan."""
    if isinstance(target, Gpu):
        pytest.skip("the sorts launched are observable on the host target")
    backend = target.backend
    m, n = 3000, 2000
    x, y = rng.uniform(0, m, m), rng.uniform(0, m, n)
    old = backend.plan(x, y)
    x2 = x + rng.uniform(-fraction, fraction, m)
    y2 = y + rng.uniform(-fraction, fraction, n)
    before = _full_sorts(target)
    new = backend.plan(x2, y2, hint=old)
    assert _full_sorts(target) == before, "a full sort ran although the old order was close"
    fresh = backend.plan(x2, y2)
    for side, b in ((0, rng.standard_normal((n, 1))), (1, rng.standard_normal((m, 1)))):
        a = backend.apply(new, side, 0.9, b)[0]
        assert np.array_equal(a, backend.apply(fresh, side, 0.9, b)[0])


def test_plan_repair_of_float32_ties_moved_by_one_ulp(target, rng):
    """float32 anchors on neighbouring floats (runs of ties), each moved one unit in the last
    place down, up or not: the moves cross into the next runs; the repaired plan is right."""
    if isinstance(target, Gpu):
        pytest.skip("the sorts launched are observable on the host target")
    backend = target.backend
    m, n = 3000, 2000
    ulp = np.spacing(np.float32(600))  # anchors on 1000 neighbouring floats: runs of ties
    x = np.float32(600) + rng.integers(0, 1000, m).astype(np.float32) * ulp
    y = np.float32(600) + rng.integers(0, 1000, n).astype(np.float32) * ulp
    old = backend.plan(x, y)

    def moved(a):
        step = rng.integers(-1, 2, a.shape[0])
        return np.nextafter(a, a + step.astype(np.float32) * np.float32(2000))

    x2, y2 = moved(x), moved(y)
    before = _full_sorts(target)
    new = backend.plan(x2, y2, hint=old)
    assert _full_sorts(target) == before, "a full sort ran although the old order was close"
    # ties in a fresh plan's order (by original index), also across the seams of the windows
    for (_, perm), a in zip(new.sorted, (x2, y2)):
        np.testing.assert_array_equal(target.back(perm), np.argsort(a, kind="stable"))
    for side, b in ((0, rng.standard_normal((n, 1))), (1, rng.standard_normal((m, 1)))):
        b = b.astype(np.float32)
        # a rate that decays over the 0.06 the anchors span (else W is nearly all ones and
        # float32 W b loses digits to cancellation, whatever the plan)
        got = backend.apply(new, side, 2000.0, b)[0]
        want = apply_ref(*((x2, y2) if side == 0 else (y2, x2)), 2000.0, b)
        assert_close_to_ref(got, want, np.float32, b, m, n, f"side {side}")


def test_plan_repair_from_sorted_anchors(target, rng):
    """Anchors that were sorted (identity order, no permutation) and then moved a little."""
    if isinstance(target, Gpu):
        pytest.skip("the sorts launched are observable on the host target")
    backend = target.backend
    x = np.sort(rng.uniform(0, 1000, 1000))
    old = backend.plan(x, x)
    x2 = x + rng.uniform(-0.05, 0.05, 1000)
    assert np.any(np.diff(x2) < 0)
    before = _full_sorts(target)
    new = backend.plan(x2, x2, hint=old)
    assert _full_sorts(target) == before
    v = rng.standard_normal((1000, 1))
    want = lx.LaplexOperator(x2, x2, 1.0) @ v
    assert rel_err(backend.apply(new, 0, 1.0, v)[0], want) <= 1e-12


def test_plan_repair_gives_up_on_a_shuffle(target, rng):
    if isinstance(target, Gpu):
        pytest.skip("the sorts launched are observable on the host target")
    backend = target.backend
    x = rng.uniform(0, 1, 500)
    old = backend.plan(x, x)
    x2 = rng.permutation(x)
    before = _full_sorts(target)
    new = backend.plan(x2, x2, hint=old)
    assert _full_sorts(target) > before  # fell back to the sort
    v = rng.standard_normal((500, 1))
    want = lx.LaplexOperator(x2, x2, 1.0) @ v
    assert rel_err(backend.apply(new, 0, 1.0, v)[0], want) <= 1e-12


@pytest.mark.parametrize("blocks", [8192, 2], ids=["one-round", "grid-stride"])
def test_snapshot_copies_counts_nonfinite_and_finds_the_order(rng, blocks):
    """``CupyBackend.snapshot`` (``laplex_snapshot``): the anchors converted and copied, their
    non-finite values counted and whether they are in ascending order, in one pass (the descent
    anywhere: also where one thread's items end and the next one's start); other types through
    the array module, order not checked."""
    backend = _cupy.CupyBackend(xp=np, kernels=_target("host").kernels, snapshot_blocks=blocks)
    for source, real in (("float32", "float32"), ("float32", "float64"), ("float64", "float64")):
        for n, bad in ((0, 0), (1, 0), (5000, 0), (5000, 7), (3, 3)):
            a = rng.uniform(-1e8, 1e8, n).astype(source)
            where = rng.choice(n, bad, replace=False)
            a[where] = rng.choice([np.nan, np.inf, -np.inf], bad)
            copy, count, ordered = backend.snapshot(a, np.dtype(real))
            assert count == bad and copy.dtype == real and copy is not a
            np.testing.assert_array_equal(copy, a.astype(real))
            if not bad:
                assert ordered == (n < 2)
        a = np.sort(rng.integers(-50, 50, 5000)).astype(source)  # runs of ties: in order
        a[a == 0] = rng.choice(np.array([0.0, -0.0], dtype=source), int(np.sum(a == 0)))
        assert backend.snapshot(a, np.dtype(real))[2]
        for p in (1, 2, 4999, *rng.integers(1, 5000, 6)):
            b = a.copy()
            b[p - 1] = b[p] + 1  # one descent: at p
            copy, count, ordered = backend.snapshot(b, np.dtype(real))
            assert not ordered and count == 0, p
    ints = rng.integers(-9, 9, 100)
    copy, count, ordered = backend.snapshot(ints, np.dtype(np.float64))
    assert count == 0 and copy.dtype == np.float64 and ordered is None
    np.testing.assert_array_equal(copy, ints)


def test_plan_takes_the_order_its_snapshots_found(rng):
    """Anchors whose snapshots found them in order get a plan without a sort and without the
    plan's own order check (no radix pass at all); anchors found out of order skip that check
    too, and the plan repairs the previous order directly. Products are a fresh plan's."""
    target = _target("host")
    kernels = target.kernels

    def host(x, y):  # an operator of the host target (snapshots too), for the products compared
        return lx.LaplexOperator(x, y, 0.8, backend=target.backend)

    n = 2000
    x = np.sort(rng.uniform(0, n, n))
    y = rng.uniform(0, n, 1500)
    op = host(x, y)
    v = rng.standard_normal(1500)
    first = len(kernels.launches)
    assert op._ordered == (True, False)
    out = op @ v
    counts = [k for k in kernels.launches[first:] if "radix_counts" in k]
    assert len(counts) == y.dtype.itemsize  # one per 8-bit digit of y; none for x
    assert rel_err(out, host(x, y) @ v) <= 1e-12
    # the transpose and the adjoint share the plan, their sides swapped
    assert op.T._ordered == (False, True) and op.H.T._ordered == (True, False)
    u = rng.standard_normal(n)
    assert rel_err(op.T @ u, host(x, y).T @ u) <= 1e-12
    # a training step: x stays in order, y moves a little and is repaired (no radix pass)
    x2, y2 = x + 1e-3 * np.arange(n) / n, y + rng.uniform(-0.01, 0.01, 1500)
    step = op.with_anchors(x2, y2)
    first = len(kernels.launches)
    got = step @ v
    assert not any("radix" in k for k in kernels.launches[first:])
    assert sum("sort_windows" in k for k in kernels.launches[first:]) >= 1
    assert rel_err(got, host(x2, y2) @ v) <= 1e-12


def test_production_window_sorts_of_long_tie_runs(rng):
    """Windows of 1024 in the production geometry: float32 anchors in runs of ~60 ties moved by
    one ulp (items far out of place: many merge-split rounds) and by a fraction of their spacing
    (a few); the repaired orders are NumPy's stable argsort, without a full sort."""
    target = _target("host-production")
    backend = target.backend
    ulp = np.spacing(np.float32(600))
    x = np.float32(600) + rng.integers(0, 70, 4100).astype(np.float32) * ulp
    y = np.sort(rng.uniform(0, 4000, 3900)).astype(np.float32)
    old = backend.plan(x, y)
    step = rng.integers(-1, 2, x.shape[0]).astype(np.float32)
    x2 = np.nextafter(x, x + step * np.float32(2000))
    y2 = y + rng.uniform(-0.3, 0.3, y.shape[0]).astype(np.float32)
    before = _full_sorts(target)
    new = backend.plan(x2, y2, hint=old)
    assert _full_sorts(target) == before, "a full sort ran although the old order was close"
    for (keys, perm), a in zip(new.sorted, (x2, y2)):
        np.testing.assert_array_equal(target.back(perm), np.argsort(a, kind="stable"))
        np.testing.assert_array_equal(target.back(keys), np.sort(a, kind="stable"))


def test_production_window_sorts_fall_back_to_the_bitonic_network(rng):
    """A previous order reversed within every window of 1024 moves items up to 1023 places: more
    than the merge-split rounds' cap (64 rounds of runs of 8), so every window goes through the
    bitonic network, and one pass repairs the order."""
    target = _target("host-production")
    backend = target.backend
    window = backend.geometry["LAPLEX_SORT_BLOCK"] * backend.geometry["LAPLEX_SORT_ITEMS"]
    assert window == 1024 and backend.geometry["LAPLEX_SORT_ROUNDS"] * 8 < window
    a = np.sort(rng.uniform(0, 1, 3 * window + 100)).astype(np.float32)
    a[rng.integers(0, a.shape[0], 300)] = a[0]  # ties across the first windows
    a = np.sort(a)
    hint = np.concatenate(
        [np.arange(s, min(s + window, a.shape[0]))[::-1] for s in range(0, a.shape[0], window)]
    ).astype(np.int32)
    launches = len(target.kernels.launches)
    values, perm = _cupy_sort.repair(backend, a, hint, np.dtype(np.int32))
    np.testing.assert_array_equal(perm, np.argsort(a, kind="stable"))
    np.testing.assert_array_equal(values, np.sort(a, kind="stable"))
    assert sum("laplex_sort_windows" in k for k in target.kernels.launches[launches:]) == 1


def test_production_geometry_on_the_host(rng):
    """The launch geometry the GPU uses (tiles of 1024 items), through the host build."""
    target = _target("host-production")
    m, n = 2500, 1900
    x, y = rng.uniform(0, 100, m), rng.uniform(0, 100, n)
    v = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    op = target.operator(x, y, 0.2 + 0.5j)
    assert rel_err(op @ v, lx.LaplexOperator(x, y, 0.2 + 0.5j) @ v) <= 1e-12
    g = rng.standard_normal(m)
    got, want = op.gradient(v, g), lx.LaplexOperator(x, y, 0.2 + 0.5j).gradient(v, g)
    assert rel_err(got.y, want.y) <= 1e-11 and abs(got.rate - want.rate) <= 1e-11 * abs(want.rate)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_production_radix_tiles_on_the_host(rng, dtype):
    """The GPU's radix geometry (8 warps, 4096 or 2048 keys a tile) over several tiles."""
    backend = _target("host-production").backend
    a = np.concatenate([rng.standard_normal(9000), rng.integers(0, 9, 3000) * 0.5]).astype(dtype)
    for index in (np.int32, np.int64):
        keys, perm = _cupy_sort.radix_sort(backend, a, np.dtype(index))
        np.testing.assert_array_equal(perm, np.argsort(a, kind="stable"))
        np.testing.assert_array_equal(keys, np.sort(a))


def test_memory_plan_of_a_training_step(rng):
    """The memory plan of docs/gpu-validation.md, measured on the backend's host code (NumPy
    reports its allocations to tracemalloc): beyond the inputs x, y, v, g, a fresh float32 step
    (snapshots, plan with its radix sorts' scratch, matvec, gradient) peaks at 25.1 bytes per
    anchor and a step re-planned from the previous plan at 12.5 beyond the snapshots and that plan.
    At m = n = 1e9 that is 50 GB next to 16 GB of inputs on an 80 GB GPU."""
    import gc
    import tracemalloc

    target = _target("host-production")
    n = 2**15
    x, y = (rng.random(n) * n).astype(np.float32), (rng.random(n) * n).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    x2, y2 = np.nextafter(x, np.float32(2 * n)), np.nextafter(y, np.float32(-1))  # 1-ulp moves
    warm = target.operator(x[:3000], y[:3000], 1.0)
    warm.gradient(v[:3000], warm @ v[:3000])
    del warm

    def bytes_per_anchor(step):
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        kept = step()
        return (tracemalloc.get_traced_memory()[1] - base) / (2 * n), kept

    def fresh():
        op = target.operator(x, y, 1.0)
        op.gradient(v, op @ v)
        return op

    tracemalloc.start()  # before the plans exist: freeing the previous plan counts
    try:
        peak, op = bytes_per_anchor(fresh)
        assert peak <= 25.5, f"fresh step: {peak:.1f} bytes per anchor beyond the inputs"
        op2 = op.with_anchors(x2, y2)  # its plan repairs op's
        del op
        sorts = _full_sorts(target)
        peak, _ = bytes_per_anchor(lambda: op2.gradient(v, op2 @ v))
    finally:
        tracemalloc.stop()
    assert _full_sorts(target) == sorts  # repaired, not sorted
    assert peak <= 13, f"training step: {peak:.1f} bytes per anchor beyond snapshots and hint"


def test_out_of_memory_becomes_memory_error(rng):
    """A failed device allocation surfaces as MemoryError naming the sizes and the estimate."""
    require_host()

    class DeviceOOM(Exception):
        pass

    class Exhausted:
        __name__ = "numpy"

        def __getattr__(self, name):
            return getattr(np, name)

        def empty(self, shape, dtype=float):
            if int(np.prod(shape)) > 10_000:
                raise DeviceOOM("out of memory allocating")
            return np.empty(shape, dtype)

    from cuda_host.kernels import SMALL, HostKernels

    kernels = HostKernels(SMALL)
    backend = _cupy.CupyBackend(xp=Exhausted(), kernels=kernels, out_of_memory=(DeviceOOM,))
    x, y = rng.standard_normal(20_000), rng.standard_normal(30)
    with pytest.raises(MemoryError, match=r"plan of 20000 x 30 anchors.*needs about"):
        backend.plan(x, y)  # the radix sort's buffers
    plan = _cupy.CupyBackend(xp=np, kernels=kernels).plan(np.sort(x), y)
    with pytest.raises(MemoryError, match=r"20000 x 30 operator with 1 column.*needs about"):
        backend.apply(plan, 0, 1.0, rng.standard_normal((30, 1)))


def test_kernel_arguments_are_checked(rng):
    """The host build checks the byte size of every argument against the kernel's parameters,
    which catches a Python int passed where the kernel takes an int32 (or the reverse)."""
    require_host()
    from laplexops.backends import _cuda_kernels as names

    kernels = _target("host").kernels
    fn = kernels.get(names.splits_name("float64"))
    a = rng.standard_normal(4)
    out = np.empty(2, np.int64)
    with pytest.raises(TypeError, match="expects 8"):
        fn((1,), (32,), (a, a, np.int32(4), np.int64(4), np.int64(1), out))
    fn((1,), (32,), (np.sort(a), np.sort(a), np.int64(4), np.int64(4), np.int64(1), out))
    assert out.tolist() == [0, 4]
