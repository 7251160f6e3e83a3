"""From one image's token attention to its pseudo-mask: Eq. 4 -> resize -> normalise -> Eqs. 5-6 -> labels."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from . import masks
from .classes import ClassVocab
from .tokens import class_positions, words


@dataclass
class PseudoMask:
    label: np.ndarray  # (H, W) uint8 vocabulary ids
    reliability: np.ndarray  # (H, W) bool, Eq. 6
    maps: np.ndarray  # (C, H, W) normalised class maps A_c at image size
    class_ids: list[int]
    positions: dict[str, list[int]]


def build_pseudo_mask(
    attn: np.ndarray,
    prompt: str,
    image: np.ndarray,
    tokenizer,
    vocab: ClassVocab,
    method: str = "dcrf",
    beta: float = 0.2,
    r: float = 0.5,
    theta: float = 128,
    attributes: Collection[str] = (),
    expected: Collection[str] | None = None,
    joint: bool = False,
) -> PseudoMask:
    """Pseudo-mask of one image from its token attention (L, h, w) and its prompt."""
    positions = class_positions(prompt, tokenizer, vocab, expected=expected, attributes=attributes)
    ids = [vocab.index(n) for n in positions]
    return mask_from_class_maps(masks.class_maps(attn, positions), ids, image, method, beta, r, theta,
                                joint, positions)


def mask_from_class_maps(raw: np.ndarray, class_ids: list[int], image: np.ndarray, method: str = "dcrf",
                         beta: float = 0.2, r: float = 0.5, theta: float = 128, joint: bool = False,
                         positions: dict[str, list[int]] | None = None) -> PseudoMask:
    """Pseudo-mask from raw class maps (C, h, w) of Eq. 4: resize, normalise, Eqs. 5-6, labels.
    Post-processing can be redone from stored class maps without regenerating."""
    maps = masks.normalize(masks.resize(np.asarray(raw, dtype=np.float32), image.shape[:2]), joint=joint)
    label = masks.pseudo_mask(maps, class_ids, method, image=image, beta=beta, theta=theta)
    rel = masks.reliability(masks.with_background(maps, beta), r)
    return PseudoMask(label, rel, maps, list(class_ids), positions or {})


def word_maps(attn: np.ndarray, prompt: str, tokenizer) -> tuple[list[str], np.ndarray]:
    """Each word of the prompt with its map (mean over its sub-tokens, min-max scaled), for display."""
    ws = words(prompt, tokenizer)
    return [w.text for w in ws], masks.normalize(np.stack([attn[w.start:w.stop].mean(0) for w in ws]))
