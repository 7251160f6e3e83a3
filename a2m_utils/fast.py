"""Throughput settings for a diffusers pipeline on a GPU (measured lever by lever in
``benchmarks/sd_gpu_cost.py``). The maps ``trace`` captures stay those of the same model: only
the kernels that compute it change."""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel

from .capture import denoiser


def fast(pipe, channels_last: bool = True, fuse_qkv: bool = True, compile: bool = True):
    """Make ``pipe`` faster in place and return it: channels-last U-Net and VAE (cuDNN's fast
    convolution layout), fused q/k/v projections (a U-Net pipeline's, a Flux transformer's; SD3's
    fused processor skips SD3.5's q/k norms, so SD3 stays unfused), and ``torch.compile`` of the whole
    denoiser, one static graph per batch size (the first call at a new batch size compiles).
    ``trace`` runs its captured steps eagerly, every other step compiled."""
    model = denoiser(pipe)
    unet = model is getattr(pipe, "unet", None)
    if channels_last:
        for part in (model if unet else None, getattr(pipe, "vae", None)):
            if part is not None:
                part.to(memory_format=torch.channels_last)
    if fuse_qkv and unet and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
    elif fuse_qkv and isinstance(model, FluxTransformer2DModel):
        model.fuse_qkv_projections()
    if compile:
        setattr(pipe, "unet" if unet else "transformer", torch.compile(model, dynamic=False))
    return pipe
