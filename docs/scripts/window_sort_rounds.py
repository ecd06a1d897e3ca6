"""How many rounds the first window pass of a plan repair needs, by two ways of sorting a window.

A NumPy model of ``laplex_sort_windows`` (see docs/gpu-validation.md): float32 anchors with spacing
1 around 2^(23+b), so that they sit in runs of about 2^b ties, each moved by one unit in the last
place (down, up or not); the new keys are taken in the old plan's order and cut into windows of
1024; last, anchors without ties moved by up to 1% of their spacing. Per case it prints:

* for odd-even transposition of single items: the share of windows with an item far out of place
  (one that sorts after the item ``REACH`` places ahead; such windows are better sent to the
  bitonic network) and the rounds the other windows need;
* for merge-split of sorted runs of 8 and 16 items per thread (the kernel's way, runs of
  ``LAPLEX_SORT_ITEMS`` = 8): the rounds every window needs.

Run: ``python docs/scripts/window_sort_rounds.py``.
"""

import numpy as np

WINDOW, REACH = 1024, 48
rng = np.random.default_rng(0)


def ulp_moves(a):
    r = rng.random(a.shape[0])
    step = (r > 2 / 3).astype(np.float32) - (r < 1 / 3).astype(np.float32)
    return np.nextafter(a, a + step * np.float32(2 * np.abs(a).max() + 1))


def rounds_needed(windows, cap=2048):
    """Rounds until an even and an odd round exchange nothing, per window (rows)."""
    a = windows.copy()
    quiet = np.zeros(a.shape[0], int)
    done = np.full(a.shape[0], -1)
    for r in range(cap):
        lo = np.arange(r & 1, WINDOW - 1, 2)
        left, right = a[:, lo], a[:, lo + 1]
        swap = left > right
        a[:, lo], a[:, lo + 1] = np.where(swap, right, left), np.where(swap, left, right)
        quiet = np.where(swap.any(axis=1), 0, quiet + 1)
        done[(quiet == 2) & (done < 0)] = r + 1
        if (done >= 0).all():
            break
    return done


def merge_split_rounds(windows, K, cap=2048):
    """Rounds of merge-split (runs of K per thread, each sorted first; neighbouring runs merge,
    the left keeping the K first) until an even and an odd round change nothing, per window."""
    T = WINDOW // K
    a = np.sort(windows.reshape(-1, T, K), axis=2)
    quiet = np.zeros(a.shape[0], int)
    done = np.full(a.shape[0], -1)
    for r in range(cap):
        first = r & 1
        pairs = (T - first) // 2
        left = a[:, first : first + 2 * pairs : 2, :]
        right = a[:, first + 1 : first + 2 * pairs : 2, :]
        change = (left[:, :, -1] > right[:, :, 0]).any(axis=1)
        both = np.sort(np.concatenate([left, right], axis=2), axis=2)
        a[:, first : first + 2 * pairs : 2, :] = both[:, :, :K]
        a[:, first + 1 : first + 2 * pairs : 2, :] = both[:, :, K:]
        quiet = np.where(change, 0, quiet + 1)
        done[(quiet == 2) & (done < 0)] = r + 1
        if (done >= 0).all():
            break
    return done


def study(label, x, new=None):
    """``new``: the moved anchors (default: ``x`` moved by one ulp)."""
    n = x.shape[0]
    old = np.argsort(x, kind="stable")
    new = ulp_moves(x) if new is None else new
    rank = np.empty(n, np.int64)
    rank[np.argsort(new, kind="stable")] = np.arange(n)  # the order of a fresh plan
    windows = rank[old][: n // WINDOW * WINDOW].reshape(-1, WINDOW)
    far = (windows[:, REACH:] < windows[:, :-REACH]).any(axis=1)
    line = f"{label:24} far {far.mean():6.1%}"
    if (~far).any():
        rounds = rounds_needed(windows[~far])
        line += f"; others: rounds median {np.median(rounds):.0f}, max {rounds.max()}"
    for k in (8, 16):  # merge-split of runs of k items (the kernel's: 8), every window
        rounds = merge_split_rounds(windows, k)
        line += f"; runs of {k}: median {np.median(rounds):.0f}, max {rounds.max()}"
    print(line)


if __name__ == "__main__":
    n = 2**21
    for b in range(2, 7):
        base = np.float32(2.0 ** (23 + b))
        study(f"runs of ~{2**b} ties", base + (rng.random(n) * n).astype(np.float32))
    x = rng.random(n) * n  # float64: no ties; moves of up to 1% of the spacing
    study("no ties, 1% moves", x, x + rng.uniform(-0.01, 0.01, n))
