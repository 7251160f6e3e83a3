"""Pseudo-masks from captured attention, one function per equation (Eqs. 4-6).

Shapes: token attention ``attn`` is (L, H, W); class maps are (C, H, W) for the
C classes a prompt names; the stack [A_0, A_1, ..., A_C] is (C + 1, H, W). Label
maps hold vocabulary ids (0 = background) as uint8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

from .crf import dense_crf
from .phases import phase
from .tokens import words

METHODS = ("argmax", "threshold", "otsu", "dcrf")


def class_maps(attn: np.ndarray, positions: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Eq. 4: A_c = mean of the token maps at positions tau_c, one per class, (C, H, W)."""
    if not positions:
        raise ValueError("no class positions given: the prompt names no class")
    return np.stack([np.asarray(attn)[list(pos)].mean(0) for pos in positions.values()]).astype(np.float32)


def normalize(maps: np.ndarray, joint: bool = False) -> np.ndarray:
    """Min-max scale to [0, 1]: each class map on its own (default), or all jointly."""
    axes = None if joint else (1, 2)
    lo = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - lo
    return ((maps - lo) / np.maximum(span, 1e-12)).astype(np.float32)


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, h, w) maps to (C, *size)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()


def scale_maps(raw: np.ndarray, size: tuple[int, int], joint: bool = False) -> np.ndarray:
    """Raw class maps A_c (C, h, w) of Eq. 4 at the image ``size``, min-max normalised to [0, 1]
    (each map on its own, or all jointly): the maps that Eqs. 5 and 6 compare."""
    return normalize(resize(np.asarray(raw, dtype=np.float32), size), joint=joint)


def background(maps: np.ndarray, beta: float = 0.2) -> np.ndarray:
    """Eq. 5: A_0 = 1 - max_c A_c - beta, for maps normalised to [0, 1]."""
    return (1.0 - maps.max(0) - beta).astype(np.float32)


def with_background(maps: np.ndarray, beta: float = 0.2) -> np.ndarray:
    """The stack [A_0, A_1, ..., A_C] of Eqs. 5 and 6."""
    return np.concatenate([background(maps, beta)[None], maps])


def reliability(stack: np.ndarray, r: float = 0.5) -> np.ndarray:
    """Eq. 6: R = [max_i A_i >= r] over the stack including the background, as bool (H, W)."""
    return stack.max(0) >= r


def _to_ids(index: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Map stack indices (0 = background, k = k-th class) to vocabulary ids."""
    return np.asarray([0, *class_ids], dtype=np.uint8)[index]


def label_argmax(stack: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Label of the largest of A_0..A_C at each pixel."""
    return _to_ids(stack.argmax(0), class_ids)


def label_threshold(maps: np.ndarray, class_ids: Sequence[int], theta: float = 128) -> np.ndarray:
    """Foreground where the strongest class map, on the [0, 255] scale, reaches ``theta`` (Table 5)."""
    fg = maps.max(0) * 255 >= theta
    return np.where(fg, _to_ids(maps.argmax(0) + 1, class_ids), 0).astype(np.uint8)


def label_otsu(maps: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Foreground where the strongest class map, on the [0, 255] scale, exceeds its Otsu threshold."""
    peak = np.round(maps.max(0) * 255).astype(np.uint8)
    theta = threshold_otsu(peak) if np.ptp(peak) > 0 else 255
    return np.where(peak > theta, _to_ids(maps.argmax(0) + 1, class_ids), 0).astype(np.uint8)


def label_dcrf(stack: np.ndarray, class_ids: Sequence[int], image: np.ndarray, **crf_kwargs) -> np.ndarray:
    """Dense-CRF labels with unary -log p, p = the stack clipped to >= 1e-5 and summed to 1."""
    probs = np.clip(stack, 1e-5, None)
    probs = probs / probs.sum(0, keepdims=True)
    return _to_ids(dense_crf(image, probs, **crf_kwargs), class_ids)


def label_map(
    maps: np.ndarray,
    class_ids: Sequence[int],
    method: str = "dcrf",
    image: np.ndarray | None = None,
    beta: float = 0.2,
    theta: float = 128,
) -> np.ndarray:
    """Label map from normalised class maps (C, H, W) by ``method`` (one of ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"unknown post-processing {method!r}; expected one of {METHODS}")
    if len(class_ids) != len(maps):
        raise ValueError(f"{len(class_ids)} class ids for {len(maps)} class maps")
    if method == "threshold":
        return label_threshold(maps, class_ids, theta)
    if method == "otsu":
        return label_otsu(maps, class_ids)
    stack = with_background(maps, beta)
    if method == "argmax":
        return label_argmax(stack, class_ids)
    if image is None:
        raise ValueError("dense CRF needs the image")
    return label_dcrf(stack, class_ids, image)


@dataclass
class PseudoMask:
    label: np.ndarray  # (H, W) uint8 vocabulary ids
    reliability: np.ndarray  # (H, W) bool, Eq. 6
    maps: np.ndarray  # (C, H, W) normalised class maps A_c at image size
    class_ids: list[int]
    positions: dict[str, list[int]] = field(default_factory=dict)  # Eq. 4's tau_c, when built from tokens


@phase("pseudo-masks")
def pseudo_mask(raw: np.ndarray, class_ids: Sequence[int], image: np.ndarray, method: str = "dcrf",
                beta: float = 0.2, r: float = 0.5, theta: float = 128, joint: bool = False) -> PseudoMask:
    """The pseudo-mask of one image from its raw class maps A_c (C, h, w) of Eq. 4: resize to the
    image, min-max normalise, background (Eq. 5), labels by ``method``, reliability (Eq. 6).
    Post-processing can be redone from stored class maps without regenerating."""
    maps = scale_maps(raw, image.shape[:2], joint=joint)
    label = label_map(maps, class_ids, method, image=image, beta=beta, theta=theta)
    return PseudoMask(label, reliability(with_background(maps, beta), r), maps, list(class_ids))


def word_maps(attn: np.ndarray, prompt: str, tokenizer) -> tuple[list[str], np.ndarray]:
    """Each word of the prompt that the text encoder sees, with its map (mean over its sub-tokens, min-max
    scaled), for display."""
    ws = [w for w in words(prompt, tokenizer) if w.start < w.stop <= len(attn)]
    return [w.text for w in ws], normalize(np.stack([attn[w.start:w.stop].mean(0) for w in ws]))
