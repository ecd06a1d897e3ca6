"""Compile the kernel source with NVRTC the way CuPy's ``RawModule`` does (name expressions,
``-std=c++17`` and the launch geometry), without CuPy or a GPU: NVRTC is a host library. Found in
the ``nvidia-cuda-nvrtc`` wheel or a CUDA toolkit; ``None`` when there is none."""

from __future__ import annotations

import ctypes
import glob
import os
import sys


def library() -> ctypes.CDLL | None:
    candidates = []
    for base in sys.path:
        candidates += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")))
        candidates += sorted(
            glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
        )
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    for path in candidates:
        if "builtins" in os.path.basename(path):
            continue
        try:
            # NVRTC opens its builtins library by name at the first compile; a wheel's folder is
            # not on the loader's path, so load the one next to it first
            for builtins in sorted(
                glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))
            ):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def compile_names(lib: ctypes.CDLL, source: str, names: list[str], options: list[str]):
    """Compile ``source`` instantiating ``names``; returns ``(ok, log, lowered names)``."""
    prog = ctypes.c_void_p()
    _check(
        lib,
        lib.nvrtcCreateProgram(
            ctypes.byref(prog), source.encode(), b"laplex_scan.cu", 0, None, None
        ),
    )
    try:
        for name in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, name.encode()))
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        lowered = {}
        if status == 0:
            for name in names:
                out = ctypes.c_char_p()
                _check(lib, lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)))
                lowered[name] = out.value.decode()
        return status == 0, log.value.decode(errors="replace"), lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(lib, status):
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"NVRTC: {lib.nvrtcGetErrorString(status).decode()}")
