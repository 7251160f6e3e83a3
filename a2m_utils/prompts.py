"""Prompt sets (Sec. 4.1): each prompt carries the classes it names and the seeds to sample it with.

- PASCAL VOC: captions curated from a COCO-captions JSON file (captions naming a VOC class
  or a synonym), counted per class;
- ImageNet-S style: the template "a photo of {class_name} with a background", a synonym
  drawn at random, several seeds per prompt;
- Cityscapes: "a photo of {names} in cityscape by a dashboard camera" with a variable-length
  list of class names (terrain -> sand, vegetation -> plant), and the "sks" variant;
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import CITYSCAPES, CITYSCAPES_PROMPT_WORDS, VOC, ClassVocab
from .tokens import mentioned_classes

IMAGENET_S_TEMPLATE = "a photo of {class_name} with a background"
CITYSCAPES_TEMPLATE = "a photo of {class_names} in {domain}cityscape by a dashboard camera"


@dataclass(frozen=True)
class Prompt:
    text: str
    classes: tuple[str, ...]  # class names the text names, vocabulary order
    seed: int


def with_seeds(texts: Sequence[str], classes: Sequence[tuple[str, ...]], seeds_per_prompt: int,
                seed0: int) -> list[Prompt]:
    """Prompt k gets the seeds seed0 + k * seeds_per_prompt + j, j < seeds_per_prompt."""
    return [Prompt(t, c, seed0 + k * seeds_per_prompt + j)
            for k, (t, c) in enumerate(zip(texts, classes)) for j in range(seeds_per_prompt)]


def coco_captions(path: str | Path, vocab: ClassVocab = VOC, seeds_per_prompt: int = 1,
                  seed0: int = 0) -> tuple[list[Prompt], dict[str, int]]:
    """Captions of a COCO-captions JSON file (``{"annotations": [{"caption": ...}, ...]}``) that
    name a class of ``vocab``, each once, and the number of prompts per class."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no COCO captions file at {path} (e.g. captions_train2017.json)")
    try:
        annotations = json.loads(path.read_text())["annotations"]
        captions = [a["caption"].strip() for a in annotations]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a COCO captions file: expected "
                         '{"annotations": [{"caption": ...}, ...]}') from e
    texts = list(dict.fromkeys(c for c in captions if c))
    named = [mentioned_classes(t, vocab) for t in texts]
    kept = [(t, c) for t, c in zip(texts, named) if c]
    counts = Counter(n for _, c in kept for n in c)
    prompts = with_seeds([t for t, _ in kept], [c for _, c in kept], seeds_per_prompt, seed0)
    return prompts, {n: counts.get(n, 0) for n in vocab.names[1:]}


def template_prompts(vocab: ClassVocab, per_class: int, seeds_per_prompt: int = 1, seed: int = 0,
                     template: str = IMAGENET_S_TEMPLATE) -> list[Prompt]:
    """``per_class`` prompts per class from a one-class template, the class word drawn at random
    among the class name and its synonyms (ImageNet-S setting); the classes take turns, so the first
    prompts cover them evenly."""
    rng = np.random.default_rng(seed)
    names = [n for _ in range(per_class) for n in vocab.names[1:]]
    texts = [template.format(class_name=str(rng.choice(vocab.phrases(n)))) for n in names]
    return with_seeds(texts, [(n,) for n in names], seeds_per_prompt, seed * 10**6)


def cityscapes_prompts(n: int, seed: int = 0, domain_token: str | None = None,
                       max_classes: int = 5) -> list[Prompt]:
    """The variable-length Cityscapes template; ``domain_token`` ("sks") gives the adapted variant."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, max_classes + 1))
        names = [str(c) for c in rng.choice(CITYSCAPES.names[1:], size=k, replace=False)]
        words = ", ".join(CITYSCAPES_PROMPT_WORDS.get(c, c) for c in names)
        text = CITYSCAPES_TEMPLATE.format(class_names=words, domain=f"{domain_token} " if domain_token else "")
        out.append(Prompt(text, tuple(c for c in CITYSCAPES.names if c in names), seed * 10**6 + i))
    return out


def class_prompt(names: Sequence[str]) -> str:
    """A prompt naming classes, "a photo of a dog and a cat" (the paper's prompts from ground-truth
    labels for null-text inversion, Sec. 4.5)."""
    words = [f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names]
    if not words:
        raise ValueError("a class prompt needs at least one class")
    return "a photo of " + (", ".join(words[:-1]) + " and " if len(words) > 1 else "") + words[-1]

