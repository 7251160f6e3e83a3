"""Run the numbered notebooks headless with papermill, with the parameters of a profile.

    python -m a2m_utils.study.runner --profile toy            # the whole study in the toy world
    python -m a2m_utils.study.runner --profile smoke --only 02_mask_building

A profile (``profiles/<name>.yaml``) maps notebook names to papermill parameters; the
``_all`` entry applies to every notebook, and its ``out_dir_root`` (default ``results`` for
``toy``, ``results/<profile>`` for any other) is where each notebook writes
``<out_dir_root>/<notebook>/``. Executed notebooks go to ``<out_dir_root>/notebooks/``
(committed: a reader sees the outputs without running) and a run record (parameters, versions, the
CPU and torch's CPU capability, wall time per notebook and per phase within it, ``a2m_utils.phases``) to
``<out_dir_root>/run_<profile>.json``, which an ``--only`` rerun updates rather than replaces;
``REPORT.md`` there, headed by the profile's ``_title``, is rebuilt at the end. A profile's
``_setup`` ({creates: PATH, command: "python -m ..."}) runs once, before its notebooks, when PATH
does not exist. Every notebook's parameters are checked (``params``) before the first one starts,
and the notebooks run without progress bars (``TQDM_DISABLE``; Jupyter keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import papermill as pm
import yaml

from .. import phases
from . import params
from .report import REPO, output_dir
from .summary import build as build_report

PROFILES = REPO / "profiles"
NOTEBOOKS = REPO / "notebooks"
PACKAGES = ("torch", "diffusers", "transformers", "peft", "segmentation-models-pytorch", "a2m-utils")
HEADLESS = {"TQDM_DISABLE": "1"}  # the notebooks' kernels draw no progress bars (tqdm reads it)


def load_profile(profile: str | Path) -> tuple[dict, dict[str, dict]]:
    """(common parameters, {notebook: parameters}) of a profile name or YAML path. The common ones
    include ``out_dir_root`` (default ``results`` for the toy profile, ``results/<profile>`` for any
    other, so that no profile overwrites another's results) and ``title`` (of its REPORT.md)."""
    path = Path(profile) if str(profile).endswith(".yaml") else PROFILES / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {str(profile)!r}; known profiles: {known}")
    cfg = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if not k.startswith("x-")}  # x-: anchors
    common = {"out_dir_root": "results" if path.stem == "toy" else f"results/{path.stem}",
              "title": cfg.pop("_title", f"attn2mask, profile {path.stem}"), "setup": cfg.pop("_setup", None),
              **(cfg.pop("_all", {}) or {})}
    missing = [n for n in cfg if not (NOTEBOOKS / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"profile {path.name} names notebooks that do not exist: {missing}")
    return common, {n: p or {} for n, p in sorted(cfg.items())}


def check_parameters(notebooks: dict[str, dict], common: dict) -> None:
    """Raise ValueError, one line per bad parameter (``params``), before any notebook runs."""
    lines = [f"{name}: {line}" for name, given in notebooks.items()
             for line in params.problems({**common, **given}, name, {*common, *given})]
    if lines:
        raise ValueError("\n".join(lines))


def machine() -> dict:
    """The CPU's model (/proc/cpuinfo's "model name"), torch's CPU capability (the vector kernels it runs,
    e.g. AVX512: float results differ across them) and the number of cores."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.is_file() else []
    return {"cpu": names[0] if names else platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count()}


@contextmanager
def timed_phases() -> Iterator[dict]:
    """A dict filled, when the block ends, with the ``a2m_utils.phases`` totals of the kernel run inside it."""
    totals: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phases.json"
        with mock.patch.dict(os.environ, {phases.ENV: str(path)}):  # the notebook's kernel inherits it
            yield totals
        totals.update(json.loads(path.read_text()) if path.is_file() else {})


def phase_table(totals: dict, wall_s: float) -> dict:
    """Wall and CPU seconds per phase, rounded, plus ``other`` (the notebook's wall time outside any phase)."""
    table = {k: {"wall_s": round(v["wall_s"], 1), "cpu_s": round(v["cpu_s"], 1), "calls": v["calls"]}
             for k, v in sorted(totals.items())}
    table["other"] = {"wall_s": round(wall_s - sum(v["wall_s"] for v in totals.values()), 1)}
    return table


def run_profile(profile: str | Path, only: list[str] | None = None, out_root: str | Path | None = None) -> dict:
    """Execute the profile's notebooks in order; returns the run record (wall time: the sum of
    the notebooks')."""
    common, notebooks = load_profile(profile)
    root = output_dir(out_root or common["out_dir_root"])
    title, setup = common.pop("title"), common.pop("setup")
    common.pop("out_dir_root")
    if only:
        unknown = sorted(set(only) - set(notebooks))
        if unknown:
            raise ValueError(f"{unknown} are not in profile {profile!r}: {sorted(notebooks)}")
        notebooks = {n: p for n, p in notebooks.items() if n in only}
    check_parameters(notebooks, common)
    if setup and not (REPO / setup["creates"]).exists():  # e.g. a model the profile needs, made once
        subprocess.run([sys.executable, *shlex.split(setup["command"])[1:]], cwd=REPO, check=True)
    path = root / f"run_{Path(str(profile)).stem}.json"
    record = {"profile": str(profile), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "python": platform.python_version(), "versions": {p: version(p) for p in PACKAGES},
              **machine(), "notebooks": {}}
    if only and path.is_file():  # a partial rerun updates the last record instead of replacing it
        previous = json.loads(path.read_text())
        record["notebooks"] = {n: r for n, r in previous["notebooks"].items() if n not in notebooks}
        record["reruns"] = [*previous.get("reruns", []), {"started": record["started"], "notebooks": list(notebooks)}]
        record["started"] = previous["started"]
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    for name, given in notebooks.items():
        out = root / name
        values = {**common, **given, "out_dir": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)}
        t0 = time.time()
        with timed_phases() as totals, mock.patch.dict(os.environ, HEADLESS):
            pm.execute_notebook(NOTEBOOKS / f"{name}.ipynb", root / "notebooks" / f"{name}.ipynb",
                                parameters=values, cwd=str(REPO), progress_bar=False, kernel_name="python3")
        wall = round(time.time() - t0, 1)
        record["notebooks"][name] = {"parameters": values, "wall_s": wall, "phases": phase_table(totals, wall)}
        print(f"{name}: {record['notebooks'][name]['wall_s']} s", flush=True)
    record["notebooks"] = dict(sorted(record["notebooks"].items()))
    record["wall_s"] = round(sum(r["wall_s"] for r in record["notebooks"].values()), 1)
    path.write_text(json.dumps(record, indent=1) + "\n")
    build_report(root, Path(str(profile)).stem, title)
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="toy")
    p.add_argument("--only", nargs="*", help="notebook names to run (default: all of the profile)")
    p.add_argument("--out-root", help="write results here instead of the profile's out_dir_root")
    a = p.parse_args(argv)
    try:
        record = run_profile(a.profile, a.only, a.out_root)
    except (FileNotFoundError, ValueError) as err:  # an unknown profile or notebook, a bad parameter: no traceback
        p.exit(2, f"error: {err}\n")
    print(f"done in {record['wall_s']} s")


if __name__ == "__main__":
    main()
