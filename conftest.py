"""Doctest namespace and collection: the docstring examples of the package, like NumPy's, assume
``import numpy as np`` and ``import laplexops as lx``; the modules of the optional integrations
are collected only where their framework is installed (the README's test command installs none)."""

import importlib.util

import numpy as np
import pytest

import laplexops as lx

#: integration modules and the framework each needs
_INTEGRATIONS = {
    "laplexops/torch.py": "torch",
    "laplexops/jax.py": "jax",
    "laplexops/sklearn.py": "sklearn",
    "laplexops/backends/_dask.py": "distributed",
    "laplexops/dask.py": "distributed",
}

collect_ignore = [
    path for path, framework in _INTEGRATIONS.items() if importlib.util.find_spec(framework) is None
]


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["lx"] = lx
