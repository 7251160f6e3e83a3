"""Figures: image grids, label maps in the VOC palette, per-token attention maps."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .classes import IGNORE_INDEX, voc_palette

PALETTE = voc_palette()


def colorize(label: np.ndarray) -> np.ndarray:
    """A label map (H, W) as an RGB image in the VOC palette (255 = ignore shown white)."""
    rgb = PALETTE[label]
    rgb[label == IGNORE_INDEX] = 255
    return rgb


def grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] = (),
         col_titles: Sequence[str] = (), cell: float = 1.4, cmap: str = "viridis") -> plt.Figure:
    """A grid of images (uint8 RGB, label maps via ``colorize`` first, or float maps in ``cmap``)."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                img = row[j]
                ax.imshow(img, cmap=None if img.ndim == 3 else cmap, interpolation="nearest",
                          vmin=None if img.ndim == 3 else 0, vmax=None if img.ndim == 3 else 1)
            if i == 0 and j < len(col_titles):
                ax.set_title(textwrap.fill(col_titles[j], max(12, int(cell * 16))), fontsize=7)
        if i < len(row_titles):
            axes[i][0].text(-0.1, 0.5, row_titles[i], transform=axes[i][0].transAxes, ha="right",
                            va="center", fontsize=6, wrap=True)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
