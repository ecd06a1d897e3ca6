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

import numpy as np
import pytest

from cuda_host import sanitizers

SOURCE = r"laplex_(?:scan|gram)\.cu"


def _every_launch(name: str, tmp_path, seed: int) -> tuple[bool, str, object]:
    """The run of ``every_launch.py`` under sanitizer ``name``: whether it exited with 0 and
    printed ``ok`` last, its output, and its folder. ``tests/conftest.py`` starts the runs when
    the session starts; run apart from it, the first test to ask starts them here. Skips where
    the sanitizer has no working runtime."""
    if os.environ.get("LAPLEXOPS_HOST_KERNELS", "1") == "0":
        pytest.skip("LAPLEXOPS_HOST_KERNELS=0")
    sanitizers.start_all(tmp_path, np.random.default_rng(seed))
    done = sanitizers.finish(name)
    if done is None:
        pytest.skip(f"no C++ compiler with a working {name} runtime (lib{name}.so) here")
    return done


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


def test_no_races_in_the_kernels(tmp_path, sanitizer_seed):
    passed, output, folder = _every_launch("tsan", tmp_path, sanitizer_seed)
    assert passed, output
    text = "".join(p.read_text() for p in folder.iterdir() if p.name.startswith("tsan"))
    races = kernel_races(text)
    assert not races, f"{len(races)} race(s) in the kernels; the first:\n{races[0]}"


def test_no_access_outside_device_arrays(tmp_path, sanitizer_seed):
    passed, output, _ = _every_launch("asan", tmp_path, sanitizer_seed)
    assert passed, output
