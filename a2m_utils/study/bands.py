"""Reproduction bands: a run's headline numbers against the same study run on another CPU float-kernel
path (``benchmarks/kernel_band.sh``: its ``metrics.json`` files under ``<results>/bands/<path>/``, ``PATHS``),
beside the spread over seeds, and whether each table's verdict holds on both."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from . import paper
from .report import md_table

Rows = list[Mapping]
PATHS = {  # name -> (the kernel path, the command that made its results)
    "no-amx": ("oneDNN without AMX (`ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`), as on an AVX-512-BF16 CPU that lacks it; "
               "slow here (notebook 02: 324 s against 23 s)",
               "bash benchmarks/kernel_band.sh no-amx CLONE_DIR --only 00_toy_world 01_attention_extraction "
               "02_mask_building"),
    "onednn-off": ("torch's own CPU kernels, oneDNN off (`torch.backends.mkldnn.enabled = False`), about 20x slower",
                   "bash benchmarks/kernel_band.sh onednn-off CLONE_DIR --only 00_toy_world 01_attention_extraction "
                   "02_mask_building 03_postprocessing_ablation"),
    "another-cpu": ("another 2-core machine, an AMD EPYC with AVX512-BF16 and no AMX (docs/experiments.md; its record "
                    "predates the CPU field): the default run of commit 9cec2f3; a machine of this run's kind gave this run's "
                    "numbers at that commit",
                    "bash scripts/reproduce.sh"),
}


def _rows(metrics: Mapping, table: str, key: str) -> Iterator[tuple[str, float, float | None]]:
    """(label, value, seed spread or None) of each row of ``table`` in ``metrics``."""
    for r in metrics.get(table, []):
        label = r.get("method", r.get("post_processing"))
        label += f", {r['n_images']} images" if "n_images" in r else ""
        yield label, r[key], r.get(f"{key}_std")


def _table1(rows: Rows) -> str:
    return " > ".join(r["method"] for r in sorted(rows, key=lambda r: -r["mIoU"]))


def _table2(rows: Rows) -> str:
    curve = {r["n_images"]: r["mIoU"] for r in rows if r["method"] == "attn2mask"}
    beco = {r["n_images"]: r["mIoU"] for r in rows if r["method"] == "attn2mask+BECO"}
    sizes = sorted(curve)
    rises = all(curve[a] < curve[b] for a, b in zip(sizes, sizes[1:]))
    above = sum(beco[n] > curve[n] for n in beco if n in curve)
    return f"plain {'rises' if rises else 'does not rise'} with size; BECO above plain at {above} of {len(beco)} sizes"


def _table3(rows: Rows) -> str:
    got = {(r["method"], r["n_images"]): r["mIoU"] for r in rows}
    sizes = sorted({n for _, n in got})
    if not any(m == "real-supervised" for m, _ in got):
        return "no real arm"
    wins = sum(got[("real-supervised", n)] > got[("attn2mask", n)] for n in sizes)
    return f"real above attn2mask at {wins} of {len(sizes)} sizes"


def _table4(rows: Rows, metrics: Mapping) -> str:
    floors = metrics.get("floors")
    if not floors:
        return "no floor"
    return "reproduced" if paper.table4_verdict(rows, floors).reproduced else "not reproduced"


def _table5(rows: Rows) -> str:
    return "best: " + max(rows, key=lambda r: r["segmenter_mIoU"])["post_processing"]


def _table6(rows: Rows) -> str:
    got = {r["method"]: r["mIoU"] for r in rows}
    nti = max(got["NTI on the train set and retraining"], got["NTI on the val set"])
    return "attn2mask >= NTI (reproduced)" if got["attn2mask"] >= nti else "NTI beats attn2mask (not reproduced)"


# table -> (notebook, the value read, the verdict of its rows)
TABLES: dict[str, tuple[str, str, Callable]] = {
    "table1": ("06_segmentation_training", "mIoU", lambda rows, m: _table1(rows)),
    "table2": ("06_segmentation_training", "mIoU", lambda rows, m: _table2(rows)),
    "table3": ("06_segmentation_training", "mIoU", lambda rows, m: _table3(rows)),
    "table4": ("05_lora_adaptation", "mIoU", _table4),
    "table5": ("03_postprocessing_ablation", "segmenter_mIoU", lambda rows, m: _table5(rows)),
    "table6": ("04_nti_comparison", "mIoU", lambda rows, m: _table6(rows)),
}


def _metrics(root: Path, notebook: str) -> dict | None:
    path = root / notebook / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def band_rows(root: Path, other: Path) -> tuple[list[list], list[list]]:
    """The numbers ([table, row, this run, seed spread, other path, difference]) and the verdicts ([table,
    this run, other path, holds]) of the tables that both runs under ``root`` and ``other`` measured."""
    numbers, verdicts = [], []
    for table, (notebook, key, verdict) in TABLES.items():
        here, there = _metrics(root, notebook), _metrics(other, notebook)
        if not here or not there or table not in there:
            continue
        theirs = {label: v for label, v, _ in _rows(there, table, key)}
        for label, v, spread in _rows(here, table, key):
            if label in theirs:
                numbers.append([table, label, v, spread, theirs[label], theirs[label] - v])
        a, b = verdict(here[table], here), verdict(there[table], {"floors": here.get("floors")} | there)
        verdicts.append([table, a, b, "yes" if a == b else "no"])
    here, there = _metrics(root, "02_mask_building"), _metrics(other, "02_mask_building")
    if here and there:
        v, w = here["generated_pseudomask_miou"], there["generated_pseudomask_miou"]
        numbers.insert(0, ["pseudo-masks (02)", "generated images vs the oracle", v, None, w, w - v])
    return numbers, verdicts


def section(root: Path) -> list[str]:
    """REPORT.md's band section: one pair of tables per kernel path found under ``root/bands/``."""
    out = []
    for other in sorted(p for p in (root / "bands").glob("*") if p.is_dir()):
        numbers, verdicts = band_rows(root, other)
        run = other / "run_toy.json"
        made = f", started {json.loads(run.read_text())['started']}" if run.is_file() else ""
        how, command = PATHS.get(other.name, (other.name, "?"))
        out += [f"## Reproduction band: {other.name}", "",
                f"The same study on another CPU float-kernel path, {how}: `{command}`{made}; the tables it ran.", "",
                md_table(["table", "row", "this run", "seed spread", other.name, "difference"], numbers), "",
                md_table(["table", "verdict here", f"verdict, {other.name}", "holds"], verdicts), ""]
    return out
