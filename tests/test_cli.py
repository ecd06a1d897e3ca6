"""The command line: ``python -m laplexops info`` and ``python -m laplexops demo``."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "laplexops", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info():
    r = _run("info")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "laplexops" in r.stdout
    assert "numba" in r.stdout


@pytest.mark.parametrize(
    "extra", [[], ["--dtype", "float32", "--rate", "1+2j"]], ids=["float64", "float32-phased"]
)
def test_demo_passes(extra):
    r = _run("demo", "--n", "20000", *extra)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert r.stdout.strip(), "the demo printed nothing"
    assert "PASS" in r.stdout, out
    assert "FAIL" not in r.stdout, out


def test_unknown_command_fails():
    r = _run("no-such-command")
    assert r.returncode != 0


def test_bench_gpu_without_a_device_says_so():
    from laplexops.backends import available

    if "cupy" in available():
        pytest.skip("a GPU is present: bench --gpu would run in full")
    r = _run("bench", "--gpu")
    assert r.returncode == 2
    assert "needs CuPy and a CUDA device" in r.stderr
