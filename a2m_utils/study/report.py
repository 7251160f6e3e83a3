"""Writing results: metrics.json and tables (CSV + Markdown) under results/<notebook>/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"  # generated datasets and trained segmenters, cached between runs (not committed)


def output_dir(path: str | Path) -> Path:
    """A relative path is taken from the kit's checkout (where notebooks/ is), else from the cwd."""
    path = Path(path)
    if path.is_absolute():
        return path
    return (REPO if (REPO / "notebooks").is_dir() else Path.cwd()) / path


def plain(x):
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else round(float(x), 4)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_metrics(out_dir: str | Path, metrics: dict, parameters: dict) -> None:
    """Write ``metrics.json`` with the parameters that produced it (NaN written as null)."""
    path = Path(out_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain({"parameters": parameters, **metrics}), indent=1) + "\n")


def per_class(names, values) -> dict[str, float]:
    return {n: v for n, v in zip(names, values)}


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats to 4 significant digits, None empty."""
    def cell(v) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])
