"""Set up the kit in a running Python (Colab or any fresh kernel), with the standard library only.

Each notebook's first cell runs this file, before the kit is importable: it finds or clones the
kit, installs the requirements that are missing without ever replacing the installed torch and
torchvision (Colab's own CUDA build stays), and makes the kit importable in the same process, so
no restart is needed. ``python scripts/colab_setup.py`` does the same from a shell.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import site
import subprocess
import sys
import tempfile
from pathlib import Path

FOLDER = "attn2mask-kit"
PINNED = ("torch", "torchvision")  # never installed or upgraded here


def find_kit(start: str | Path = ".", folder: str = FOLDER) -> Path | None:
    """The checkout holding ``a2m_utils/`` and ``pyproject.toml``: ``start``, a parent of it, or ``start/folder``."""
    start = Path(start).resolve()
    for p in (start, *start.parents, start / folder):
        if (p / "a2m_utils").is_dir() and (p / "pyproject.toml").is_file():
            return p
    return None


def requirements(pyproject: Path) -> list[str]:
    """``[project] dependencies`` of a pyproject.toml."""
    text = Path(pyproject).read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the list is plain quoted strings
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.DOTALL | re.MULTILINE).group(1)
        return re.findall(r'"([^"]+)"', block)
    return tomllib.loads(text)["project"]["dependencies"]


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1)).lower()


def _met(req: str, version: str) -> bool:
    """Whether the installed ``version`` meets ``req``'s specifier (True when pip's packaging is absent)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            return True
    r = Requirement(req)
    return r.specifier.contains(version, prereleases=True)


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def missing(reqs: list[str]) -> list[str]:
    """The requirements that what is installed does not meet; torch and torchvision are never listed."""
    return [r for r in reqs if _name(r) not in PINNED and ((v := _version(_name(r))) is None or not _met(r, v))]


def _loaded(name: str) -> bool:
    """Whether this process has imported a module of the installed distribution ``name``."""
    return any(m in sys.modules and name in map(_name, ds) for m, ds in md.packages_distributions().items())


def constraints() -> str:
    """pip constraints pinning torch and torchvision to the installed versions; RuntimeError if one is absent."""
    absent = [name for name in PINNED if _version(name) is None]
    if absent:
        raise RuntimeError(f"{' and '.join(absent)} not installed, and this set-up never installs them: on Colab "
                           "they are preinstalled; on your machine run `bash scripts/setup.sh`, or install the "
                           "torch and torchvision builds for your hardware first")
    return "".join(f"{name}=={_version(name)}\n" for name in PINNED)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def _activate(kit: Path) -> None:
    """Make the kit and what pip just installed importable in this process (no restart)."""
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    for d in dirs:  # e.g. a user site that pip created just now
        if os.path.isdir(d) and d not in sys.path:
            site.addsitedir(d)
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("a2m_utils")
    if spec is None or not Path(spec.origin).resolve().is_relative_to(kit):
        sys.path.insert(0, str(kit))
        importlib.invalidate_caches()


def setup(kit: str | Path | None = None, repo_url: str | None = None, folder: str = FOLDER) -> str:
    """Find ``kit`` (default: ``find_kit()``, else clone ``repo_url`` into ``folder``), install what is missing
    with torch and torchvision held at their installed versions, make the kit importable here, and return
    the device: "cuda" when torch sees a GPU, else "cpu"."""
    pins = constraints()  # fails before anything is cloned or installed when torch is absent
    how = "found"
    if kit is None and (kit := find_kit(".", folder)) is None:
        if not repo_url:
            raise RuntimeError(f"no kit checkout in {os.getcwd()}, its parents or ./{folder}, and no repo_url to clone")
        subprocess.run(["git", "clone", "-q", "--depth", "1", repo_url, folder], check=True)
        kit, how = folder, "cloned"
    kit = Path(kit).resolve()
    todo = missing(requirements(kit / "pyproject.toml"))
    held = [r for r in todo if _version(_name(r)) is not None and _loaded(_name(r))]  # e.g. Colab's own ipykernel
    todo = [r for r in todo if r not in held]
    for r in held:
        print(f"kept {_name(r)} {_version(_name(r))}, imported by this kernel "
              f"(the kit asks {r}; upgrading needs a restart)")
    with_kit = _version("a2m-utils") is None  # its metadata carries the toy world's entry point
    if todo or with_kit:
        print(f"installing {', '.join(map(_name, todo)) or 'the kit'} (a few minutes; torch stays)", flush=True)
        before = {d.metadata["Name"]: d.version for d in md.distributions()}
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(pins)
        try:
            if todo:
                _pip("-c", f.name, *todo)
            if with_kit:
                _pip("--no-deps", "-e", str(kit))
        finally:
            os.unlink(f.name)
        _stale(before)
    _activate(kit)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"kit {how} at {os.path.relpath(kit)}; {len(todo)} packages installed{' and the kit' if with_kit else ''}; "
          f"torch {torch.__version__} kept; device {device}")
    return device


def _stale(before: dict[str, str]) -> None:
    """Warn when pip replaced a package that this process has already imported (only a restart reloads it)."""
    importlib.invalidate_caches()
    changed = {d.metadata["Name"] for d in md.distributions() if before.get(d.metadata["Name"], d.version) != d.version}
    loaded = sorted(m for m, ds in md.packages_distributions().items() if m in sys.modules and changed & set(ds))
    if loaded:
        print(f"warning: {', '.join(loaded)} changed after being imported: restart the runtime and run this cell again")


if __name__ == "__main__":
    setup(Path(__file__).resolve().parents[1])
