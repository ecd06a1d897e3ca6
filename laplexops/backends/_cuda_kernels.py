"""The CUDA kernel sources and the template instances the CuPy backend uses.

This module imports nothing beyond the standard library, so that CI (``.ci/run``) can emit a
translation unit instantiating every kernel the backend may launch and compile it with nvcc for
each target architecture, without CuPy or a GPU::

    python laplexops/backends/_cuda_kernels.py DIR   # writes DIR/laplex_instances.cu

The launch geometry is defined here, once, and reaches the sources as ``-D`` options.
"""

from __future__ import annotations

import itertools
import os
import sys

__all__ = [
    "SOURCE",
    "GRAM_SOURCE",
    "SOURCES",
    "source_of",
    "GEOMETRY",
    "PHASE_REDUCE",
    "PHASE_WRITE",
    "options",
    "ctype",
    "map_bytes",
    "splits_name",
    "tiles_name",
    "carries_name",
    "sort_windows_name",
    "window_seams_name",
    "radix_tile",
    "radix_counts_name",
    "radix_scatter_name",
    "SNAPSHOT_PAIRS",
    "snapshot_name",
    "GRAM_REDUCE",
    "GRAM_WRITE",
    "GRAM_AFFINE",
    "GRAM_VARIANCE",
    "GRAM_AFFINE_CARRIES",
    "GRAM_VARIANCE_CARRIES",
    "all_names",
    "instantiation_source",
]

#: the kernel sources, next to this module: the products and plans, and LaplexGram's filter
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "laplex_scan.cu")
GRAM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "laplex_gram.cu")
SOURCES = (SOURCE, GRAM_SOURCE)

#: The launch geometry, one ``-D`` option per key (``docs/gpu-validation.md`` explains each
#: choice and how the variants are timed, ``docs/scripts/gpu_variants.py``):
GEOMETRY = {
    # threads per scan block and items per thread (a tile is their product); 9 items, an odd
    # count, so that the threads of a warp, each reading its own run of a tile's shared memory,
    # fall into 32 different banks
    "LAPLEX_BLOCK": 128,
    "LAPLEX_ITEMS": 9,
    # threads of a carry block (phase 2), each composing a run of tile maps
    "LAPLEX_CARRY_BLOCK": 256,
    # threads of a window sort and the run of items each sorts in registers (a window is their
    # product, a power of two), and the merge-split rounds before a window still out of order goes
    # through the bitonic network
    "LAPLEX_SORT_BLOCK": 128,
    "LAPLEX_SORT_ITEMS": 8,
    "LAPLEX_SORT_ROUNDS": 64,
    # threads of a radix sort block (whole warps) and keys per thread (a radix tile is their
    # product; half as many keys for pairs of a key and an index wider than 8 bytes, see
    # ``radix_tile``)
    "LAPLEX_RADIX_BLOCK": 256,
    "LAPLEX_RADIX_ITEMS": 16,
    # a spare shared-memory word after every 32 of a scan tile, against bank conflicts: off, the
    # odd item count already avoids them and the padding costs registers
    "LAPLEX_PAD": 0,
    # phase 1 reduces a tile from its columns alone (a row adds nothing to the tile's maps): on,
    # it reads fewer bytes and merges nothing
    "LAPLEX_LEAN_PHASE1": 1,
    # scan blocks that must fit on a multiprocessor (a cap on the scan kernel's registers): 0, the
    # compiler's choice; -1, 8 for the real float32 product without moments (which fits 64
    # registers without spilling) and the compiler's choice for the other instances
    "LAPLEX_TILE_MIN_BLOCKS": -1,
}

#: ``laplex_tiles``' ``phase`` argument: reduce every tile to its two maps (forward and backward),
#: phase 1 of the three-phase scan
PHASE_REDUCE = 1
#: ``laplex_tiles``' ``phase`` argument: rescan every tile from the states entering it (phase 2's
#: output, ``laplex_carries``) and write the rows' reductions, phase 3
PHASE_WRITE = 3

_CTYPES = {
    "float32": "float",
    "float64": "double",
    "complex64": "laplex::cx<float>",
    "complex128": "laplex::cx<double>",
    "int32": "int",
    "int64": "long long",
}
_REALS = ("float32", "float64")
_ITEMSIZE = {
    "float32": 4,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
    "int32": 4,
    "int64": 8,
}
_COMPLEX_OF = {"float32": "complex64", "float64": "complex128"}


def options(geometry: dict | None = None) -> tuple[str, ...]:
    """Compiler options defining the launch geometry (``GEOMETRY`` unless given)."""
    return tuple(f"-D{key}={value}" for key, value in (geometry or GEOMETRY).items())


def ctype(dtype_name: str) -> str:
    """The C++ type of a NumPy dtype name in the kernels."""
    return _CTYPES[dtype_name]


def map_bytes(real: str, decay: str, value: str) -> int:
    """``sizeof(Agg<D, R, V>)``, the bytes of one tile map of the kernels (a ``static_assert`` in
    ``laplex_tiles`` holds the kernels to this): the decay, three values, two reals."""
    return _ITEMSIZE[decay] + 3 * _ITEMSIZE[value] + 2 * _ITEMSIZE[real]


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def splits_name(real: str) -> str:
    return f"laplex::laplex_splits<{ctype(real)}>"


def tiles_name(real: str, decay: str, operand: str, value: str, index: str, moment: bool) -> str:
    return (
        f"laplex::laplex_tiles<{ctype(real)}, {ctype(decay)}, {ctype(operand)}, "
        f"{ctype(value)}, {ctype(index)}, {_bool(moment)}>"
    )


def carries_name(real: str, decay: str, value: str, moment: bool) -> str:
    return f"laplex::laplex_carries<{ctype(real)}, {ctype(decay)}, {ctype(value)}, {_bool(moment)}>"


def sort_windows_name(real: str, index: str) -> str:
    return f"laplex::laplex_sort_windows<{ctype(real)}, {ctype(index)}>"


def window_seams_name(real: str, index: str) -> str:
    return f"laplex::laplex_window_seams<{ctype(real)}, {ctype(index)}>"


#: (source, snapshot) float pairs of ``laplex_snapshot``: anchors keep their type or widen
SNAPSHOT_PAIRS = (("float32", "float32"), ("float32", "float64"), ("float64", "float64"))


def snapshot_name(source: str, real: str) -> str:
    return f"laplex::laplex_snapshot<{ctype(source)}, {ctype(real)}>"


def radix_tile(geometry: dict, real: str, index: str) -> int:
    """Keys per radix tile (``RadixTile<R, I>::SIZE`` of the kernels) for this geometry."""
    items = geometry["LAPLEX_RADIX_ITEMS"]
    pair = _ITEMSIZE[real] + _ITEMSIZE[index]
    return geometry["LAPLEX_RADIX_BLOCK"] * (items if pair <= 8 else items // 2)


def radix_counts_name(real: str, index: str) -> str:
    return f"laplex::laplex_radix_counts<{ctype(real)}, {ctype(index)}>"


def radix_scatter_name(real: str, index: str) -> str:
    return f"laplex::laplex_radix_scatter<{ctype(real)}, {ctype(index)}>"


#: the Gram's kernels (``laplex_gram.cu``): ``phase`` of its tile kernels, phase 1 (each tile's
#: maps) and phase 3 (the outputs, from the states entering the tiles)
GRAM_REDUCE = 1
GRAM_WRITE = 3
#: the affine scan's tiles, the variance recursion's tiles, and the carries of each
GRAM_AFFINE = "laplex::gram::gram_affine_tiles"
GRAM_VARIANCE = "laplex::gram::gram_variance_tiles"
GRAM_AFFINE_CARRIES = "laplex::gram::gram_carries<laplex::gram::Affine, double>"
GRAM_VARIANCE_CARRIES = "laplex::gram::gram_carries<laplex::gram::Mobius, laplex::gram::Pair>"
_GRAM_NAMES = (GRAM_AFFINE, GRAM_VARIANCE, GRAM_AFFINE_CARRIES, GRAM_VARIANCE_CARRIES)


def source_of(name: str) -> str:
    """The source file defining the kernel instance ``name``."""
    return GRAM_SOURCE if name.startswith("laplex::gram::") else SOURCE


def all_names() -> list[str]:
    """Every template instance the backend can launch."""
    names = [snapshot_name(source, real) for source, real in SNAPSHOT_PAIRS]
    names += _GRAM_NAMES
    for real in _REALS:
        cplx = _COMPLEX_OF[real]
        names.append(splits_name(real))
        for index in ("int32", "int64"):
            names.append(window_seams_name(real, index))
            names.append(sort_windows_name(real, index))
            names.append(radix_counts_name(real, index))
            names.append(radix_scatter_name(real, index))
        for decay, operand, moment in itertools.product((real, cplx), (real, cplx), (False, True)):
            value = cplx if cplx in (decay, operand) else real
            for index in ("int32", "int64"):
                names.append(tiles_name(real, decay, operand, value, index, moment))
            names.append(carries_name(real, decay, value, moment))
    return sorted(set(names))


def instantiation_source() -> str:
    """A translation unit that instantiates every kernel of ``all_names()`` (for nvcc in CI)."""
    lines = [f'#include "{path}"' for path in SOURCES]
    lines += ["", "void* const laplex_instances[] = {"]
    lines += [f"    (void*)&{name}," for name in all_names()]
    lines += ["};", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - used by .ci/run
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    path = os.path.join(out, "laplex_instances.cu")
    with open(path, "w") as fh:
        fh.write(instantiation_source())
    print(path)
    print(" ".join(options()))
