"""The notebooks' set-up cell (scripts/colab_setup.py): its pure parts offline, and (slow) the cell itself in a
fresh virtual environment that has torch and no kit, as on Colab."""

import importlib.metadata as md
import importlib.util
import json
import re
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cs():
    """scripts/colab_setup.py as a module (a fresh one per test, so a test may patch its globals)."""
    spec = importlib.util.spec_from_file_location("colab_setup", REPO / "scripts" / "colab_setup.py")
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


@pytest.fixture
def badges():
    return runpy.run_path(str(REPO / "scripts" / "colab_badges.py"))


def fake_kit(root: Path, deps: list[str]) -> Path:
    (root / "a2m_utils").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "a2m-utils"\ndependencies = [\n'
                                         + "".join(f'    "{d}",\n' for d in deps) + "]\n")
    return root


def test_find_kit_from_the_checkout_a_notebook_folder_or_beside_it(cs, tmp_path):
    kit = fake_kit(tmp_path / "attn2mask-kit", [])
    assert cs.find_kit(kit) == kit
    assert cs.find_kit(kit / "notebooks") == kit  # a notebook runs from notebooks/
    assert cs.find_kit(tmp_path) == kit  # Colab: cloned under the working folder
    assert cs.find_kit(tmp_path, folder="other") is None
    assert cs.find_kit(REPO / "notebooks") == REPO


def test_requirements_read_the_project_dependencies_with_and_without_tomllib(cs, monkeypatch):
    reqs = cs.requirements(REPO / "pyproject.toml")
    assert "pydensecrf2==1.1" in reqs and any(r.startswith("torch>=") for r in reqs)
    assert not any(r.startswith(("pytest", "jupyterlab")) for r in reqs)  # the dev extra is not installed
    monkeypatch.setitem(sys.modules, "tomllib", None)  # Python 3.10
    assert cs.requirements(REPO / "pyproject.toml") == reqs


def test_missing_skips_what_is_installed_and_never_lists_torch(cs):
    reqs = ["numpy>=1.0", "NumPy>=999", "segmentation_models.pytorch>=0.1", "no-such-package-a2m>=1",
            "torch>=999", "torchvision==0.0.1"]
    assert cs.missing(reqs) == ["NumPy>=999", "no-such-package-a2m>=1"]
    assert cs.missing(cs.requirements(REPO / "pyproject.toml")) == []  # this .venv has everything


def test_constraints_pin_the_installed_torch_and_fail_clearly_without_it(cs):
    assert cs.constraints() == f"torch=={md.version('torch')}\ntorchvision=={md.version('torchvision')}\n"
    cs.PINNED = ("torch", "no-such-torchvision-a2m")
    with pytest.raises(RuntimeError, match="no-such-torchvision-a2m not installed.*preinstalled.*scripts/setup.sh"):
        cs.constraints()


def test_setup_installs_only_what_is_missing_with_torch_pinned(cs, tmp_path, monkeypatch, capsys):
    calls = []
    cs._pip = lambda *args: calls.append((args, Path(args[1]).read_text() if args[0] == "-c" else None))
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = list(sys.path)
    monkeypatch.chdir(REPO / "notebooks")
    assert cs.setup("..") in ("cpu", "cuda")
    assert calls == [] and sys.path == path  # this .venv: nothing to install, nothing to add
    assert "kit found at" in capsys.readouterr().out

    kit = fake_kit(tmp_path / "kit", ["torch>=2", "numpy>=1", "no-such-package-a2m>=1", "pytest>=999"])
    version = cs._version
    cs._version = lambda name: None if name == "a2m-utils" else version(name)
    monkeypatch.chdir(kit / "notebooks")
    cs.setup()
    (install, pins), (kit_install, _) = calls
    assert install[2:] == ("no-such-package-a2m>=1",) and pins == cs.constraints()
    assert kit_install == ("--no-deps", "-e", str(kit)) and sys.path[0] == str(kit)
    out = capsys.readouterr().out
    assert "installing no-such-package-a2m (" in out and "kit found at ..; 1 packages installed and the kit" in out
    assert f"kept pytest {pytest.__version__}, imported by this kernel (the kit asks pytest>=999;" in out


def test_setup_without_a_checkout_needs_a_url(cs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="no repo_url"):
        cs.setup()


def test_badges_and_cell_come_from_the_pyproject_url(badges):
    table = subprocess.run([sys.executable, str(REPO / "scripts" / "colab_badges.py"), "--table"],
                           capture_output=True, text=True, check=True).stdout
    assert table in (REPO / "README.md").read_text()
    url = badges["repo_url"]()
    assert url.startswith("https://github.com/") and url.count("/") == 4
    assert badges["colab_url"](url, "02_mask_building") == (
        f"https://colab.research.google.com/github/{url[19:]}/blob/main/notebooks/02_mask_building.ipynb")
    assert len(badges["notebooks"]()) == 7
    cell = badges["setup_cell"](url)
    assert f'"{url}"' in cell and cell.count("\n") <= 7


def test_write_points_every_notebook_and_the_readme_at_another_copy(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("colab_badges", REPO / "scripts" / "colab_badges.py")
    spec.loader.exec_module(badges := importlib.util.module_from_spec(spec))
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(badges, "REPO", tmp_path)
    fork = "https://github.com/someone/attn2mask-fork"
    badges.write(fork)
    readme = (tmp_path / "README.md").read_text()
    assert badges.table(fork) in readme and badges.table(badges.repo_url()) not in readme
    assert readme.replace(badges.table(fork), badges.table(badges.repo_url())) == (REPO / "README.md").read_text()
    for name in badges.notebooks():
        before, after = (json.loads((root / "notebooks" / f"{name}.ipynb").read_text()) for root in (REPO, tmp_path))
        assert "".join(after["cells"][1]["source"]) == badges.setup_cell(fork)
        assert after["cells"][:1] + after["cells"][2:] == before["cells"][:1] + before["cells"][2:]


def test_setup_cell_uses_a_copy_uploaded_into_the_working_folder(tmp_path, monkeypatch, badges):
    """Colab runs in /content: the repository's download, unzipped there under its own name, is used as it is."""
    upload = tmp_path / "content" / "attn2mask-kit-main"
    (upload / "a2m_utils").mkdir(parents=True)
    for f in ("pyproject.toml", "scripts/colab_setup.py"):
        (upload / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, upload / f)
    monkeypatch.chdir(tmp_path / "content")
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = {}
    exec(badges["setup_cell"]((tmp_path / "no-such-repository").as_uri()), namespace)  # a clone would fail
    assert namespace["KIT"] == "attn2mask-kit-main" and namespace["KIT_DEVICE"] in ("cpu", "cuda")


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


# Colab preinstalls torch, torchvision and most of the kit's requirements, not these (small pure-Python wheels
# that the cell must install from the package registry)
NOT_ON_COLAB = ("papermill", "peft")

CHILD = """
import importlib.metadata as md, json, sys
ns = {}
exec(compile(sys.argv[1], "<set-up cell>", "exec"), ns)
import a2m_utils, a2m_utils.crf, torch
from a2m_utils import registry
registry.load_plugins()  # the toy world, through the kit's entry point
record = md.distribution("torch").locate_file("torch-" + md.version("torch") + ".dist-info/RECORD")
print(json.dumps({"device": ns["KIT_DEVICE"], "a2m_utils": a2m_utils.__file__, "torch": torch.__file__,
                  "torch_version": md.version("torch"), "record": [record.stat().st_mtime_ns, record.stat().st_ino],
                  "dists": {n: str(md.distribution(n).locate_file("")) for n in ["torch", *sys.argv[2:]]},
                  "plugins": [e.name for e in md.entry_points(group="a2m_utils.plugins")],
                  "toy_registered": "toy" in registry.PRESETS}))
"""


def _child(py: Path, cell: str, cwd: Path) -> tuple[dict, str]:
    p = _run([str(py), "-c", CHILD, cell, *NOT_ON_COLAB], cwd=cwd)
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stdout


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_preinstalled(shared: Path) -> Path:
    """``shared``: symlinks to what this .venv has installed (packages and their dist-info), less the kit, pip (the
    fresh venv has its own) and NOT_ON_COLAB: Colab's preinstalled packages, without copying them."""
    site_dir = Path(md.distribution("torch").locate_file("")).resolve()  # this .venv's site-packages
    dists = {_norm(d.metadata["Name"]): d for d in md.distributions(path=[str(site_dir)])}
    assert all(n in dists for n in NOT_ON_COLAB), f"{site_dir} lacks one of {NOT_ON_COLAB}: run scripts/setup.sh"
    left_out = {"__pycache__"} | {f.parts[0] for n in (*NOT_ON_COLAB, "a2m-utils", "pip")
                                  for f in dists[n].files or ()}
    shared.mkdir()
    for p in site_dir.iterdir():
        if p.name not in left_out and p.suffix != ".pth":  # .pth files: the kit's editable finder, setuptools'
            (shared / p.name).symlink_to(p)
    return shared


@pytest.mark.slow
def test_setup_cell_in_a_fresh_venv_with_torch_and_no_kit(tmp_path, badges, cs):
    """As on Colab: a fresh environment with torch (and most requirements) and without the kit, a working folder
    without a checkout. The cell clones the kit, installs what is missing (NOT_ON_COLAB, from the package registry)
    and imports it in the same process; torch is untouched."""
    assert set(NOT_ON_COLAB) <= set(map(cs._name, cs.requirements(REPO / "pyproject.toml")))
    src = tmp_path / "origin"  # the repository to clone (a local copy of this checkout's kit)
    shutil.copytree(REPO / "a2m_utils", src / "a2m_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md", "scripts/colab_setup.py"):
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, src / f)
    (src / "notebooks").mkdir()
    (src / "notebooks" / ".keep").touch()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "kit"]):
        _run([*git, *cmd], cwd=src)

    venv, content = tmp_path / "venv", tmp_path / "content"
    content.mkdir()
    py = venv / "bin" / "python"
    t0 = time.time()
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(py), "-m", "pip", "uninstall", "-q", "-y", "setuptools"])  # Python 3.11's old one: torch needs >=77
    own = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    shared = colab_preinstalled(tmp_path / "colab-site")
    (own / "colab-preinstalled.pth").write_text(f"{shared}\n")  # on sys.path after the venv's own site-packages
    t_venv = time.time() - t0
    probe = ("import importlib.metadata as md, importlib.util, json; d = md.distribution('torch');"
             "r = d.locate_file(f'torch-{d.version}.dist-info/RECORD');"
             "print(json.dumps({'kit': importlib.util.find_spec('a2m_utils') is not None,"
             "'torch': [d.version, r.stat().st_mtime_ns, r.stat().st_ino], 'torch_at': str(d.locate_file('')),"
             f"'absent': [n for n in {list(NOT_ON_COLAB)!r} if importlib.util.find_spec(n) is None]}}))")
    before = json.loads(_run([str(py), "-c", probe], cwd=content).stdout)
    assert not before["kit"] and before["absent"] == list(NOT_ON_COLAB)  # no kit, and something to install
    assert Path(before["torch_at"]) == shared

    cell = badges["setup_cell"](badges["repo_url"]()).replace(badges["repo_url"](), src.as_uri())
    t0 = time.time()
    got, out = _child(py, cell, content)  # Colab: /content, no checkout
    t_cell = time.time() - t0
    print(f"\nthe fresh venv: {t_venv:.0f} s; the set-up cell (clone, install, import): {t_cell:.0f} s")
    kit = content / "attn2mask-kit"
    installing = next((line for line in out.splitlines() if line.startswith("installing ")), "")
    assert set(installing.removeprefix("installing ").split(" (")[0].split(", ")) == set(NOT_ON_COLAB), out
    assert f"kit found at {kit.name}; {len(NOT_ON_COLAB)} packages installed and the kit;" in out, out  # cloned
    assert got["a2m_utils"] == str(kit / "a2m_utils" / "__init__.py")
    assert got["plugins"] == ["toy"] and got["toy_registered"] and got["device"] in ("cpu", "cuda")
    assert all(Path(got["dists"][n]) == own for n in NOT_ON_COLAB), got["dists"]  # installed into the fresh venv
    assert [got["torch_version"], *got["record"]] == before["torch"]  # torch not reinstalled:
    assert Path(got["dists"]["torch"]) == shared and Path(got["torch"]).parent == shared / "torch"
    assert not [*own.glob("torch*"), *own.glob("nvidia*")], "torch installed into the fresh venv"

    again, out = _child(py, cell, kit / "notebooks")  # a rerun, or a notebook opened in the checkout
    assert "kit found at ..; 0 packages installed;" in out, out
    assert again == got
