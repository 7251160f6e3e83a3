"""Figures: image grids, label maps in the VOC palette with their class legend, per-token attention maps."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from .classes import IGNORE_INDEX, voc_palette

PALETTE = voc_palette()


def colorize(label: np.ndarray) -> np.ndarray:
    """A label map (H, W) as an RGB image in the VOC palette (255 = ignore shown white)."""
    rgb = PALETTE[label]
    rgb[label == IGNORE_INDEX] = 255
    return rgb


def add_legend(fig: plt.Figure, names: Sequence[str], ids: Sequence[int] | None = None, ignored: bool = False) -> None:
    """Below the figure, the ``colorize`` colour of each class: ``names`` indexed by label id (a
    vocabulary's names), the ids ``ids`` only if given; ``ignored`` adds the white of label 255."""
    ids = range(len(names)) if ids is None else ids
    handles = [Patch(facecolor=PALETTE[i] / 255, edgecolor="grey", label=names[i]) for i in ids]
    if ignored:
        handles.append(Patch(facecolor="white", edgecolor="grey", label="ignored"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(len(handles), 7),
               fontsize=7, frameon=False, handlelength=1.2, columnspacing=1.0)


def grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] = (),
         col_titles: Sequence[str] = (), cell: float = 1.4, cmap: str = "viridis",
         titles: Sequence[Sequence[str]] = (), legend: Sequence[str] = ()) -> plt.Figure:
    """A grid of images (uint8 RGB, label maps via ``colorize`` first, or float maps in ``cmap``).
    ``col_titles`` head the first row; ``titles[i]``, where given, heads each image of row i instead.
    ``legend``: the class names by label id, drawn as the label maps' colour legend."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr), squeeze=False)
    width = max(12, int(cell * 16))
    for i, row in enumerate(rows):
        heads = titles[i] if i < len(titles) and titles[i] else col_titles if i == 0 else ()
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                img = row[j]
                ax.imshow(img, cmap=None if img.ndim == 3 else cmap, interpolation="nearest",
                          vmin=None if img.ndim == 3 else 0, vmax=None if img.ndim == 3 else 1)
            if j < len(heads):
                ax.set_title(textwrap.fill(heads[j], width), fontsize=7)
        if i < len(row_titles):
            axes[i][0].text(-0.1, 0.5, row_titles[i], transform=axes[i][0].transAxes, ha="right",
                            va="center", fontsize=6, wrap=True)
    fig.tight_layout()
    if legend:
        add_legend(fig, legend)
    return fig


def save(fig: plt.Figure, path: str | Path) -> None:
    """Write ``fig`` as a PNG (returns nothing, so a notebook cell that ends with it echoes no path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
