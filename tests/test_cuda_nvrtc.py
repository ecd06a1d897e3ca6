"""The kernel sources compile under NVRTC, as CuPy's RawModule compiles it on a GPU machine: every
template instance the backend can launch, by name expression, for sm_80 and sm_90. Runs without a
GPU (NVRTC is a host library, from the ``nvidia-cuda-nvrtc`` wheel of the test extra); CI also
compiles the same instances with nvcc (``.ci/run``)."""

import pytest

from cuda_host import nvrtc
from laplexops.backends import _cuda_kernels as kernels


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_instance_compiles_with_nvrtc(arch):
    lib = nvrtc.library()
    if lib is None:
        pytest.skip("no NVRTC library here (pip install nvidia-cuda-nvrtc)")
    for path in kernels.SOURCES:
        with open(path) as fh:
            source = fh.read()
        names = [name for name in kernels.all_names() if kernels.source_of(name) == path]
        assert names, path
        ok, log, lowered = nvrtc.compile_names(
            lib, source, names, ["-std=c++17", f"--gpu-architecture={arch}", *kernels.options()]
        )
        assert ok, log
        assert sorted(lowered) == sorted(names)
        assert all(symbol.startswith("_ZN6laplex") for symbol in lowered.values())
