"""The CUDA kernels of laplexops compiled for the host (``emulate.h``), behind the interface of
``laplexops.backends._cupy.RawModuleKernels``: the GPU backend's host code and kernels run on the
CPU with NumPy arrays. Needs a C++20 compiler (g++); built once per source and geometry, cached in
the temporary directory."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from laplexops.backends import _cuda_kernels as cuda

HERE = os.path.dirname(os.path.abspath(__file__))

#: a small geometry: many tiles, carry chunks and sort windows even for short inputs
SMALL = {
    "LAPLEX_BLOCK": 8,
    "LAPLEX_ITEMS": 4,
    "LAPLEX_CARRY_BLOCK": 4,
    "LAPLEX_SORT_BLOCK": 4,
    "LAPLEX_SORT_ITEMS": 4,
    "LAPLEX_SORT_ROUNDS": 4,
    "LAPLEX_RADIX_BLOCK": 32,
    "LAPLEX_RADIX_ITEMS": 2,
    "LAPLEX_PAD": 1,
    "LAPLEX_LEAN_PHASE1": 1,
}


#: extra compiler flags for the host build, e.g. ``-fsanitize=thread -g`` (then run Python with
#: ``LD_PRELOAD=$(g++ -print-file-name=libtsan.so)``): ThreadSanitizer sees the emulated threads
#: of a block share its shared memory, so a read not ordered after another thread's write by a
#: barrier (``__syncthreads``, ``__syncwarp``, a warp exchange) is reported as a data race
EXTRA_FLAGS = "LAPLEXOPS_HOST_CXXFLAGS"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


class HostKernels:
    """``get(name)(grid, block, args)`` runs the kernel instance ``name`` on the host."""

    def __init__(self, geometry: dict | None = None):
        self.geometry = dict(geometry or cuda.GEOMETRY)
        self._names = cuda.all_names()
        self._index = {name: i for i, name in enumerate(self._names)}
        self._lib = ctypes.CDLL(self._build())
        self._functions: dict = {}
        self.launches: list[str] = []  # every kernel launched, for tests of what ran

    def _build(self) -> str:
        source = ""
        for path in cuda.SOURCES:
            with open(path) as fh:
                source += fh.read()
        with open(os.path.join(HERE, "emulate.h")) as fh:
            header = fh.read()
        unit = [
            "#include <math.h>",
            f'#include "{os.path.join(HERE, "emulate.h")}"',
            *(f'#include "{path}"' for path in cuda.SOURCES),
            '#define EXPORT __attribute__((visibility("default")))',
            'extern "C" {',
        ]
        for i, name in enumerate(self._names):
            unit.append(
                f"EXPORT void laplex_run_{i}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, "
                f"unsigned by, unsigned bz, void** args) "
                f"{{ emu::launch(&{name}, {{gx, gy, gz}}, {{bx, by, bz}}, args); }}"
            )
            unit.append(
                f"EXPORT int laplex_sizes_{i}(long long* out) "
                f"{{ return emu::sizes(&{name}, out); }}"
            )
        unit.append("}")
        text = "\n".join(unit)
        # each geometry's build keeps its symbols (the shared-memory statics above all) to itself
        flags = [
            "-std=c++20",
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
            "-w",
            "-fvisibility=hidden",
            "-fvisibility-inlines-hidden",
            "-fno-gnu-unique",
            *cuda.options(self.geometry),
            *os.environ.get(EXTRA_FLAGS, "").split(),
        ]
        key = hashlib.sha256("\0".join([source, header, text, *flags]).encode()).hexdigest()[:16]
        folder = os.path.join(tempfile.gettempdir(), "laplexops-host-kernels")
        os.makedirs(folder, exist_ok=True)
        lib = os.path.join(folder, f"{key}.so")
        if not os.path.exists(lib):
            src = os.path.join(folder, f"{key}.cpp")
            with open(src, "w") as fh:
                fh.write(text)
            tmp = f"{lib}.{os.getpid()}"
            subprocess.run([compiler(), *flags, "-o", tmp, src], check=True)
            os.replace(tmp, lib)
        return lib

    def get(self, name: str):
        fn = self._functions.get(name)
        if fn is None:
            i = self._index[name]
            run = getattr(self._lib, f"laplex_run_{i}")
            sizes = (ctypes.c_longlong * 64)()
            count = getattr(self._lib, f"laplex_sizes_{i}")(sizes)
            fn = self._functions[name] = _Launcher(name, run, list(sizes[:count]), self.launches)
        return fn


class _Launcher:
    def __init__(self, name, run, sizes, log):
        self.name, self._run, self._sizes, self._log = name, run, sizes, log

    def __call__(self, grid, block, args):
        if len(args) != len(self._sizes):
            raise TypeError(f"{self.name} takes {len(self._sizes)} arguments; got {len(args)}")
        keep, pointers = [], (ctypes.c_void_p * len(args))()
        for i, (arg, size) in enumerate(zip(args, self._sizes)):
            if isinstance(arg, np.ndarray):
                cell = ctypes.c_void_p(arg.ctypes.data)
                given = 8
            elif isinstance(arg, np.generic):
                cell = ctypes.create_string_buffer(arg.tobytes(), arg.itemsize)
                given = arg.itemsize
            else:
                raise TypeError(
                    f"argument {i} of {self.name}: pass NumPy arrays or NumPy "
                    f"scalars of the exact C type; got {type(arg).__name__}"
                )
            if given != size:
                raise TypeError(
                    f"argument {i} of {self.name} has {given} bytes, the kernel expects {size}"
                )
            keep.append(cell)
            pointers[i] = ctypes.addressof(cell)
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        self._log.append(self.name)
        self._run(*(ctypes.c_uint(v) for v in grid + block), pointers)
