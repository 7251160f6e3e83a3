"""What the command line and the study can name: pipeline classes, vocabularies, prompt sets, datasets
and segmenters.

The core registers its own (VOC, Cityscapes, COCO captions, templates); a plugin such as the
toy world (``a2m_utils.toy``, declared under the ``a2m_utils.plugins`` entry point in
pyproject.toml) registers its own on import, so the core never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .classes import CITYSCAPES, VOC, ClassVocab
from .dataset import Settings
from .prompts import Prompt, cityscapes_prompts, coco_captions, template_prompts
from .segmentation import PAPER

if TYPE_CHECKING:  # diffusers loads in load_pipeline: importing the kit (e.g. in a segmenter worker) does not
    from diffusers import DiffusionPipeline


@dataclass(frozen=True)
class Preset:
    """A pipeline (folder or hub id), the scheduler it samples with, and the dataset settings."""

    model: str
    scheduler: str  # a diffusers scheduler class name
    settings: Settings


# The paper's: Stable Diffusion 1.4, DDPM 100 steps, maps of step 50 (Settings' defaults); self-attention at 32x32
# latent pixels is kept for notebook 03's refinement beyond the paper (Dataset Diffusion).
PRESETS: dict[str, Preset] = {
    "sd": Preset("CompVis/stable-diffusion-v1-4", "DDPMScheduler", Settings(vocab="voc", self_attention_res=32)),
}
PIPELINES: dict[str, type] = {}  # model_index.json's _class_name -> a pipeline class diffusers does not know
VOCABS: dict[str, ClassVocab] = {"voc": VOC, "cityscapes": CITYSCAPES}
# name -> (vocabulary name, builder of the prompts from the command line's arguments)
PROMPT_SETS: dict[str, tuple[str, Callable[..., list[Prompt]]]] = {
    "voc-coco": ("voc", lambda a: coco_captions(a.coco_json, VOC, a.seeds_per_prompt, a.seed)[0][: a.n or None]),
    "imagenet-s": ("voc", lambda a: template_prompts(VOC, a.n, a.seeds_per_prompt, a.seed)),
    "cityscapes": ("cityscapes", lambda a: cityscapes_prompts(a.n, a.seed, a.domain_token)),
}

# Named datasets a plugin writes on demand: name -> (its label space in classes.LABEL_SPACES, a function of a
# root folder that returns the dataset's VOC-layout folder, written under that root the first time).
DATASETS: dict[str, tuple[str, Callable[[Path], Path]]] = {}
# vocabulary name -> a loader of a segmenter that gives reference masks for generated images (the toy world's
# oracle; real-world vocabularies have none: their pseudo-masks are scored only through the segmenters they train)
ORACLES: dict[str, Callable[[], torch.nn.Module]] = {}
# The notebooks' ``segmenter`` parameter: name -> segmentation.build's keyword arguments (the toy world adds "toy").
SEGMENTERS: dict[str, dict] = {"paper": PAPER}


def load_plugins() -> None:
    """Import every installed plugin (each registers what it brings)."""
    for ep in entry_points(group="a2m_utils.plugins"):
        ep.load()


def segmenter(name: str) -> dict:
    """A registered segmenter's ``segmentation.build`` arguments (plugins loaded first)."""
    load_plugins()
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; expected one of {sorted(SEGMENTERS)}")
    return SEGMENTERS[name]


def load_pipeline(model: str | Path, device: str = "cpu", dtype: torch.dtype | None = None,
                  scheduler: str | None = None) -> DiffusionPipeline:
    """A pipeline from a local folder or a hub id, with ``scheduler`` (a diffusers class name,
    e.g. "DDIMScheduler") on the pipeline's noise schedule; fp16 on CUDA unless ``dtype`` says."""
    import diffusers

    local = Path(model).expanduser()
    index = local / "model_index.json"
    name = json.loads(index.read_text()).get("_class_name") if index.is_file() else None
    cls = PIPELINES.get(name, diffusers.DiffusionPipeline)
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    extra = {} if cls is not diffusers.DiffusionPipeline else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = cls.from_pretrained(str(local) if local.is_dir() else str(model), torch_dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load the pipeline {str(model)!r}: {err}. Give a local folder in diffusers layout (with "
            "model_index.json), or a hub id on a machine that can download it (gated models need `hf auth login`)"
        ) from err
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
