"""Throughput settings for a diffusers pipeline on a GPU (issue 19; measured lever by lever in
``benchmarks/sd_gpu_cost.py``). The maps ``trace`` captures stay those of the same model: only
the kernels that compute it change."""

from __future__ import annotations

import torch


def fast(pipe, channels_last: bool = True, fuse_qkv: bool = True, compile: bool = True):
    """Make ``pipe`` faster in place and return it: channels-last U-Net and VAE (cuDNN's fast
    convolution layout), fused q/k/v projections (where the pipeline offers them), and
    ``torch.compile`` of the whole U-Net, one static graph per batch size (the first call at a new
    batch size compiles). ``trace`` runs its captured steps eagerly, every other step compiled."""
    if channels_last:
        for model in (pipe.unet, getattr(pipe, "vae", None)):
            if model is not None:
                model.to(memory_format=torch.channels_last)
    if fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
    if compile:
        pipe.unet = torch.compile(pipe.unet, dynamic=False)
    return pipe
