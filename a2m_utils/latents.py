"""Between a pipeline's inputs and its U-Net's space: images to latents and back, prompts to embeddings.

Works for latent pipelines (Stable Diffusion: through the VAE) and pixel-space ones (the toy
pipeline has no VAE: the latent is the image in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .images import to_tensor


def vae_of(pipe):
    return getattr(pipe, "vae", None)


def image_size(pipe) -> int:
    """The side of the images the pipeline draws by default."""
    vae = vae_of(pipe)
    scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    return pipe.unet.config.sample_size * scale


def check_images(pipe, images: np.ndarray) -> None:
    """Raise unless ``images`` are uint8 (B, H, W, 3) at the pipeline's image size."""
    s = image_size(pipe)
    if images.ndim != 4 or images.shape[1:] != (s, s, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (batch, {s}, {s}, 3) for this pipeline, got {images.dtype} "
                         f"{images.shape}")


@torch.no_grad()
def to_latents(pipe, images: np.ndarray) -> torch.Tensor:
    """uint8 images (B, H, W, 3) as U-Net inputs (B, C, h, w): themselves in [-1, 1], or the VAE's scaled mean."""
    check_images(pipe, images)
    x = to_tensor(images).to(pipe.unet.device)
    vae = vae_of(pipe)
    if vae is None:
        return x
    return vae.encode(x.to(vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor


@torch.no_grad()
def to_images(pipe, latents: torch.Tensor) -> torch.Tensor:
    """U-Net outputs (B, C, h, w) as images in [-1, 1] (B, 3, H, W)."""
    vae = vae_of(pipe)
    if vae is None:
        return latents
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()


def embed(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text embeddings (B, tokens, width) by the pipeline's own ``encode_prompt``, without guidance."""
    return pipe.encode_prompt(list(prompts), pipe.unet.device, 1, False)[0]
