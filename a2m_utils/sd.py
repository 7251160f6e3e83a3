"""Stable Diffusion 1.x: the U-Net configuration, for building models without a download."""

from __future__ import annotations

from diffusers import UNet2DConditionModel

# CompVis/stable-diffusion-v1-4 unet/config.json (the architecture; weights are not needed
# to measure compute): 16 cross-attention layers with 8 heads at 64, 32, 16 and 8 latent pixels.
SD14_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    act_fn="silu", center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True,
    freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5,
)

# The same layout shrunk for tests (as diffusers' own pipeline tests do).
TINY_SD_UNET_CONFIG = dict(
    SD14_UNET_CONFIG, sample_size=16, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
    cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
)


def sd_unet(config: dict = SD14_UNET_CONFIG, seed: int = 0) -> UNet2DConditionModel:
    """A randomly initialised U-Net of the given configuration."""
    import torch

    torch.manual_seed(seed)
    return UNet2DConditionModel(**config)
