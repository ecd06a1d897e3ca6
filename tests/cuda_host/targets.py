"""What the tests of the CUDA backend need before they build a target: the host build (a C++
compiler, ``LAPLEXOPS_HOST_KERNELS`` not ``0``) or a CUDA device with CuPy; each skips the
calling test otherwise."""

from __future__ import annotations

import os

import pytest

from cuda_host.kernels import compiler
from laplexops.backends import available


def require_host() -> None:
    """Skip unless there is a C++ compiler for the host build and ``LAPLEXOPS_HOST_KERNELS`` is not
    ``0`` (``bench --gpu`` sets it: on a GPU machine the device is what needs checking; CI runs the
    host target)."""
    if os.environ.get("LAPLEXOPS_HOST_KERNELS", "1") == "0" or compiler() is None:
        pytest.skip(
            "no C++ compiler for the host build of the CUDA kernels (or LAPLEXOPS_HOST_KERNELS=0)"
        )


def require_gpu() -> None:
    """Skip unless CuPy sees a CUDA device."""
    if "cupy" not in available():
        pytest.skip("no CUDA device with CuPy here")
