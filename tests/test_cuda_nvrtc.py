"""The kernel sources compile under NVRTC, as CuPy's RawModule compiles them on a GPU machine:
every template instance the backend can launch, by name expression, for sm_90 (the H100/H200's;
CI compiles the same instances with nvcc for sm_80 and sm_90, ``.ci/run``: what is checked here
is NVRTC's front end, the same for every architecture). Runs without a GPU (NVRTC is a host
library, from the ``nvidia-cuda-nvrtc`` wheel of the test extra)."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from cuda_host import nvrtc
from laplexops.backends import _cuda_kernels as kernels

ARCHS = ("sm_90",)


def _compile(lib, path: str, arch: str) -> tuple[str, str, bool, str, list, dict]:
    with open(path) as fh:
        source = fh.read()
    names = [name for name in kernels.all_names() if kernels.source_of(name) == path]
    options = ["-std=c++17", f"--gpu-architecture={arch}", *kernels.options()]
    ok, log, lowered = nvrtc.compile_names(lib, source, names, options)
    return path, arch, ok, log, names, lowered


def test_every_kernel_instance_compiles_with_nvrtc():
    lib = nvrtc.library()
    if lib is None:
        pytest.skip("no NVRTC library here (pip install nvidia-cuda-nvrtc)")
    jobs = list(itertools.product(kernels.SOURCES, ARCHS))
    # each compilation is one foreign call that releases the GIL: two at a time on two cores
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _compile(lib, *job), jobs))
    for path, arch, ok, log, names, lowered in results:
        assert names, path
        assert ok, f"{path} for {arch}:\n{log}"
        assert sorted(lowered) == sorted(names), (path, arch)
        assert all(symbol.startswith("_ZN6laplex") for symbol in lowered.values())
