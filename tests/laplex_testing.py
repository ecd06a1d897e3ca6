"""Shared helpers of the laplexops test suite: the float64 dense reference, error measures, and
Hypothesis strategies for anchors, rates and operands.

The reference is computed with NumPy in float64 / complex128 straight from the definition
``W[i, j] = exp(-s |x_i - y_j|)`` -- never through ``LaplexOperator.to_dense``.

Strategies draw a seed and build the arrays with ``numpy.random.default_rng(seed)``: every run gets
fresh random data (Hypothesis seeds differ between runs), and the data are random normals or random
coordinates, never zeros.
"""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import note
from hypothesis import strategies as st

# ------------------------------------------------------------------------------------ tolerances
#: relative 2-norm error allowed against the float64 reference (docs/reference.md, Accuracy)
TOL = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.float32): 1e-4,
    np.dtype(np.complex128): 1e-10,
    np.dtype(np.complex64): 1e-4,
}

#: below ``FLOOR[dtype] * (scale of the possible result)`` a reference is treated as zero: a float32
#: result cannot represent values under ~1e-38 (and loses digits in the subnormals)
FLOOR = {
    np.dtype(np.float64): 1e-280,
    np.dtype(np.float32): 1e-25,
    np.dtype(np.complex128): 1e-280,
    np.dtype(np.complex64): 1e-25,
}


def real_dtype(dtype) -> np.dtype:
    """float32 for float32/complex64, float64 otherwise."""
    return (
        np.dtype(np.float32)
        if np.dtype(dtype) in (np.float32, np.complex64)
        else np.dtype(np.float64)
    )


# ------------------------------------------------------------------------------------ references
def f64(a) -> np.ndarray:
    """``a`` as a NumPy float64 (or complex128 when complex) array."""
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def dense_ref(x, y, rate) -> np.ndarray:
    """``exp(-rate |x_i - y_j|)`` in float64 / complex128, straight from the definition."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d = np.abs(x[:, None] - y[None, :])
    if isinstance(rate, complex):
        return np.exp(-complex(rate) * d)
    return np.exp(-float(rate) * d)


def apply_ref(x, y, rate, v) -> np.ndarray:
    """``W @ v`` in float64 / complex128 (``v`` of shape ``(n,)`` or ``(n, k)``)."""
    return dense_ref(x, y, rate) @ f64(v)


def rows_ref(x, y, rate, v, rows, chunk=16) -> np.ndarray:
    """Rows ``rows`` of ``W @ v`` by direct float64 summation, without the full matrix."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    v = f64(v)
    out = []
    for start in range(0, len(rows), chunk):
        r = rows[start : start + chunk]
        out.append(np.exp(-rate * np.abs(x[r, None] - y[None, :])) @ v)
    return np.concatenate(out)


def rel_err(got, ref, floor: float = 0.0) -> float:
    """``||got - ref|| / max(||ref||, floor)`` in the 2-norm (Frobenius for matrices)."""
    got = f64(got)
    ref = f64(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    diff = float(np.linalg.norm((got - ref).ravel()))
    den = max(float(np.linalg.norm(ref.ravel())), floor)
    if den == 0.0:
        return diff
    return diff / den


def product_floor(dtype, v, m: int, n: int) -> float:
    """The largest possible size of ``W @ v`` times ``FLOOR[dtype]``."""
    return (
        FLOOR[np.dtype(dtype)]
        * float(np.linalg.norm(f64(v).ravel()))
        * np.sqrt(max(m, 1) * max(n, 1))
    )


def assert_close_to_ref(got, ref, dtype, v, m, n, what=""):
    """Relative 2-norm error within the tolerance of ``dtype`` (docs/reference.md, Accuracy)."""
    err = rel_err(got, ref, product_floor(dtype, v, m, n))
    tol = TOL[np.dtype(dtype)]
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e} (dtype {np.dtype(dtype)})"


def gradient_ref(x, y, rate, v, g):
    """The four gradients of docs/reference.md, Gradients, evaluated densely in float64, plus the
    size of the terms that each one sums (a scale for the tolerance).

    Returns ``(gx, gy, grate, gv), (sx, sy, srate, sv)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m, n = x.size, y.size
    v_is_real = not np.iscomplexobj(v)
    V = f64(v).reshape(n, -1).astype(np.complex128)
    G = f64(g).reshape(m, -1).astype(np.complex128)
    s = complex(rate)
    d = x[:, None] - y[None, :]
    S = np.sign(d)  # sign(0) = 0
    A = np.abs(d)
    W = np.exp(-s * A)
    Gc = G.conj()
    gx = np.real(np.sum(Gc * ((-s) * (S * W) @ V), axis=1))
    gy = np.real(np.sum(V * (s * ((S * W).T @ Gc)), axis=1))
    a = np.sum(Gc * ((-A * W) @ V))
    grate = complex(np.conj(a)) if isinstance(rate, complex) else float(np.real(a))
    gv = W.conj().T @ G
    if v_is_real:
        gv = gv.real
    gv = gv.reshape(np.shape(v))
    aW = np.abs(W)
    aV, aG = np.abs(V), np.abs(G)
    sx = np.sum(aG * (abs(s) * aW @ aV), axis=1)
    sy = np.sum(aV * (abs(s) * aW.T @ aG), axis=1)
    srate = float(np.sum(aG * ((A * aW) @ aV)))
    sv = (aW.T @ aG).reshape(np.shape(v))
    return (gx, gy, grate, gv), (sx, sy, srate, sv)


def inner(a, b) -> complex:
    """``<a, b> = sum conj(a) * b`` in complex128."""
    return complex(np.vdot(f64(a).ravel(), f64(b).ravel()))


# ------------------------------------------------------------------------------------ layouts
LAYOUTS = ("random", "ties", "same", "shared", "sorted", "reversed", "dup", "grid", "clustered")


def make_anchors(rng, layout: str, m: int, n: int, scale: float):
    """Row and column anchors of a given layout (float64; ``n`` is ignored for ``"same"``)."""

    def uni(k):
        return scale * rng.uniform(-1.0, 1.0, k)

    if layout == "random":
        return uni(m), uni(n)
    if layout == "ties":  # both drawn from a small pool: repeated anchors and x_i == y_j
        pool = uni(int(rng.integers(1, 6)))
        return rng.choice(pool, m), rng.choice(pool, n)
    if layout == "same":  # x == y exactly (the Gram layout), possibly with duplicates
        x = uni(m)
        if m > 1 and rng.random() < 0.3:
            x[rng.integers(0, m, max(1, m // 4))] = x[0]
        return x, x.copy()
    if layout == "shared":  # y shares some of its values with x
        x = uni(m)
        if m == 0:
            return x, uni(n)
        k = int(rng.integers(0, n + 1))
        y = np.concatenate([rng.choice(x, k), uni(n - k)])
        return x, rng.permutation(y)
    if layout == "sorted":
        return np.sort(uni(m)), np.sort(uni(n))
    if layout == "reversed":
        return np.sort(uni(m))[::-1].copy(), np.sort(uni(n))[::-1].copy()
    if layout == "dup":  # each side repeats its own values
        bx, by = uni(max(1, m // 3)), uni(max(1, n // 3))
        return rng.choice(bx, m), rng.choice(by, n)
    if layout == "grid":  # integers times scale: many exact ties, the rest well separated
        return scale * rng.integers(-6, 7, m).astype(float), scale * rng.integers(-6, 7, n).astype(
            float
        )
    if layout == "clustered":  # tight groups with huge gaps (spread up to 1e6 * scale)
        centers = scale * 1e6 * rng.uniform(-1.0, 1.0, int(rng.integers(1, 5)))
        x = rng.choice(centers, m) + uni(m)
        y = rng.choice(centers, n) + uni(n)
        return x, y
    raise AssertionError(layout)


@st.composite
def problems(
    draw,
    *,
    dtype=np.float64,
    rate_kind="any",
    max_m=40,
    max_n=40,
    min_size=1,
    layouts=LAYOUTS,
    max_c=1.5,
):
    """A dict with anchors ``x``, ``y`` (of ``dtype``), ``rate``, ``scale``, ``rng``, ``m``, ``n``.

    ``rate_kind``: ``"real"``, ``"complex"`` or ``"any"``. The rate is ``c / scale`` with
    ``c = 10**U(-2, max_c)``; a complex rate is ``a + i w`` with ``|w|`` up to 6 ``a``.
    """
    layout = draw(st.sampled_from(layouts))
    m = draw(st.integers(min_size, max_m))
    n = m if layout == "same" else draw(st.integers(min_size, max_n))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    seed = draw(st.integers(0, 2**63 - 1))
    rng = np.random.default_rng(seed)
    x, y = make_anchors(rng, layout, m, n, scale)
    x, y = x.astype(dtype), y.astype(dtype)
    if layout == "same" and draw(st.booleans()):
        y = x  # the very same array object
    kind = draw(st.sampled_from(["real", "complex"])) if rate_kind == "any" else rate_kind
    a = 10.0 ** draw(st.floats(-2.0, max_c)) / scale
    if kind == "complex":
        rate = complex(a, a * draw(st.floats(-6.0, 6.0)))
    else:
        rate = float(a)
    note(f"layout={layout} m={m} n={n} scale={scale} rate={rate!r} seed={seed}")
    return dict(x=x, y=y, rate=rate, scale=scale, rng=rng, m=m, n=n, layout=layout)


def operand(rng, lead: int, shape_kind: str, dtype, k: int = 3) -> np.ndarray:
    """A random normal operand of shape ``(lead,)``, ``(lead, 1)`` or ``(lead, k)``."""
    shape = {"1d": (lead,), "col": (lead, 1), "mat": (lead, k)}[shape_kind]
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        out = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        out = rng.standard_normal(shape)
    return out.astype(dtype)


shape_kinds = st.sampled_from(["1d", "col", "mat"])


def operand_dtypes(anchor_dtype):
    """Real and complex operand dtypes of the anchors' precision."""
    if np.dtype(anchor_dtype) == np.float32:
        return st.sampled_from([np.float32, np.complex64])
    return st.sampled_from([np.float64, np.complex128])


def result_dtype(op_dtype, v_dtype) -> np.dtype:
    """``result_type(op.dtype, v.dtype)``; integer operands do not raise the precision."""
    v_dtype = np.dtype(v_dtype)
    if v_dtype.kind in "iub":
        return np.dtype(op_dtype)
    return np.result_type(op_dtype, v_dtype)


def run_in_threads(target, count: int) -> None:
    """Call ``target(i)`` for ``i`` in ``range(count)``, each on a thread of its own, all at
    once; return when all are done."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
