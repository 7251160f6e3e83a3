import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from a2m_utils.sd import TINY_SD_UNET_CONFIG, random_sd, sd_unet
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
    """A CLIP BPE tokenizer built offline: 'aeroplane' becomes the two tokens 'aero' + 'plane</w>'."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [*letters, *(c + "</w>" for c in letters), ",</w>"]
    merges = []
    for word in ["aero", "plane", *words]:
        pieces = list(word[:-1]) + [word[-1] + ("" if word == "aero" else "</w>")]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.append(pieces[0])
    vocab = list(dict.fromkeys([*vocab, "<|startoftext|>", "<|endoftext|>"]))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return cls(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def tiny_sd(folder) -> StableDiffusionPipeline:
    """A tiny random Stable Diffusion pipeline with a VAE and a CLIP BPE tokenizer of length 16
    (latents 4 x 16 x 16 for 32 x 32 images); its tokenizer files are written to ``folder``."""
    return random_sd(clip_tokenizer(folder, max_length=16), tiny=True)
