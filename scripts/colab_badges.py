"""The Open-in-Colab badges and the notebooks' set-up cell, from the repository URL in pyproject.toml
([project.urls] Repository), their one place. To point them at a published copy of the kit, change that
URL and run ``--write``.

    python scripts/colab_badges.py           # one Markdown line per notebook
    python scripts/colab_badges.py --table   # the README's table
    python scripts/colab_badges.py --cell    # the first code cell of every notebook
    python scripts/colab_badges.py --write   # put both in place: every notebook's set-up cell, the README's table
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def repo_url(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The repository's URL, e.g. https://github.com/OWNER/NAME."""
    return tomllib.loads(pyproject.read_text())["project"]["urls"]["Repository"].rstrip("/")


def notebooks() -> list[str]:
    return sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def colab_url(url: str, notebook: str, branch: str = "main") -> str:
    """The Colab address that opens ``notebooks/<notebook>.ipynb`` of the GitHub repository ``url``."""
    repo = url.split("github.com/")[1]
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{notebook}.ipynb"


def badge(url: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE})]({colab_url(url, notebook)})"


def table(url: str) -> str:
    """The README's table: one column per notebook, its number over its badge."""
    names = notebooks()
    return "\n".join(["| " + " | ".join(f"`{n[:2]}`" for n in names) + " |", "|" + "---|" * len(names),
                      "| " + " | ".join(badge(url, n) for n in names) + " |"])


def setup_cell(url: str) -> str:
    """The notebooks' first code cell: the kit found here, one folder up or in a folder here (an uploaded copy),
    else cloned from ``url``; then scripts/colab_setup.py's setup()."""
    return "\n".join([
        "# Set-up (Colab or any fresh kernel): uses the kit here, one folder up or uploaded into a folder here, else",
        "# clones it; installs what is missing (never torch), imports it without a restart, sets KIT_DEVICE.",
        "import glob, os, runpy, subprocess",
        'found = [p for p in [".", "..", *sorted(glob.glob("*"))] if os.path.isfile(p + "/scripts/colab_setup.py")]',
        'KIT = found[0] if found else "attn2mask-kit"',
        "if not found:",
        f'    subprocess.run(["git", "clone", "-q", "--depth", "1", "{url}", KIT], check=True)',
        'KIT_DEVICE = runpy.run_path(KIT + "/scripts/colab_setup.py")["setup"](KIT)',
    ])


def write(url: str) -> None:
    """Put the set-up cell into every notebook (its second cell) and the badges into the README's table."""
    import nbformat

    for name in notebooks():
        path = REPO / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells[1].source = setup_cell(url)
        nbformat.write(nb, path)
    readme = REPO / "README.md"
    head = r"\| `00` \|.*\n\|(?:---\|)+\n\| \[!\[Open In Colab\].*"
    readme.write_text(re.sub(head, lambda _: table(url), readme.read_text(), count=1))


if __name__ == "__main__":
    url = repo_url()
    if "--cell" in sys.argv:
        print(setup_cell(url))
    elif "--table" in sys.argv:
        print(table(url))
    elif "--write" in sys.argv:
        write(url)
    else:
        print("\n".join(f"{n}: {badge(url, n)}" for n in notebooks()))
