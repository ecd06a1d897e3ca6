"""``every_launch.py`` under the compilers' sanitizers, in background processes (for
``tests/test_cuda_sanitizers.py``).

The runs take minutes of CPU each. ``tests/conftest.py`` starts them when the session's first test
starts, at a lower priority, so that they run on the cores the rest of the suite leaves idle, and
orders the tests that wait for them last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cuda_host.kernels import EXTRA_FLAGS, compiler

HERE = os.path.dirname(os.path.abspath(__file__))

#: the sanitizers: the host build's flags and the runtime's options (given the run's folder)
SANITIZERS = {
    "tsan": (
        "-fsanitize=thread -g",
        lambda folder: {
            "TSAN_OPTIONS": f"halt_on_error=0 report_signal_unsafe=0 exitcode=0 "
            f"history_size=4 log_path={folder / 'tsan'}"
        },
    ),
    "asan": (
        "-fsanitize=address -fno-omit-frame-pointer -g",
        lambda folder: {"ASAN_OPTIONS": "detect_leaks=0"},
    ),
}

#: the tests that wait for the runs (``tests/test_cuda_sanitizers.py``)
TESTS = frozenset({"test_no_races_in_the_kernels", "test_no_access_outside_device_arrays"})

_STARTED: dict = {}  # sanitizer -> (process or None: no runtime, its folder)


def runtime(name: str, options: dict) -> str | None:
    """The path of the sanitizer runtime ``lib<name>.so`` of the host compiler, if it has one and
    Python starts with it preloaded (a sanitizer may refuse this machine's memory layout)."""
    cxx = compiler()
    if cxx is None:
        return None
    path = subprocess.run(
        [cxx, f"-print-file-name=lib{name}.so"], capture_output=True, text=True
    ).stdout.strip()
    if not (os.path.isabs(path) and os.path.exists(path)):
        return None
    start = subprocess.run(
        [sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
        env=dict(os.environ, LD_PRELOAD=path, **options),
        timeout=120,
    )
    return path if start.returncode == 0 and "Sanitizer" not in start.stderr else None


def _start(name: str, folder: Path, seed: int):
    """``cuda_host/every_launch.py`` with the kernels built with the sanitizer's flags and its
    runtime preloaded (Python itself is not instrumented), started in the background at a lower
    priority; one thread for Numba and BLAS; output into ``folder``; its inputs drawn from
    ``seed``. ``None`` without a working runtime."""
    flags, options = SANITIZERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    options = options(folder)
    path = runtime(name, options)
    if path is None:
        return None
    env = dict(
        os.environ,
        LD_PRELOAD=path,
        **{EXTRA_FLAGS: flags},
        **options,
        NUMBA_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        LAPLEXOPS_EVERY_LAUNCH_SEED=str(seed),
    )
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, os.path.join(HERE, "every_launch.py")],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            preexec_fn=lambda: os.nice(10),
        )


def start_all(root: Path, rng: np.random.Generator) -> None:
    """Start the run of every sanitizer not started yet (each one process), in folders under
    ``root``, seeded from ``rng``."""
    for name in SANITIZERS:
        if name not in _STARTED:
            folder = root / name
            _STARTED[name] = (_start(name, folder, int(rng.integers(2**63))), folder)


def finish(name: str) -> tuple[bool, str, Path] | None:
    """Wait for the run of sanitizer ``name`` (started by :func:`start_all`): whether it exited
    with 0 and printed ``ok`` last, its output, and its folder; ``None`` where the sanitizer has
    no working runtime."""
    process, folder = _STARTED.pop(name)
    if process is None:
        return None
    process.wait(timeout=1800)
    stdout = (folder / "stdout").read_text()
    passed = process.returncode == 0 and stdout.strip().endswith("ok")
    return passed, stdout + (folder / "stderr").read_text(), folder


def stop_all() -> None:
    """End the runs no test waited for (their tests deselected or the session interrupted)."""
    while _STARTED:
        _, (process, _) = _STARTED.popitem()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
