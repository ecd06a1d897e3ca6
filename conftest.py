"""Doctest namespace: the docstring examples of the package, like NumPy's, assume
``import numpy as np`` and ``import laplexops as lx``."""

import numpy as np
import pytest

import laplexops as lx


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["lx"] = lx
