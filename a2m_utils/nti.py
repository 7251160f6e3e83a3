"""Null-text inversion (Mokady et al. 2022) on any UNet2DConditionModel pipeline (Stable Diffusion
1.x/2.x/XL, the toy pipeline), and attention of a real image.

``invert(pipe, images, prompts)`` inverts a batch of images with DDIM under their
conditional embeddings alone, optimises one unconditional ("null") embedding per image and
step so that the guided DDIM path retraces the inversion, then regenerates the images with
those embeddings while capturing their cross-attention. Nothing is random. On SDXL the null
embedding is the unconditional token sequence; its pooled embedding and size ids stay the
pipeline's own (``conditioning``). Flow-matching pipelines (SD3, Flux) are not DDIM-invertible.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .capture import Steps, capture_attention
from .conditioning import Conditioning, condition, guidance_pair, predict_noise
from .guidance import guide
from .images import to_uint8
from .latents import to_images, to_latents
from .phases import phase
from .trace import autocast

NTI_STEPS = 50  # DDIM steps (Mokady et al.)
NTI_GUIDANCE = 7.5


@dataclass
class Inversion:
    image: np.ndarray  # (H, W, 3) uint8, the reconstruction (with the null embeddings when optimised)
    attention: np.ndarray  # (tokens, h, w) float32, captured while reconstructing
    steps_used: list[tuple[int, int]]  # (step index, scheduler timestep) the maps came from
    ddim_error: float  # MSE on [0, 1] of the guided reconstruction after plain DDIM inversion
    nti_error: float | None  # the same after null-text optimisation (None when not run)
    latent_T: torch.Tensor  # (1, C, h, w) the inverted noise
    null_embeddings: list[torch.Tensor]  # one (1, tokens, width) per step; the pipeline's unconditional without NTI


def check_pipeline(pipe) -> None:
    """Raise unless the pipeline has a U-Net and a noise schedule of betas, what DDIM inverts."""
    ddpm = "beta_schedule" in pipe.scheduler.config
    if not isinstance(getattr(pipe, "unet", None), torch.nn.Module) or not ddpm:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        raise TypeError(f"null-text inversion needs a DDIM-style scheduler and a U-Net; {type(pipe).__name__} has a "
                        f"{type(denoiser).__name__} and {type(pipe.scheduler).__name__}"
                        f"{'' if ddpm else ' (flow matching)'}: not supported")


def schedulers(pipe, num_steps: int) -> tuple[DDIMScheduler, DDIMInverseScheduler]:
    """DDIM and its inverse on the pipeline's noise schedule (clip_sample and set_alpha_to_one off); the
    inverse takes only the keys it knows (not DDPM's variance_type, of which diffusers would warn)."""
    check_pipeline(pipe)
    kw = {"clip_sample": False, "set_alpha_to_one": False}
    ddim = DDIMScheduler.from_config(pipe.scheduler.config, **kw)
    known = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in pipe.scheduler.config.items() if k in known}, **kw)
    ddim.set_timesteps(num_steps)
    inverse.set_timesteps(num_steps)
    return ddim, inverse


def _guided_step(pipe, sched: DDIMScheduler, latent: torch.Tensor, t, null: Conditioning,
                 eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """One guided DDIM step with given null conditioning (differentiable in its embeddings)."""
    eps_null = predict_noise(pipe, latent, t, null)
    return sched.step(guide(eps_null, eps_cond, guidance_scale), t, latent).prev_sample


@torch.no_grad()
def unoptimised_nulls(pipe, prompts: Sequence[str], num_steps: int) -> list[torch.Tensor]:
    """The pipeline's own unconditional embeddings (the empty prompt's; SDXL's zeros) at every step:
    the null embeddings of plain DDIM inversion, without step 2."""
    return [guidance_pair(pipe, prompts)[1].embeds.float()] * num_steps


@torch.no_grad()
def ddim_invert(pipe, latent: torch.Tensor, prompts: Sequence[str], num_steps: int) -> list[torch.Tensor]:
    """DDIM inversion with the conditional embeddings only: [z_0 = latent, z_1, ..., z_T], each (B, C, h, w)."""
    _, inverse = schedulers(pipe, num_steps)
    cond = condition(pipe, prompts)
    trajectory = [latent.float()]
    for t in inverse.timesteps:
        eps = predict_noise(pipe, trajectory[-1], t, cond)
        trajectory.append(inverse.step(eps, t, trajectory[-1]).prev_sample)
    return trajectory


def null_text_optimise(
    pipe,
    trajectory: Sequence[torch.Tensor],
    prompts: Sequence[str],
    guidance_scale: float = NTI_GUIDANCE,
    inner_steps: int = 10,
    lr: float = 1e-2,
) -> list[torch.Tensor]:
    """Per step i, Adam on each image's null embedding (lr * (1 - i/100), at most ``inner_steps``) so
    the guided DDIM step from the current latent lands on the inverted z_{T-i-1}; an image stops
    early once its loss < 1e-5 + i * 2e-5. The batch's images are optimised independently (the
    loss is a sum of per-image losses, Adam is elementwise, stopped images are held fixed).
    Returns one (B, tokens, width) embedding per step, in sampling order."""
    num_steps = len(trajectory) - 1
    sched, _ = schedulers(pipe, num_steps)
    with torch.no_grad():
        cond, uncond = guidance_pair(pipe, prompts)
    null = uncond.embeds.float()
    latent, nulls = trajectory[-1], []
    for i, t in enumerate(sched.timesteps):
        target = trajectory[num_steps - i - 1]
        with torch.no_grad():
            eps_cond = predict_noise(pipe, latent, t, cond)
        null = null.detach().clone().requires_grad_(True)  # Adam updates in place; keep the stored ones
        opt = torch.optim.Adam([null], lr=lr * (1 - i / 100))
        active = torch.ones(len(prompts), dtype=torch.bool, device=null.device)
        for _ in range(inner_steps):
            step = _guided_step(pipe, sched, latent, t, uncond.with_embeds(null), eps_cond, guidance_scale)
            loss = (step - target).pow(2).flatten(1).mean(1)
            (null.grad,) = torch.autograd.grad(loss.sum(), null)  # no gradients for (or on) the model's weights
            before = null.detach().clone()
            opt.step()
            with torch.no_grad():
                null.copy_(torch.where(active[:, None, None], null, before))
            active &= loss.detach() >= 1e-5 + i * 2e-5
            if not active.any():
                break
        nulls.append(null.detach())
        with torch.no_grad():
            latent = _guided_step(pipe, sched, latent, t, uncond.with_embeds(null), eps_cond, guidance_scale)
    return nulls


@torch.no_grad()
def regenerate(
    pipe,
    latent_T: torch.Tensor,
    prompts: Sequence[str],
    null_embeddings: Sequence[torch.Tensor],
    guidance_scale: float = NTI_GUIDANCE,
    capture_steps: Steps = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Guided DDIM from ``latent_T`` with one null embedding per step, capturing cross-attention:
    the images (B, H, W, 3) uint8, the maps (B, tokens, h, w) and the steps they came from."""
    sched, _ = schedulers(pipe, len(null_embeddings))
    cond, uncond = guidance_pair(pipe, prompts)
    latent = latent_T
    with capture_attention(pipe.unet, steps=capture_steps, guidance=True) as store:
        for t, null in zip(sched.timesteps, null_embeddings):
            pair = uncond.with_embeds(null).cat(cond)
            eps_null, eps_cond = predict_noise(pipe, torch.cat([latent, latent]), t, pair).chunk(2)
            latent = sched.step(guide(eps_null, eps_cond, guidance_scale), t, latent).prev_sample
    images = to_uint8(to_images(pipe, latent))
    return images, store.cross_attention().cpu().numpy(), store.steps_used


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean squared error of uint8 batches, on [0, 1]."""
    return np.mean((a / 255.0 - b / 255.0) ** 2, axis=(1, 2, 3))


@phase("inversion")
def invert(
    pipe,
    images: np.ndarray,
    prompts: Sequence[str],
    num_steps: int = NTI_STEPS,
    guidance_scale: float = NTI_GUIDANCE,
    null_text: bool = True,
    capture_steps: Steps = None,
    inner_steps: int = 10,
    lr: float = 1e-2,
    precision: str = "fp32",
) -> list[Inversion]:
    """Reconstructions and cross-attention of real uint8 images (B, H, W, 3), one prompt each,
    inverted together as one batch (each image as if alone); ``precision`` as ``trace.autocast``."""
    check_pipeline(pipe)
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    with autocast(pipe, precision):
        trajectory = ddim_invert(pipe, to_latents(pipe, images), prompts, num_steps)
        empty = unoptimised_nulls(pipe, prompts, num_steps)
        recon, attn, used = regenerate(pipe, trajectory[-1], prompts, empty, guidance_scale, capture_steps)
        ddim_error, nti_error, nulls = _mse(recon, images), [None] * len(prompts), empty
        if null_text:
            nulls = null_text_optimise(pipe, trajectory, prompts, guidance_scale, inner_steps, lr)
            recon, attn, used = regenerate(pipe, trajectory[-1], prompts, nulls, guidance_scale, capture_steps)
            nti_error = [float(e) for e in _mse(recon, images)]
    return [Inversion(recon[b], attn[b], used, float(ddim_error[b]), nti_error[b], trajectory[-1][b:b + 1],
                      [n[b:b + 1] for n in nulls]) for b in range(len(prompts))]
