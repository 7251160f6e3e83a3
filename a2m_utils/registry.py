"""What the command line and the study can name: pipeline classes, vocabularies, prompt sets, datasets
and segmenters.

The core registers its own (VOC, Cityscapes, COCO captions, templates); a plugin such as the
toy world (``a2m_utils.toy``, declared under the ``a2m_utils.plugins`` entry point in
pyproject.toml) registers its own on import, so the core never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .classes import CITYSCAPES, IMAGENET_S, IMAGENET_S_FGBG, VOC, ClassVocab
from .dataset import Settings
from .prompts import Prompt, cityscapes_prompts, coco_captions, template_prompts
from .seg_data import DatasetKind
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
# The newer pipelines sample as their model cards do, at the pipeline's default size (1024x1024 for all three: a
# 128-pixel latent times the VAE's 8), and keep the maps of the middle step, as the paper's step 50 of 100.
PRESETS: dict[str, Preset] = {
    "sd": Preset("CompVis/stable-diffusion-v1-4", "DDPMScheduler", Settings(vocab="voc", self_attention_res=32)),
    # stabilityai/stable-diffusion-xl-base-1.0: its scheduler_config.json's EulerDiscreteScheduler; its model card
    # calls the pipeline with diffusers' defaults, 50 steps and guidance 5.0; maps of step 25; self-attention at 32x32
    # latent pixels (its coarsest attention level) for the refinement.
    "sdxl": Preset("stabilityai/stable-diffusion-xl-base-1.0", "EulerDiscreteScheduler", Settings(
        vocab="voc", num_steps=50, guidance_scale=5.0, capture_steps=(25,), self_attention_res=32)),
    # stabilityai/stable-diffusion-3-medium-diffusers, its model card: FlowMatchEulerDiscreteScheduler, 28 steps,
    # guidance 7.0; maps of step 14.
    "sd3": Preset("stabilityai/stable-diffusion-3-medium-diffusers", "FlowMatchEulerDiscreteScheduler", Settings(
        vocab="voc", num_steps=28, guidance_scale=7.0, capture_steps=(14,))),
    # black-forest-labs/FLUX.1-dev, its model card: FlowMatchEulerDiscreteScheduler, 50 steps, guidance 3.5 (distilled:
    # the scale is an input of the transformer, no unconditional batch); maps of step 25. FLUX.1-schnell's card:
    # 4 steps, guidance 0 (--model black-forest-labs/FLUX.1-schnell --steps 4 --guidance 0 --capture 2).
    "flux": Preset("black-forest-labs/FLUX.1-dev", "FlowMatchEulerDiscreteScheduler", Settings(
        vocab="voc", num_steps=50, guidance_scale=3.5, capture_steps=(25,))),
}
PIPELINES: dict[str, type] = {}  # model_index.json's _class_name -> a pipeline class diffusers does not know
VOCABS: dict[str, ClassVocab] = {"voc": VOC, "cityscapes": CITYSCAPES, "imagenet-s": IMAGENET_S_FGBG}


def imagenet_s_prompts(n: int, seeds_per_prompt: int = 1, seed: int = 0, **_) -> list[Prompt]:
    """``n`` prompts (each with its seeds) of the paper's template over ImageNet-S's 919 classes in turn (Sec. 4.1),
    each naming its class as the foreground of Table 3's FG/BG task: ``n`` per class of its vocabulary."""
    per_class = -(-n // (IMAGENET_S.num_classes - 1))
    prompts = template_prompts(IMAGENET_S, per_class, seeds_per_prompt, seed)[: n * seeds_per_prompt]
    return [replace(p, classes=("foreground",)) for p in prompts]


# name -> (vocabulary name, builder of the prompts). Builders take keywords, each the ones it uses: n (prompts; per
# class for templates; at most, for captions), seed, seeds_per_prompt, coco_json, domain, domain_token.
PROMPT_SETS: dict[str, tuple[str, Callable[..., list[Prompt]]]] = {
    "voc-coco": ("voc", lambda n, seed, seeds_per_prompt, coco_json, **_: coco_captions(
        coco_json, VOC, seeds_per_prompt, seed)[0][: n or None]),
    "imagenet-s": ("imagenet-s", imagenet_s_prompts),
    "cityscapes": ("cityscapes", lambda n, seed, domain_token=None, **_: cityscapes_prompts(n, seed, domain_token)),
}

# Named datasets a plugin writes on demand: name -> its kind (seg_data.DatasetKind) with ``folder``, a function of a
# root folder that returns the dataset's folder, written under that root the first time.
DATASETS: dict[str, DatasetKind] = {}
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
    info = json.loads(index.read_text()) if index.is_file() else {}
    cls = PIPELINES.get(info.get("_class_name"), diffusers.DiffusionPipeline)
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    no_checker = cls is diffusers.DiffusionPipeline and (not info or "safety_checker" in info)  # SD 1.x/2.x have one
    extra = {"safety_checker": None, "requires_safety_checker": False} if no_checker else {}
    try:
        pipe = cls.from_pretrained(str(local) if local.is_dir() else str(model), dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load the pipeline {str(model)!r}: {err}. Give a local folder in diffusers layout (with "
            "model_index.json), or a hub id on a machine that can download it (gated models need `hf auth login`)"
        ) from err
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
