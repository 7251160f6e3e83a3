"""A study is a combination (docs/architecture.md, section 2): a pipeline, a prompt set, a real training
set, a validation set and a preset. The toy world is the default combination; a profile names
another, e.g. Stable Diffusion with PASCAL VOC. Notebooks 01-06 run the same cells on either.

A dataset is named by a spec: a name a plugin registers (``registry.DATASETS``, e.g. ``"toy"``,
written once as a VOC-layout folder under ``data/``), or ``"<kind>:<path>"`` with a kind of
``seg_data.KINDS`` that has a label space: ``voc``, ``cityscapes`` or ``imagenet-s``, each read as
distributed (``python -m a2m_utils.seg_data check KIND PATH``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch

from ..classes import LABEL_SPACES, ClassVocab, to_eval_ids
from ..dataset import Settings
from ..prompts import Prompt, class_prompt
from ..registry import DATASETS, ORACLES, PRESETS, PROMPT_SETS, VOCABS, load_pipeline, load_plugins
from ..segmentation import predict
from ..seg_data import KINDS as ALL_KINDS
from ..seg_data import DatasetKind, SegFiles, VOCLayout, resize
from .experiments import DATA, Arrays, cached_dataset

KINDS = {name: k for name, k in ALL_KINDS.items() if k.space}  # the kinds a study reads: those with a label space


def parse_set(spec: str) -> tuple[DatasetKind, Path | None]:
    """The kind of a dataset spec, and its path (None for a registered name: its kind's ``folder`` writes it)."""
    if spec in DATASETS:
        return DATASETS[spec], None
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS or not path:
        raise ValueError(f"unknown dataset {spec!r}: expected one of {sorted(DATASETS)} or '<kind>:<path>' "
                         f"with kind one of {sorted(KINDS)}")
    return KINDS[kind], Path(path)


def open_set(spec: str, role: str, size: int | None = None, root: Path = DATA) -> SegFiles:
    """The ``role`` ("train" or "val") of a dataset spec (``DatasetKind.open``: VOC's train role is SBD's
    ``train_aug`` when the folder has it, else ``train``); a registered name is written under ``root`` first."""
    kind, path = parse_set(spec)
    return kind.open(kind.folder(root) if path is None else path, role, size)


@dataclass(frozen=True, kw_only=True)
class Study:
    """One combination; every field is a papermill parameter of the notebooks."""

    preset: str = "toy"  # registry.PRESETS: sampling and mask settings, and the default model
    model: str | None = None  # a pipeline folder or hub id; None: the preset's
    scheduler: str | None = None  # a diffusers scheduler class name; None: the preset's
    prompt_set: str = "toy"  # registry.PROMPT_SETS; it fixes the vocabulary
    coco_captions: str | None = None  # the COCO captions JSON of the "voc-coco" prompt set
    train_set: str = "toy"  # the real training set (spec)
    val_set: str = "toy"  # the validation set (spec)
    image_size: int | None = None  # every image the segmenters see resized to this square; None: as stored
    device: str | None = None  # None: "cuda" when there is a GPU, else "cpu"

    def __post_init__(self) -> None:
        load_plugins()  # the toy world registers its presets, prompt sets and datasets
        object.__setattr__(self, "device", self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        for name, table in (("preset", PRESETS), ("prompt_set", PROMPT_SETS)):
            if getattr(self, name) not in table:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {sorted(table)}")
        for spec in (self.train_set, self.val_set):
            parse_set(spec)

    @cached_property
    def vocab(self) -> ClassVocab:
        return VOCABS[PROMPT_SETS[self.prompt_set][0]]

    @property
    def space(self) -> str:
        """The validation set's label space."""
        return parse_set(self.val_set)[0].space

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The evaluated classes, by label id: Cityscapes' 19 train ids have no background."""
        if self.space == "fgbg":
            return "background", "foreground"
        names = LABEL_SPACES[self.space].names
        return names[1:] if self.space == "cityscapes" else names

    def with_(self, **changes) -> Study:
        return replace(self, **changes)

    def pipeline(self):
        """The pipeline of ``model`` (None: the preset's) with the study's scheduler, on its device."""
        p = PRESETS[self.preset]
        return load_pipeline(self.model or p.model, self.device, scheduler=self.scheduler or p.scheduler)

    def settings(self, **changes) -> Settings:
        """The preset's dataset settings with ``changes`` (None: keep the preset's), on this study's vocabulary."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(PRESETS[self.preset].settings, vocab=PROMPT_SETS[self.prompt_set][0], **changes)

    def prompt_list(self, n: int, seed: int = 0, target: bool = False) -> list[Prompt]:
        """``n`` prompts of the prompt set (for template sets, ``n`` per class); ``target``: the
        domain-token variant (the toy world's target domain, Cityscapes' "sks")."""
        return PROMPT_SETS[self.prompt_set][1](n=n, seed=seed, seeds_per_prompt=1, coco_json=self.coco_captions,
                                               domain="target" if target else "source",
                                               domain_token="sks" if target else None)

    def generated(self, pipe, prompts: list[Prompt], settings: Settings, name: str, n: int | None = None) -> SegFiles:
        """The first ``n`` samples of the dataset ``pipe`` generates from ``prompts`` (cached under
        ``data/<name>-<hash>``), read on demand: images, pseudo-masks in the validation set's label
        space, and reliability maps (Eq. 6), at the study's ``image_size``."""
        folder = cached_dataset(pipe, prompts, settings, name)
        table = to_eval_ids(VOCABS[settings.vocab], self.space)
        return VOCLayout(folder, size=self.image_size).relabelled(partial(np.take, table)).head(n)

    def resize(self, images: np.ndarray, *label_maps: np.ndarray) -> tuple[np.ndarray, ...]:
        """Generated images and their maps at the study's ``image_size`` (the segmenters' input size)."""
        return resize(images, *label_maps, size=self.image_size)

    def to_eval(self, labels: np.ndarray, vocab: ClassVocab | None = None) -> np.ndarray:
        """Labels of a generated dataset (``vocab``, default the study's) in the validation set's label space."""
        return to_eval_ids(vocab or self.vocab, self.space)[labels]

    def oracle_masks(self, images: np.ndarray) -> np.ndarray | None:
        """Reference masks of generated images from the vocabulary's oracle (``registry.ORACLES``), or None."""
        name = PROMPT_SETS[self.prompt_set][0]
        return predict(ORACLES[name](), images) if name in ORACLES else None

    def real(self, n: int | None = None) -> SegFiles:
        """The first ``n`` images of the real training set (all, for None), read on demand, all reliable."""
        return open_set(self.train_set, "train", self.image_size).head(n)

    def val(self, n: int | None = None) -> Arrays:
        """The first ``n`` images of the validation set (all, for None) as arrays (of one size)."""
        return self.val_files(n).arrays()

    def val_files(self, n: int | None = None) -> SegFiles:
        """The first ``n`` images of the validation set (all, for None), read on demand at the study's
        ``image_size`` (None: each at its own size, as ``segmenters.score`` scores them)."""
        return open_set(self.val_set, "val", self.image_size).head(n)

    def captions(self, n: int, role: str = "train") -> list[str]:
        """A caption for each of the first ``n`` images of the training (or validation) set: the folder's
        ``captions.json`` (id -> caption) where it has one, else a prompt naming the classes of the
        image's label (the paper's null-text inversion prompts, Sec. 4.5)."""
        spec = self.train_set if role == "train" else self.val_set
        files = open_set(spec, role)
        kind, path = parse_set(spec)
        table = kind.find(kind.folder(DATA) if path is None else path) / "captions.json"
        if table.is_file():
            captions = json.loads(table.read_text())
            return [captions[p.stem] for p in files.images[:n]]
        names = self.class_names
        return [class_prompt([names[c] for c in np.unique(files[i][1])
                             if c < len(names) and names[c] != "background"]) for i in range(n)]
