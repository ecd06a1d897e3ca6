"""Sphinx configuration of the laplexops documentation site.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``. The
Markdown pages are read by myst-parser, the API reference is generated from the numpydoc
docstrings. Cross-references to Python, NumPy, SciPy and CuPy resolve offline, from the small
inventories in ``_intersphinx/`` (written by ``_intersphinx/make_inventories.py``), and link to
those projects' published documentation.
"""

from __future__ import annotations

import importlib.util

import laplexops

project = "laplexops"
author = "the laplexops developers"
copyright = "2026, the laplexops developers"
release = laplexops.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/scripts holds the measurement scripts of the GPU pages, not pages
exclude_patterns = ["_build", "scripts", "_intersphinx", "**/__pycache__"]
# the API pages of the integrations need their framework to import the module they document
exclude_patterns += [
    f"api-{framework}.rst"
    for framework in ("torch", "jax", "sklearn")
    if importlib.util.find_spec(framework) is None
]

# every cross-reference must resolve (against this site or an inventory below)
nitpicky = True

# ---------------------------------------------------------------- Markdown (myst-parser)
myst_heading_anchors = 3  # [text](page.md#a-heading) links to headings down to level 3

# ---------------------------------------------------------------- API reference
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False  # the summaries link to entries of api.rst, no stub pages
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ---------------------------------------------------------------- intersphinx, offline
# (target: the published docs; inventory: a local file, so that the build needs no network)
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_intersphinx/python.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_intersphinx/numpy.inv"),
    "scipy": ("https://docs.scipy.org/doc/scipy/", "_intersphinx/scipy.inv"),
    "cupy": ("https://docs.cupy.dev/en/stable/", "_intersphinx/cupy.inv"),
    "torch": ("https://docs.pytorch.org/docs/stable/", "_intersphinx/torch.inv"),
    "jax": ("https://docs.jax.dev/en/latest/", "_intersphinx/jax.inv"),
}

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"laplexops {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
