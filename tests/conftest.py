import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from a2m_utils.dit import random_flux, random_sd3, t5_tokenizer
from a2m_utils.sd import TINY_SD_UNET_CONFIG, clip_tokenizer, random_sd, random_sdxl, sd_unet, sdxl_tokenizers
from a2m_utils.toy.pipeline import build_unet


@pytest.fixture(params=["toy", "sd"])
def unet(request):
    """A tiny U-Net of the toy layout or of Stable Diffusion 1.x's layout, random weights."""
    torch.manual_seed(0)
    if request.param == "toy":
        return build_unet(channels=(8, 16, 16), context_dim=16).eval()
    return sd_unet(TINY_SD_UNET_CONFIG).eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="package")
def clip(tmp_path_factory):
    """Stable Diffusion's CLIP tokenizer, built offline from open-clip-torch's BPE file, once for all the tests."""
    return clip_tokenizer(tmp_path_factory.mktemp("clip"))


def tiny_sd(folder) -> StableDiffusionPipeline:
    """A tiny random Stable Diffusion pipeline with a VAE and SD's CLIP tokenizer cut to 16 tokens
    (latents 4 x 16 x 16 for 32 x 32 images); its tokenizer files are written to ``folder``."""
    return random_sd(clip_tokenizer(folder, max_length=16), tiny=True)


def tiny_sdxl(folder, latent: int | None = None) -> StableDiffusionXLPipeline:
    """A tiny random SDXL pipeline (two text encoders, pooled embedding and size ids) with SDXL's two CLIP
    tokenizers cut to 16 tokens (latents 4 x 16 x 16 for 32 x 32 images, or ``latent``); tokenizers under ``folder``."""
    return random_sdxl(*sdxl_tokenizers(folder, 16), tiny=True, latent=latent)


def tiny_mmdit(arch: str, folder):
    """A tiny random SD3 (``arch`` "sd3") or FLUX.1 ("flux") pipeline: CLIP's tokenizers under ``folder``, T5's."""
    clip, clip_2 = sdxl_tokenizers(folder)
    if arch == "flux":
        return random_flux(clip, t5_tokenizer(), tiny=True)
    return random_sd3(clip, clip_2, t5_tokenizer(), tiny=True)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny randomly initialised Stable Diffusion pipeline saved with ``save_pretrained`` (no download)."""
    d = tmp_path_factory.mktemp("tiny-sd")
    (d / "tok").mkdir()
    tiny_sd(d / "tok").save_pretrained(d / "pipe")
    return d / "pipe"
