"""Sampling with classifier-free guidance and attention capture, for any back-end.

``generate(backend, prompts, seeds)`` returns the images and the per-token
cross-attention maps of the chosen steps. Each image's starting noise and every
stochastic sampler draw come from a generator seeded with its own seed, so the same
seed gives the same image and maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from .attention import Steps, capture_attention
from .backends import Backend
from .images import to_uint8

PAPER_STEPS = 100  # DDPM steps (the paper's setting)
PAPER_CAPTURE_STEP = 50  # step index whose maps are taken
SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


@dataclass
class Generation:
    images: np.ndarray  # (B, H, W, 3) uint8
    attention: np.ndarray  # (B, tokens, h, w) float32, at the latent resolution
    prompts: list[str]
    seeds: list[int]
    steps_used: list[tuple[int, int]]  # (step index, scheduler timestep) the maps came from
    by_resolution: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # layer res -> maps
    self_attention: np.ndarray | None = None  # (B, N, N) when asked for

    @staticmethod
    def concat(parts: Sequence[Generation]) -> Generation:
        """Join generations made in batches with the same settings."""
        first = parts[0]
        return Generation(
            images=np.concatenate([p.images for p in parts]),
            attention=np.concatenate([p.attention for p in parts]),
            prompts=[q for p in parts for q in p.prompts],
            seeds=[s for p in parts for s in p.seeds],
            steps_used=first.steps_used,
            by_resolution={r: np.concatenate([p.by_resolution[r] for p in parts]) for r in first.by_resolution},
            self_attention=None if first.self_attention is None
            else np.concatenate([p.self_attention for p in parts]),
        )


def sampler(backend: Backend, name: str, num_steps: int):
    """A fresh scheduler of kind ``name`` with the back-end's noise schedule, set to ``num_steps``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    sched = SAMPLERS[name].from_config(backend.scheduler.config)
    sched.set_timesteps(num_steps)
    return sched


@torch.no_grad()
def sample(
    backend: Backend,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_steps: int = PAPER_STEPS,
    guidance_scale: float = 7.5,
    sampler_name: str = "ddpm",
) -> torch.Tensor:
    """The sampling loop alone: images in [-1, 1], (B, 3, H, W)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    sched = sampler(backend, sampler_name, num_steps)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    latents = torch.stack([torch.randn(backend.latent_shape, generator=g) for g in gens]).to(backend.device)
    latents = latents * sched.init_noise_sigma
    guided = guidance_scale != 1.0
    context = backend.encode(list(prompts))
    if guided:
        context = torch.cat([backend.encode([""] * len(prompts)), context])
    context = context.to(backend.unet.dtype)
    for t in sched.timesteps:
        x = torch.cat([latents] * 2) if guided else latents
        eps = backend.unet(sched.scale_model_input(x, t).to(backend.unet.dtype), t, context).sample.float()
        if guided:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        latents = sched.step(eps, t, latents, generator=gens).prev_sample
    return backend.decode(latents)


def generate(
    backend: Backend,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_steps: int = PAPER_STEPS,
    guidance_scale: float = 7.5,
    capture_steps: Steps = PAPER_CAPTURE_STEP,
    sampler_name: str = "ddpm",
    self_attention_res: int | None = None,
) -> Generation:
    """Images and captured cross-attention for a batch of prompts, one seed each."""
    with capture_attention(backend.unet, steps=capture_steps, guidance=guidance_scale != 1.0,
                           self_attention_res=self_attention_res) as store:
        images = sample(backend, prompts, seeds, num_steps, guidance_scale, sampler_name)
    return Generation(
        images=to_uint8(images),
        attention=store.cross_attention().cpu().numpy(),
        prompts=list(prompts),
        seeds=[int(s) for s in seeds],
        steps_used=store.steps_used,
        by_resolution={r: store.cross_attention(r).cpu().numpy() for r in store.resolutions},
        self_attention=store.self_attention().cpu().numpy() if self_attention_res else None,
    )


def generate_many(backend: Backend, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16,
                  progress: bool = True, **kwargs) -> Generation:
    """``generate`` in batches of ``batch_size`` (results do not depend on the batch size)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    starts = range(0, len(prompts), batch_size)
    parts = [generate(backend, prompts[i:i + batch_size], seeds[i:i + batch_size], **kwargs)
             for i in (tqdm(starts, desc="generate") if progress else starts)]
    return Generation.concat(parts)
