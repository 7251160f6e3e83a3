import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from a2m_utils.sd import TINY_SD_UNET_CONFIG, offline_clip_tokenizer, random_sd, sd_unet
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


CLIP_WORDS = ["a", "photo", "of", "an", "and", "puppy", "dog", "next", "to", "another", "potted", "plant", "cat"]


def clip_tokenizer(folder, cls=CLIPTokenizer, words=CLIP_WORDS, max_length=77):
    """The library's offline CLIP BPE tokenizer over the tests' words (``cls``: slow or fast)."""
    return offline_clip_tokenizer(folder, words, max_length, cls)


def tiny_sd(folder) -> StableDiffusionPipeline:
    """A tiny random Stable Diffusion pipeline with a VAE and a CLIP BPE tokenizer of length 16
    (latents 4 x 16 x 16 for 32 x 32 images); its tokenizer files are written to ``folder``."""
    return random_sd(clip_tokenizer(folder, max_length=16), tiny=True)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny randomly initialised Stable Diffusion pipeline saved with ``save_pretrained`` (no download)."""
    d = tmp_path_factory.mktemp("tiny-sd")
    (d / "tok").mkdir()
    tiny_sd(d / "tok").save_pretrained(d / "pipe")
    return d / "pipe"
