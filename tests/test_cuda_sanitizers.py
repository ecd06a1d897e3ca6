"""The CUDA kernels under the compilers' sanitizers, on the CPU: the host build of
the kernel sources (``cuda_host/emulate.h``) runs each block's threads as real threads and device
arrays are NumPy buffers, so

* ThreadSanitizer sees two threads of a block touch the same shared word with nothing ordering
  them -- a missing ``__syncthreads`` or ``__syncwarp``, or a write racing another thread's read;
* AddressSanitizer sees a kernel read or write outside a device array (not outside a shared-memory
  array: those are function statics of templates, which it leaves unguarded).

Every kind of launch runs in the GPU's launch geometry and in the tests' small one
(``cuda_host/every_launch.py``). Needs
g++ with the sanitizers' runtimes (``libtsan``, ``libasan``); skips without them.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from cuda_host.kernels import EXTRA_FLAGS, compiler

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = r"laplex_(?:scan|gram)\.cu"


def _runtime(name: str, options: dict) -> str | None:
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
_STARTED: dict = {}  # sanitizer -> (process or None: no runtime, its folder)


def _start(name: str, folder, rng: np.random.Generator):
    """``cuda_host/every_launch.py`` with the kernels built with the sanitizer's flags and its
    runtime preloaded (Python itself is not instrumented), started in the background; one thread
    for Numba and BLAS; output into ``folder``; its inputs seeded from ``rng`` (the test's: a
    replayed run draws the same). ``None`` without a working runtime."""
    flags, options = SANITIZERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    options = options(folder)
    runtime = _runtime(name, options)
    if runtime is None:
        return None
    env = dict(
        os.environ,
        LD_PRELOAD=runtime,
        **{EXTRA_FLAGS: flags},
        **options,
        NUMBA_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        LAPLEXOPS_EVERY_LAUNCH_SEED=str(int(rng.integers(2**63))),
    )
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, os.path.join(HERE, "cuda_host", "every_launch.py")],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )


def _every_launch(name: str, tmp_path, rng: np.random.Generator) -> tuple[bool, str, object]:
    """The run of ``every_launch.py`` under sanitizer ``name``: whether it exited with 0 and
    printed ``ok`` last, its output, and its folder.
    The first test to ask starts the runs of every sanitizer at once (each is one process, so
    two cores run them side by side); skips where the sanitizer has no working runtime."""
    if os.environ.get("LAPLEXOPS_HOST_KERNELS", "1") == "0":
        pytest.skip("LAPLEXOPS_HOST_KERNELS=0")
    if name not in _STARTED:
        for other in SANITIZERS:
            if other not in _STARTED:
                folder = tmp_path / other
                _STARTED[other] = (_start(other, folder, rng), folder)
    process, folder = _STARTED.pop(name)
    if process is None:
        pytest.skip(f"no C++ compiler with a working {name} runtime (lib{name}.so) here")
    process.wait(timeout=1800)
    stdout = (folder / "stdout").read_text()
    passed = process.returncode == 0 and stdout.strip().endswith("ok")
    return passed, stdout + (folder / "stderr").read_text(), folder


def kernel_races(log: str) -> list[str]:
    """The reports of a ThreadSanitizer log whose access and previous access are both in the
    kernel source. Not counted: reports about memory the Python side shares with other threads
    (not the kernels' races), and two writes by one statement to device memory (the flag idiom
    ``if (found) *flag = 1``, where every writer stores the same value). In shared memory (a
    static array on the host) every race counts."""
    races = []
    for report in log.split("WARNING: ThreadSanitizer: ")[1:]:
        report = report.split("SUMMARY:")[0]
        parts = re.split(r"\n  Previous ", report, maxsplit=1)
        if len(parts) != 2:
            continue
        first, previous = parts[0].split("\n\n")[0], parts[1].split("\n\n")[0]
        if not (re.search(SOURCE, first) and re.search(SOURCE, previous)):
            continue
        lines = [re.search(f"({SOURCE}:\\d+)", stack).group(1) for stack in (first, previous)]
        writes = "Write of size" in first and previous.startswith("write of size")
        if writes and lines[0] == lines[1] and "Location is heap" in report:
            continue
        races.append(report)
    return races


def test_the_filter_keeps_races_within_the_kernels():
    frame = "    #0 void laplex::k() /src/laplexops/backends/laplex_scan.cu:{} (x.so+0x1)\n"

    def report(access, line, previous, line2, where):
        return (
            f"WARNING: ThreadSanitizer: data race (pid=1)\n  {access} of size 4 at 0x1 by "
            f"thread T2:\n" + frame.format(line) + f"\n  Previous {previous} of size 4 at "
            f"0x1 by thread T3:\n" + frame.format(line2) + f"\n  Location is {where} x\n"
            "SUMMARY: ThreadSanitizer: data race\n"
        )

    ours = report("Write", 10, "read", 12, "global")
    foreign = ours.replace(frame.format(12), "    #0 memcpy (libtsan.so+0x5)\n")
    flag = report("Write", 10, "write", 10, "heap block")
    shared = report("Write", 10, "write", 10, "global")
    assert kernel_races(ours + foreign + flag + shared) == kernel_races(ours + shared)
    assert len(kernel_races(ours + shared)) == 2


def test_no_races_in_the_kernels(tmp_path, rng):
    passed, output, folder = _every_launch("tsan", tmp_path, rng)
    assert passed, output
    text = "".join(p.read_text() for p in folder.iterdir() if p.name.startswith("tsan"))
    races = kernel_races(text)
    assert not races, f"{len(races)} race(s) in the kernels; the first:\n{races[0]}"


def test_no_access_outside_device_arrays(tmp_path, rng):
    passed, output, _ = _every_launch("asan", tmp_path, rng)
    assert passed, output
