"""Write the small Sphinx inventories (``objects.inv``, format version 2) that let the docs link to
Python, NumPy, SciPy and CuPy without network access at build time.

``docs/conf.py`` points ``intersphinx_mapping`` at the files this script writes here (the inventory
location) and at the projects' published docs (the link target). Each table below lists the
objects the docs refer to, with the page of the published docs that documents them, relative to
that project's root URL. Add an entry when the docs name a new object (a Sphinx build with
``nitpicky = True``, as ``conf.py`` sets it, fails on a reference no inventory resolves), then
run ``python docs/_intersphinx/make_inventories.py`` and commit the ``.inv`` files.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, Sphinx domain:role, page relative to the project's root URL); the anchor is the name
# itself unless the page is given with one ("#..."), as Sphinx's own inventories write it
Entry = tuple[str, str, str]

PYTHON: list[Entry] = [
    ("bool", "py:class", "library/functions.html"),
    ("complex", "py:class", "library/functions.html"),
    ("dict", "py:class", "library/stdtypes.html"),
    ("float", "py:class", "library/functions.html"),
    ("int", "py:class", "library/functions.html"),
    ("list", "py:class", "library/stdtypes.html"),
    ("object", "py:class", "library/functions.html"),
    ("str", "py:class", "library/stdtypes.html"),
    ("tuple", "py:class", "library/stdtypes.html"),
    ("None", "py:data", "library/constants.html"),
    ("ValueError", "py:exception", "library/exceptions.html"),
    ("TypeError", "py:exception", "library/exceptions.html"),
    ("KeyError", "py:exception", "library/exceptions.html"),
    ("RuntimeError", "py:exception", "library/exceptions.html"),
    ("MemoryError", "py:exception", "library/exceptions.html"),
    ("ImportError", "py:exception", "library/exceptions.html"),
    ("collections.abc.Callable", "py:class", "library/collections.abc.html"),
    ("collections.abc.Iterator", "py:class", "library/collections.abc.html"),
    ("contextlib.contextmanager", "py:function", "library/contextlib.html"),
    ("enum.IntEnum", "py:class", "library/enum.html"),
    ("typing.Any", "py:data", "library/typing.html"),
    ("typing.NamedTuple", "py:class", "library/typing.html"),
    ("typing.Protocol", "py:class", "library/typing.html"),
    ("typing.runtime_checkable", "py:function", "library/typing.html"),
]

NUMPY: list[Entry] = [
    ("numpy", "py:module", "reference/index.html#module-numpy"),
    ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html"),
    ("numpy.dtype", "py:class", "reference/generated/numpy.dtype.html"),
    ("numpy.result_type", "py:function", "reference/generated/numpy.result_type.html"),
    ("numpy.argsort", "py:function", "reference/generated/numpy.argsort.html"),
    ("numpy.float32", "py:attribute", "reference/arrays.scalars.html"),
    ("numpy.float64", "py:attribute", "reference/arrays.scalars.html"),
    ("numpy.complex64", "py:attribute", "reference/arrays.scalars.html"),
    ("numpy.complex128", "py:attribute", "reference/arrays.scalars.html"),
    ("numpy.fft.rfft", "py:function", "reference/generated/numpy.fft.rfft.html"),
    (
        "numpy.linalg.LinAlgError",
        "py:exception",
        "reference/generated/numpy.linalg.LinAlgError.html",
    ),
]

SCIPY: list[Entry] = [
    (f"scipy.sparse.linalg.{name}", role, f"reference/generated/scipy.sparse.linalg.{name}.html")
    for name, role in (
        ("LinearOperator", "py:class"),
        ("aslinearoperator", "py:function"),
        ("cg", "py:function"),
        ("gmres", "py:function"),
        ("lsqr", "py:function"),
        ("eigsh", "py:function"),
    )
] + [
    ("scipy.fft.set_backend", "py:function", "reference/generated/scipy.fft.set_backend.html"),
]

CUPY: list[Entry] = [
    ("cupy.ndarray", "py:class", "reference/generated/cupy.ndarray.html"),
    ("cupy.argsort", "py:function", "reference/generated/cupy.argsort.html"),
    ("cupy.fft.fft", "py:function", "reference/generated/cupy.fft.fft.html"),
    ("cupy.RawModule", "py:class", "reference/generated/cupy.RawModule.html"),
    ("cupy.cuda.Stream", "py:class", "reference/generated/cupy.cuda.Stream.html"),
] + [
    (
        f"cupyx.scipy.sparse.linalg.{name}",
        role,
        f"reference/generated/cupyx.scipy.sparse.linalg.{name}.html",
    )
    for name, role in (
        ("LinearOperator", "py:class"),
        ("cg", "py:function"),
        ("gmres", "py:function"),
    )
]

TORCH: list[Entry] = [
    ("torch.Tensor", "py:class", "tensors.html"),
    ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html"),
    ("torch.compile", "py:function", "generated/torch.compile.html"),
]

JAX: list[Entry] = [
    (f"jax.{name}", "py:function", f"_autosummary/jax.{name}.html")
    for name in (
        "custom_vjp",
        "grad",
        "jit",
        "jvp",
        "pure_callback",
        "test_util.check_grads",
        "vjp",
        "vmap",
    )
]

PROJECTS = {
    "python": ("Python", "3", PYTHON),
    "numpy": ("NumPy", "stable", NUMPY),
    "scipy": ("SciPy", "stable", SCIPY),
    "cupy": ("CuPy", "stable", CUPY),
    "torch": ("PyTorch", "stable", TORCH),
    "jax": ("JAX", "latest", JAX),
}


def inventory(project: str, version: str, entries: list[Entry]) -> bytes:
    """The bytes of a Sphinx v2 inventory: four header lines, then the zlib-compressed entries
    ``name domain:role priority uri display-name`` (``-``: the name itself)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = []
    for name, role, page in sorted(entries):
        uri = page if "#" in page else f"{page}#{name}"
        lines.append(f"{name} {role} 1 {uri} -\n")
    return header.encode() + zlib.compress("".join(lines).encode(), 9)


def main() -> None:
    for stem, (project, version, entries) in PROJECTS.items():
        path = HERE / f"{stem}.inv"
        path.write_bytes(inventory(project, version, entries))
        print(f"{path.name}: {len(entries)} objects")


if __name__ == "__main__":
    main()
