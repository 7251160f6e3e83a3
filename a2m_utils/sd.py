"""Stable Diffusion 1.x shapes, for building models without a download: the real architecture
with random weights (the compute of the real checkpoint), or the same layout shrunk for tests."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .classes import CITYSCAPES, VOC

# CompVis/stable-diffusion-v1-4 unet/config.json: 16 cross-attention layers with 8 heads at 64,
# 32, 16 and 8 latent pixels.
SD14_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
    "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5,
}
# vae/config.json, the text encoder's (CLIP ViT-L/14) shape and scheduler/scheduler_config.json.
SD14_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
                   "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
                   "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32}
SD14_TEXT_CONFIG = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
SD14_SCHEDULER_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                         "clip_sample": False}

# The same layout shrunk for tests (as diffusers' own pipeline tests do): 32x32 images, 16x16 latents.
TINY_SD_UNET_CONFIG = dict(
    SD14_UNET_CONFIG, sample_size=16, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
    cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
)
TINY_VAE_CONFIG = dict(SD14_VAE_CONFIG, sample_size=32, block_out_channels=(8, 8), layers_per_block=1,
                       down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                       norm_num_groups=4)
TINY_TEXT_CONFIG = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def sd_unet(config: dict = SD14_UNET_CONFIG, seed: int = 0) -> UNet2DConditionModel:
    """A randomly initialised U-Net of the given configuration (the global random state is kept)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DConditionModel(**config)


def random_sd(tokenizer, tiny: bool = False, text_layers: int | None = None, latent: int | None = None,
              seed: int = 0) -> StableDiffusionPipeline:
    """A Stable Diffusion 1.4-shaped pipeline with random weights (``tiny``: the test-sized layout)
    around ``tokenizer``: ``text_layers`` overrides the text encoder's depth, ``latent`` the U-Net's
    latent size. Save it with ``save_pretrained`` to get a folder that loads like the real one."""
    unet_config, text_config = (TINY_SD_UNET_CONFIG, TINY_TEXT_CONFIG) if tiny else (SD14_UNET_CONFIG, SD14_TEXT_CONFIG)
    unet = sd_unet(dict(unet_config, sample_size=latent or unet_config["sample_size"]), seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            **dict(text_config, num_hidden_layers=text_layers or text_config["num_hidden_layers"])))
        vae = AutoencoderKL(**(TINY_VAE_CONFIG if tiny else SD14_VAE_CONFIG))
    pipe = StableDiffusionPipeline(vae.eval(), text.eval(), tokenizer, unet.eval(), DDPMScheduler(**SD14_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Words of the smoke profiles' prompts: VOC's and Cityscapes' class names, the template words of the prompt
# sets and a few function words, each one token.
SMOKE_WORDS = ["a", "an", "photo", "of", "and", "on", "in", "the", "next", "to", "with", "riding", "above",
               "background", "cityscape", "by", "dashboard", "camera", "sks", "sand", "plant",
               *dict.fromkeys(w for n in VOC.names[1:] + CITYSCAPES.names[1:] for w in n.split())]


def offline_clip_tokenizer(folder: str | Path, words: list[str], max_length: int = 77, cls: type = CLIPTokenizer):
    """A CLIP BPE tokenizer (``cls``: slow or fast) over ``words`` (each one token) and single letters,
    built without a download; "aeroplane" becomes the two tokens "aero" + "plane</w>", as with CLIP's BPE."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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


def main(argv: list[str] | None = None) -> None:
    """``python -m a2m_utils.sd OUT [--tiny]``: save a Stable Diffusion 1.4-shaped pipeline with random
    weights (``--tiny``: the test-sized layout, 32x32 images) and an offline tokenizer over
    ``SMOKE_WORDS``, loadable with ``from_pretrained`` like the real checkpoint (profile smoke-sd)."""
    p = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as files:
        tokenizer = offline_clip_tokenizer(files, SMOKE_WORDS, 32 if a.tiny else 77)
        random_sd(tokenizer, tiny=a.tiny).save_pretrained(a.out)
    print(f"saved a random {'tiny ' if a.tiny else ''}Stable Diffusion 1.4-shaped pipeline to {a.out}")


if __name__ == "__main__":
    main()
