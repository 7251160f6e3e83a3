"""The core (``a2m_utils/*.py``) never imports its plugins: the toy world and the study register
themselves (``a2m_utils.registry``), so the kit works on any pipeline without them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "a2m_utils"
CORE = sorted(PACKAGE.glob("*.py"))
PLUGINS = ("a2m_utils.toy", "a2m_utils.study")


def imported(source: str, package: str = "a2m_utils") -> set[str]:
    """Every module a source file imports, relative imports resolved against ``package``
    (``from . import toy`` gives ``a2m_utils.toy``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def plugin_imports(source: str) -> list[str]:
    return sorted(n for n in imported(source) if any(n == p or n.startswith(p + ".") for p in PLUGINS))


@pytest.mark.parametrize("source", [
    "import a2m_utils.toy", "import a2m_utils.study.runner as r", "from a2m_utils.toy.world import TOY",
    "from .toy import world", "from .study.report import REPO", "from . import toy", "from . import masks, study",
    "from a2m_utils import toy", "def f():\n    from .toy import load_toy\n",
])
def test_the_check_finds_every_form_of_import(source):
    assert plugin_imports(source)


@pytest.mark.parametrize("source", ["from . import masks", "from .tokens import words", "import toy",
                                    "from .toys import x", "from a2m_utils.trace import trace"])
def test_the_check_passes_other_imports(source):
    assert not plugin_imports(source)


def test_the_core_imports_neither_the_toy_world_nor_the_study():
    assert len(CORE) > 15 and {p.name for p in CORE} >= {"trace.py", "registry.py", "dataset.py", "__init__.py"}
    found = {p.name: plugin_imports(p.read_text()) for p in CORE}
    assert not {k: v for k, v in found.items() if v}


def test_the_study_reaches_the_toy_world_only_through_the_registry():
    """A study is a combination of datasets and a pipeline; the toy world is one such combination,
    registered by its plugin, so the study's modules never import it (docs/architecture.md: notebooks -> study -> core)."""
    study = sorted((PACKAGE / "study").glob("*.py"))
    assert {p.name for p in study} >= {"combination.py", "experiments.py", "runner.py"}
    found = {p.name: [n for n in imported(p.read_text(), "a2m_utils.study") if n.startswith("a2m_utils.toy")]
             for p in study}
    assert not {k: v for k, v in found.items() if v}
