"""Throughput settings for a Stable Diffusion pipeline on a GPU (issue 19; measured lever by lever
in ``benchmarks/sd_gpu_cost.py``). The maps ``trace`` captures stay those of the same model:
only the kernels that compute it change."""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D

# The U-Net's parts that hold no attention processor. ``trace`` swaps the processors in and out
# and its capturing processor reads the step, so compiling them would recompile on every step.
COMPILED = (ResnetBlock2D, FeedForward, Downsample2D, Upsample2D)
# Their instances share one compiled ``forward`` per class, specialised to each channel count
# and batch: Stable Diffusion's U-Net needs more than torch's default limit of 8 of these.
RECOMPILE_LIMIT = 64


def fast(pipe, channels_last: bool = True, fuse_qkv: bool = True, compile: bool = True):
    """Make ``pipe`` faster in place and return it: channels-last U-Net and VAE (cuDNN's fast
    convolution layout), fused q/k/v projections on every uncaptured step, and ``torch.compile``
    of each ResNet block, feed-forward and resampler (regional: the attention layers stay eager,
    so capture never triggers a recompile). The first call at a new batch size compiles."""
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if fuse_qkv:
        pipe.fuse_qkv_projections()
    if compile:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        for module in pipe.unet.modules():
            if isinstance(module, COMPILED):
                module.compile()
    return pipe
