"""``REPORT.md``: every table of the paper beside the measured one, with the run that made it.

Built from what the notebooks wrote under one results folder (``metrics.json``, the tables'
Markdown, the figures) and the runner's record (``run_<profile>.json``); nothing is typed in
except the paper's own numbers (``paper.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import bands, paper
from .report import md_table

SECTIONS = {  # notebook -> (title, measured tables)
    "02_mask_building": ("Pseudo-mask quality (Eqs. 4-6, Fig. 5)", ()),
    "06_segmentation_training": ("Tables 1-3: segmentation training", ("table1", "table2", "table3")),
    "05_lora_adaptation": ("Table 4: domain adaptation with LoRA", ("table4",)),
    "03_postprocessing_ablation": ("Table 5: post-processing", ("table5",)),
    "04_nti_comparison": ("Table 6: null-text inversion", ("table6",)),
}
KEY_METRICS = ("rendered_attention_miou", "rendered_attention_miou_attributes", "generated_pseudomask_miou",
               "generated_pseudomask_miou_attributes", "prompt_fidelity", "prompt_fidelity_all_classes_found",
               "oracle_rendered_miou")
BETA_OF = {"rendered_attention_miou": "probe_beta", "rendered_attention_miou_attributes": "probe_beta",
           "generated_pseudomask_miou": "beta", "generated_pseudomask_miou_attributes": "beta"}


def paper_tables() -> dict[str, str]:
    """The paper's Tables 1-6 as Markdown."""
    t1 = md_table(["method", *paper.VOC_CLASSES, "mIoU"], [[k, *v] for k, v in paper.TABLE1.items()])
    t2 = md_table(["method", "synthetic images", "mIoU"],
                   [[m, n, v] for m, sizes in paper.TABLE2.items() for n, v in sizes.items()])
    t3 = md_table(["method", "images", "mIoU"], [[m, n, v] for m, s in paper.TABLE3.items() for n, v in s.items()])
    t4 = md_table(["method", "pixel acc", "mIoU"], [[m, v["acc"], v["miou"]] for m, v in paper.TABLE4.items()])
    t5 = md_table(["post-processing", "mIoU"], [[k, v] for k, v in paper.TABLE5.items()])
    t6 = md_table(["method", "mIoU"], [[k, v] for k, v in paper.TABLE6.items()])
    return {"table1": t1, "table2": t2, "table3": t3, "table4": t4, "table5": t5, "table6": t6}


def _mask_quality_rows(metrics: dict) -> list[list]:
    """Notebook 02's key measures, each mIoU with the beta of Eq. 5 it was measured at."""
    params = metrics.get("parameters", {})
    rows = {k + (f" (beta {b})" if (b := params.get(BETA_OF.get(k))) is not None else ""): metrics[k]
            for k in KEY_METRICS if k in metrics}
    for key in ("rendered_attention_miou_by_beta", "generated_pseudomask_miou_by_beta"):
        rows |= {f"{key.removesuffix('_by_beta')} (beta {b})": v for b, v in metrics.get(key, {}).items()}
    return [[k, v] for k, v in rows.items()]


def _section(root: Path, name: str, title: str, tables: tuple[str, ...], run: dict, reference: dict) -> list[str]:
    folder = root / name
    metrics = json.loads((folder / "metrics.json").read_text())
    out = [f"## {title}", "", f"Notebook `notebooks/{name}.ipynb`"
           + (f", {run['notebooks'][name]['wall_s']:.0f} s" if name in run.get("notebooks", {}) else "")
           + f"; parameters: `{json.dumps(metrics.get('parameters', {}))}`", ""]
    if name == "02_mask_building":
        out += [md_table(["measure", "value"], _mask_quality_rows(metrics)), ""]
    for t in tables:
        out += [f"**{t}, measured**", "", (folder / f"{t}.md").read_text().strip(), "",
                f"**{t}, paper**", "", reference[t], ""]
    for key, what in (("floors", "the validation labels"), ("fgbg_floors", "Table 3's foreground/background labels")):
        if key in metrics:
            out += [f"**Trivial floors of {what}** (answering from the labels alone)", "",
                    md_table(["floor", "pixel acc", "mIoU"], [[f["floor"], f["pixel_acc"], f["mIoU"]]
                                                              for f in metrics[key]]), ""]
    if departures := paper.departures(metrics.get("parameters", {})):
        out += ["**Where this run departs from the paper's setting**", "",
                md_table(["setting", "paper", "this run"], departures), ""]
    out += [f"- {c}" for c in metrics.get("conclusions", [])] + [""]
    out += [f"![{p.stem}]({name}/{p.name})" for p in sorted(folder.glob("*.png"))] + [""]
    return out


def _machine(run: dict) -> str:
    return f" ({run['cpu']}, torch CPU capability {run['cpu_capability']})" if "cpu" in run else ""


def _reruns(run: dict) -> str:
    return "".join(f"; rerun {r['started']}: {', '.join(r['notebooks'])}" for r in run.get("reruns", []))


def build(root: str | Path, profile: str = "toy", title: str = "attn2mask in the toy world") -> Path:
    """Write ``root/REPORT.md``, headed ``title``, from the notebooks' outputs under ``root``."""
    root = Path(root)
    record = root / f"run_{profile}.json"
    run = json.loads(record.read_text()) if record.exists() else {}
    lines = [f"# {title}: the paper's tables beside the measured ones", "",
             (f"Made by `bash scripts/reproduce.sh {profile}` "
              f"(`python -m a2m_utils.study.runner --profile {profile}`), "
              f"started {run.get('started', '?')}, wall time {run.get('wall_s', float('nan')) / 60:.1f} min "
              f"(the notebooks' sum) on {run.get('cpus', '?')} CPU cores{_machine(run)}{_reruns(run)}; "
              "notebooks in this run: "
              f"{', '.join(run.get('notebooks', {})) or 'none recorded'} (a notebook not run has no section); "
              f"versions: `{json.dumps(run.get('versions', {}))}`."),
             ("Toy-world numbers are fractions (0-1); the paper's are percentages on PASCAL VOC, ImageNet-S "
              "and Cityscapes with Stable Diffusion 1.4: compare ratios and orderings, not values."), ""]
    reference = paper_tables()
    for name, (heading, tables) in SECTIONS.items():
        if (root / name / "metrics.json").exists():
            lines += _section(root, name, heading, tables, run, reference)
    lines += bands.section(root)
    path = root / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
