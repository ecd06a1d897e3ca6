"""``import laplexops`` imports none of the optional frameworks (PyTorch, JAX, scikit-learn): their
integrations are the submodules ``laplexops.torch``, ``laplexops.jax`` and ``laplexops.sklearn``,
imported only when asked for. Checked in a fresh interpreter, where nothing else imported them."""

import importlib.util
import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "jax", "sklearn")


def _modules_after(statement: str) -> set[str]:
    """The top-level names of the modules a fresh interpreter holds after ``statement``."""
    listing = "print(' '.join({m.split('.')[0] for m in sys.modules}))"
    code = f"import sys\n{statement}\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return set(done.stdout.split())


def test_import_laplexops_imports_no_framework():
    loaded = _modules_after("import laplexops\nimport laplexops.backends")
    assert "laplexops" in loaded and "numpy" in loaded
    assert loaded.isdisjoint(FRAMEWORKS), sorted(loaded & set(FRAMEWORKS))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_integration_imports_its_framework(framework):
    """The check above can see a framework: importing its integration loads it."""
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    if importlib.util.find_spec(f"laplexops.{framework}") is None:
        pytest.skip(f"laplexops.{framework} does not exist yet")
    assert framework in _modules_after(f"import laplexops.{framework}")
