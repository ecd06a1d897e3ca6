"""The documentation's code: every ```python block of every page under docs/ runs, the blocks of a
page in order in one namespace (as a reader would paste them), so that no page shows code that
fails. A block that imports an optional framework (torch, jax, scikit-learn, CuPy) not installed
here is passed over; a page that starts with one is skipped whole."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
OPTIONAL = {
    "torch": "torch",
    "jax": "jax",
    "sklearn": "sklearn",
    "cupy": "cupy",
    "matplotlib": "matplotlib",
}


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_the_docs_have_code():
    assert len(pages()) >= 3, [p.name for p in pages()]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # figures are drawn, not shown
    monkeypatch.chdir(tmp_path)  # files a page writes go to a scratch folder
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for i, source in enumerate(blocks(page)):
        if missing(source):  # a framework not installed here: the GPU section of a CPU page, or
            if not ran:  # a page about that framework, whose later blocks build on its first
                break
            continue
        try:
            exec(compile(source, f"{page.name} block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"{page.name}, block {i + 1} failed:\n{source}") from exc
        ran += 1
    if not ran:
        pytest.skip(f"{page.name} starts with a block for a framework that is not installed")


def missing(source: str) -> list[str]:
    """The optional frameworks a block imports that cannot be imported here."""
    wanted = [
        module
        for module in OPTIONAL
        if re.search(rf"^\s*(import|from) {module}\b", source, re.MULTILINE)
    ]
    return [module for module in wanted if importlib.util.find_spec(module) is None]
