"""Small timing helpers shared by the demo and the benchmark command (not used by the library)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], object], repeat: int = 5, budget: float = 10.0) -> float:
    """The fastest of up to ``repeat`` calls of ``fn`` in seconds (stops early past ``budget``
    s)."""
    best = float("inf")
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return best


def best_of_pair(
    first: Callable[[], object],
    second: Callable[[], object],
    rounds: int = 3,
    per_round: int = 8,
    budget: float = 20.0,
) -> tuple[float, float]:
    """The fastest call of ``first`` and of ``second`` in seconds, over up to ``rounds`` rounds
    that each call ``first`` then ``second`` ``per_round`` times back to back (stops early past
    ``budget`` s). Two cases compared by their ratio then see the same drift of a shared
    machine. Each round's calls of one case warm the caches for it again: after the other
    case's products, a million-anchor product takes about seven calls to reach its speed."""
    best = [float("inf"), float("inf")]
    start = time.perf_counter()
    for _ in range(rounds):
        for i, fn in enumerate((first, second)):
            best[i] = min(best[i], best_of(fn, per_round))
        if time.perf_counter() - start > budget:
            break
    return best[0], best[1]


def once(fn: Callable[[], T]) -> tuple[float, T]:
    """``(seconds, result)`` of one call of ``fn``."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def fmt_seconds(t: float) -> str:
    """``t`` seconds in a readable unit."""
    if t >= 1:
        return f"{t:7.2f} s "
    if t >= 1e-3:
        return f"{t * 1e3:7.2f} ms"
    return f"{t * 1e6:7.1f} us"
