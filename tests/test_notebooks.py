"""Every numbered notebook runs headless with the smoke profile, its executed copy free of stderr, machine paths
and path echoes; committed notebooks are clean, their executed copies small."""

import json
import re
import runpy
from pathlib import Path

import nbformat
import pytest

from a2m_utils.study.report import REPO
from a2m_utils.study.runner import NOTEBOOKS, PROFILES, check_parameters, load_profile, machine, run_profile
from a2m_utils.study.summary import build as build_report

_BADGES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "colab_badges.py"))
SETUP_CELL = _BADGES["setup_cell"](_BADGES["repo_url"]())  # the repository's URL from pyproject.toml, its one place
ALL = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
EXPECTED_KEYS = {
    "00_toy_world": {"world", "training"},
    "01_attention_extraction": {"steps_used", "probe_miou_by_timestep"},
    "02_mask_building": {"rendered_attention_miou", "generated_pseudomask_miou", "prompt_fidelity"},
    "03_postprocessing_ablation": {"table5", "conclusions"},
    "04_nti_comparison": {"table6", "conclusions", "reconstruction_mse"},
    "05_lora_adaptation": {"table4", "conclusions"},
    "06_segmentation_training": {"table1", "table2", "table3"},
}


@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_is_clean(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {name[:2]}")
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.language_info.name == "python"
    assert nb.cells[1].source == SETUP_CELL, "the second cell is the set-up cell: python scripts/colab_badges.py --cell"


def test_profiles_cover_every_notebook():
    for profile in ("toy", "smoke"):
        assert sorted(load_profile(profile)[1]) == ALL


def test_every_profile_loads_and_gives_known_parameters_valid_values():
    for path in sorted(PROFILES.glob("*.yaml")):
        common, notebooks = load_profile(path.stem)
        check_parameters(notebooks, {k: v for k, v in common.items() if k not in ("out_dir_root", "title", "setup")})


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_with_smoke_profile(name, tmp_path):
    record = run_profile("smoke", only=[name], out_root=tmp_path)
    assert record["notebooks"][name]["wall_s"] > 0
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert EXPECTED_KEYS[name] <= set(metrics)
    assert list(Path(tmp_path / name).glob("*.png"))
    assert headless_problems(tmp_path / "notebooks" / f"{name}.ipynb") == []
    assert {"cpu", "cpu_capability", "cpus"} <= set(record) and {"torch", "diffusers"} <= set(record["versions"])


ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[\w.-]+/[\w.-]+")  # /tmp/x, /home/..., not a URL's //host/...


def headless_problems(path: Path) -> list[str]:
    """What an executed notebook should not hold: stderr (warnings, progress bars), the machine's own paths,
    echoed Path objects, or more than 1 MB."""
    outputs = [o for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    texts = [o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs]
    return ([f"stderr: {o.text[:200]!r}" for o in outputs if o.get("name") == "stderr"]
            + [f"path: {t[:200]!r}" for t in texts if ABSOLUTE.search(t) or "PosixPath(" in t]
            + ([f"{path.stat().st_size} bytes"] if path.stat().st_size > 1_000_000 else []))


@pytest.mark.parametrize("name", ALL)
def test_executed_copy_is_clean_and_small(name):
    """The committed executed copy (results/notebooks/, the toy run), as test_notebook_runs_with_smoke_profile
    checks a fresh one: after a change to what the notebooks print, rerun the toy profile."""
    assert headless_problems(REPO / "results" / "notebooks" / f"{name}.ipynb") == []


def test_the_run_record_names_the_machine_and_the_report_says_it(tmp_path):
    import torch

    record = {"started": "2026-01-01T00:00:00", "wall_s": 60.0, "versions": {}, "notebooks": {}, **machine()}
    assert record["cpu"] and record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    (tmp_path / "run_smoke.json").write_text(json.dumps(record))
    header = build_report(tmp_path, "smoke").read_text().splitlines()[2]
    assert f"CPU cores ({record['cpu']}, torch CPU capability {record['cpu_capability']})" in header


def test_every_profile_writes_to_its_own_results_folder_with_its_own_title():
    roots, titles = {}, {}
    for path in PROFILES.glob("*.yaml"):
        common, _ = load_profile(path.stem)
        roots[path.stem], titles[path.stem] = common["out_dir_root"], common["title"]
    assert len(set(roots.values())) == len(roots), roots
    assert roots["toy"] == "results" and all(r.startswith("results/") for p, r in roots.items() if p != "toy")
    assert len(set(titles.values())) == len(titles) and "toy world" not in titles["sd-paper"]


@pytest.mark.slow
def test_rerunning_one_notebook_keeps_the_record_of_the_others(tmp_path):
    kept = {"parameters": {"out_dir": "x"}, "wall_s": 100.0}
    (tmp_path / "run_smoke.json").write_text(json.dumps(
        {"profile": "smoke", "started": "2026-01-01T00:00:00", "notebooks": {"06_segmentation_training": kept}}))
    record = run_profile("smoke", only=["00_toy_world"], out_root=tmp_path)
    assert json.loads((tmp_path / "run_smoke.json").read_text()) == record
    assert list(record["notebooks"]) == ["00_toy_world", "06_segmentation_training"]
    assert record["notebooks"]["06_segmentation_training"] == kept and record["started"] == "2026-01-01T00:00:00"
    assert record["wall_s"] == round(100.0 + record["notebooks"]["00_toy_world"]["wall_s"], 1)
    assert record["reruns"][0]["notebooks"] == ["00_toy_world"]


def test_unknown_profile_and_notebook():
    with pytest.raises(FileNotFoundError, match="known profiles"):
        load_profile("huge")
    with pytest.raises(ValueError, match="not in profile"):
        run_profile("smoke", only=["99_nothing"])


@pytest.mark.slow
@pytest.mark.parametrize(("profile", "preset", "scheduler"), [("smoke-sd", "sd", "DDPMScheduler"),
                                                              ("smoke-sdxl", "sdxl", "EulerDiscreteScheduler")])
def test_smoke_sd_profiles_run_every_notebook_on_real_dataset_layouts(profile, preset, scheduler, tmp_path):
    """A Stable Diffusion 1.4-shaped (or XL-shaped) pipeline with tiny random weights, saved like the real one and
    loaded by folder, with VOC-, Cityscapes- and ImageNet-S-layout fixtures and a COCO-captions file, through the
    same cells as the toy world: every table of the paper gets written (its numbers mean nothing)."""
    record = run_profile(profile, out_root=tmp_path)
    assert list(record["notebooks"]) == ALL[1:]
    metrics = {n: json.loads((tmp_path / n / "metrics.json").read_text()) for n in record["notebooks"]}
    for name, m in metrics.items():
        assert m["parameters"]["preset"] == preset and m["parameters"]["scheduler"] == scheduler, name
    assert all([step for step, _ in metrics[n]["steps_used"]] == [2] for n in ALL[1:3])
    tables = {"03_postprocessing_ablation": ["table5"], "04_nti_comparison": ["table6"],
              "05_lora_adaptation": ["table4"], "06_segmentation_training": ["table1", "table2", "table3"]}
    for name, keys in tables.items():
        for key in keys:
            assert metrics[name][key] and (tmp_path / name / f"{key}.csv").is_file(), (name, key)
    assert {"aeroplane", "tvmonitor"} <= set(metrics["06_segmentation_training"]["table1"][0])  # VOC's label space
    assert [r["method"] for r in metrics["06_segmentation_training"]["table3"]][::2] == ["real-supervised", "attn2mask"]
    assert metrics["05_lora_adaptation"]["parameters"]["target_set"].startswith("cityscapes:")
    assert "toy world" not in (tmp_path / "REPORT.md").read_text().splitlines()[0]
