"""Print the Open-in-Colab badge of each notebook, or (--cell) the notebooks' set-up cell, from the
repository URL in pyproject.toml ([project.urls] Repository), its one place.

    python scripts/colab_badges.py           # one Markdown line per notebook
    python scripts/colab_badges.py --table   # the README's table (one row)
    python scripts/colab_badges.py --cell    # the first code cell of every notebook
"""
from __future__ import annotations

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
    return f"https://colab.research.google.com/github/{url.split('github.com/')[1]}/blob/{branch}/notebooks/{notebook}.ipynb"


def badge(url: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE})]({colab_url(url, notebook)})"


def setup_cell(url: str) -> str:
    """The notebooks' first code cell: clone the kit when it is not here, then scripts/colab_setup.py's setup()."""
    return "\n".join([
        "# Set-up (Colab or any fresh kernel): clones the kit if it is not here, installs what is missing (never torch),",
        "# makes it importable without a restart, and finds the device (KIT_DEVICE: \"cuda\" or \"cpu\").",
        "import os, runpy, subprocess",
        'KIT = next((p for p in (".", "..") if os.path.isfile(p + "/scripts/colab_setup.py")), "attn2mask-kit")',
        "if not os.path.isdir(KIT):",
        f'    subprocess.run(["git", "clone", "-q", "--depth", "1", "{url}", KIT], check=True)',
        'KIT_DEVICE = runpy.run_path(KIT + "/scripts/colab_setup.py")["setup"](KIT)',
    ])


if __name__ == "__main__":
    url = repo_url()
    if "--cell" in sys.argv:
        print(setup_cell(url))
    elif "--table" in sys.argv:
        names = notebooks()
        print("| " + " | ".join(f"`{n[:2]}`" for n in names) + " |\n|" + "---|" * len(names))
        print("| " + " | ".join(badge(url, n) for n in names) + " |")
    else:
        print("\n".join(f"{n}: {badge(url, n)}" for n in notebooks()))
