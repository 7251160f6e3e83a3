"""Dataset Diffusion's self-attention refinement (Nguyen et al. NeurIPS 2023).

Class maps from cross-attention are spread along the image's own self-attention:
refined = A^power @ maps, with the affinity A (N, N), N = r * r, at the self-attention
resolution r (rows sum to 1, as ``AttentionStore.self_attention()`` returns it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import masks
from .classes import IGNORE_INDEX
from .phases import phase

POWER = 4  # the affinity's exponent
FOREGROUND = 0.6  # a pixel takes its class where the refined maximum reaches this
UNCERTAIN = 0.5  # ... is ignored (255) where it lies in [UNCERTAIN, FOREGROUND)


@phase("pseudo-masks")
def refine_maps(maps: np.ndarray, affinity: np.ndarray, power: int = POWER) -> np.ndarray:
    """Class maps (C, h, w) resized to the affinity's r x r, times A^power, min-max scaled: (C, r, r)."""
    n = affinity.shape[0]
    r = math.isqrt(n)
    if affinity.shape != (n, n) or r * r != n:
        raise ValueError(f"affinity must be (N, N) with N a square, got {affinity.shape}")
    a = torch.as_tensor(np.asarray(affinity), dtype=torch.float32)
    x = torch.from_numpy(masks.resize(np.asarray(maps, dtype=np.float32), (r, r)).reshape(len(maps), n).T.copy())
    for _ in range(power):  # A^p @ x as p products: O(p N^2 C) instead of matrix_power's O(N^3 log p)
        x = a @ x
    return masks.normalize(x.T.reshape(len(maps), r, r).numpy())


def label_refined(maps: np.ndarray, class_ids: Sequence[int], size: tuple[int, int],
                  fg: float = FOREGROUND, uncertain: float = UNCERTAIN) -> np.ndarray:
    """Label of refined maps (C, r, r): the strongest class where its map >= ``fg``, 255 where it
    lies in [``uncertain``, ``fg``), background (0) elsewhere; nearest-resized to ``size``."""
    if len(class_ids) != len(maps):
        raise ValueError(f"{len(class_ids)} class ids for {len(maps)} class maps")
    peak = maps.max(0)
    label = np.asarray(class_ids, dtype=np.uint8)[maps.argmax(0)]
    label = np.where(peak >= fg, label, np.where(peak >= uncertain, IGNORE_INDEX, 0)).astype(np.uint8)
    t = torch.from_numpy(label)[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].byte().numpy()


def refine(maps: np.ndarray, affinity: np.ndarray, class_ids: Sequence[int], size: tuple[int, int],
           power: int = POWER, fg: float = FOREGROUND, uncertain: float = UNCERTAIN) -> tuple[np.ndarray, np.ndarray]:
    """Label map (``size``, uint8 vocabulary ids, 255 = ignore) and refined maps (C, r, r) from
    cross-attention class maps (C, h, w) (Eq. 4) and a self-attention affinity (N, N)."""
    refined = refine_maps(maps, affinity, power)
    return label_refined(refined, class_ids, size, fg, uncertain), refined
