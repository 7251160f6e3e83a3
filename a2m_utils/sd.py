"""Stable Diffusion 1.x and XL shapes, for building models without a download: the real architecture
with random weights (the compute of the real checkpoint), or the same layout shrunk for tests."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


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
        text = CLIPTextModel(clip_text_config(
            tokenizer, dict(text_config, num_hidden_layers=text_layers or text_config["num_hidden_layers"])))
        vae = AutoencoderKL(**(TINY_VAE_CONFIG if tiny else SD14_VAE_CONFIG))
    pipe = StableDiffusionPipeline(vae.eval(), text.eval(), tokenizer, unet.eval(), DDPMScheduler(**SD14_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json: 70 cross-attention layers, 10 heads at 64 and 20 at
# 32 latent pixels (of 128: 1024x1024 images). The context is CLIP ViT-L's 768 features beside OpenCLIP
# ViT-bigG's 1280; bigG's pooled embedding and six size ids (2816 = 6 x 256 + 1280) enter the time embedding.
SDXL_UNET_CONFIG = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "act_fn": "silu",
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5,
}
# text_encoder_2/config.json (text_encoder is SD 1.4's CLIP ViT-L), vae/config.json (SD's shape, its own scale) and
# scheduler/scheduler_config.json (an EulerDiscreteScheduler on SD's noise schedule).
SDXL_TEXT_2_CONFIG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}
SDXL_VAE_CONFIG = dict(SD14_VAE_CONFIG, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_SCHEDULER_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                         "timestep_spacing": "leading"}

# Shrunk as the tiny SD: three levels as SDXL's (attention at half and a quarter of the latent size), two text
# encoders of width 16 (context 32) and two layers (SDXL reads the penultimate one), 8-wide size embeddings
# (6 x 8 + 16 pooled).
TINY_SDXL_UNET_CONFIG = dict(
    SDXL_UNET_CONFIG, sample_size=16, layers_per_block=1, block_out_channels=(8, 16, 16),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 2, 2), cross_attention_dim=32,
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16, norm_num_groups=4,
)
TINY_SDXL_TEXT_CONFIG = dict(TINY_TEXT_CONFIG, num_hidden_layers=2)
TINY_SDXL_TEXT_2_CONFIG = dict(TINY_SDXL_TEXT_CONFIG, hidden_act="gelu", projection_dim=16)
TINY_SDXL_VAE_CONFIG = dict(TINY_VAE_CONFIG, scaling_factor=0.13025, force_upcast=True)


def clip_text_config(tokenizer, config: dict) -> CLIPTextConfig:
    """A CLIP text encoder's configuration of shape ``config`` for ``tokenizer``'s vocabulary and length."""
    return CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **config)


def random_sdxl(tokenizer, tokenizer_2, tiny: bool = False, latent: int | None = None,
                seed: int = 0) -> StableDiffusionXLPipeline:
    """A Stable Diffusion XL base 1.0-shaped pipeline with random weights (``tiny``: the test-sized
    layout) around CLIP's tokenizer and its twin ``tokenizer_2`` (SDXL's pads with "!"); ``latent``
    overrides the U-Net's latent size. Saved with ``save_pretrained``, it loads like the real one."""
    unet_config = TINY_SDXL_UNET_CONFIG if tiny else SDXL_UNET_CONFIG
    unet = sd_unet(dict(unet_config, sample_size=latent or unet_config["sample_size"]), seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text = CLIPTextModel(clip_text_config(tokenizer, TINY_SDXL_TEXT_CONFIG if tiny else SD14_TEXT_CONFIG))
        text_2 = CLIPTextModelWithProjection(clip_text_config(
            tokenizer_2, TINY_SDXL_TEXT_2_CONFIG if tiny else SDXL_TEXT_2_CONFIG))
        vae = AutoencoderKL(**(TINY_SDXL_VAE_CONFIG if tiny else SDXL_VAE_CONFIG))
    pipe = StableDiffusionXLPipeline(vae.eval(), text.eval(), text_2.eval(), tokenizer, tokenizer_2, unet.eval(),
                                     EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"  # CLIP's BPE merges, shipped in the open-clip-torch wheel
CLIP_MERGES = 49152 - 256 - 2  # merges kept by CLIP (and SD's tokenizer/): lines 1..48894 of that file


def clip_tokenizer(folder: str | Path, max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """Stable Diffusion's CLIP tokenizer (49,408 tokens, the vocabulary of SD 1.x's ``tokenizer/``) built
    offline from the BPE file of the ``open-clip-torch`` wheel and written to ``folder`` (``vocab.json``,
    ``merges.txt``). ``pad_token``: SD 1.x pads with the end token, SD 2.x and SDXL's second tokenizer with "!"."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise ModuleNotFoundError("building CLIP's tokenizer offline needs open-clip-torch (pip install open-clip-torch), "
                                  "whose wheel ships CLIP's BPE file")
    bpe = Path(spec.submodule_search_locations[0]) / CLIP_BPE
    merges = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")[1:CLIP_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m.split()) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                         pad_token=pad_token)


def sdxl_tokenizers(folder: str | Path, max_length: int = 77) -> tuple[CLIPTokenizer, CLIPTokenizer]:
    """SDXL's two tokenizers, built offline under ``folder``: CLIP's, and its twin that pads with "!"."""
    folder = Path(folder)
    return (clip_tokenizer(folder / "tokenizer", max_length),
            clip_tokenizer(folder / "tokenizer_2", max_length, pad_token="!"))


def main(argv: list[str] | None = None) -> None:
    """``python -m a2m_utils.sd OUT [--tiny] [--xl]``: save a Stable Diffusion 1.4-shaped pipeline (``--xl``:
    SDXL base 1.0-shaped) with random weights (``--tiny``: the test-sized layout, 32x32 images) and SD's
    CLIP tokenizer built offline, loadable with ``from_pretrained`` like the real checkpoint."""
    p = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--xl", action="store_true", help="Stable Diffusion XL base 1.0's layout")
    a = p.parse_args(argv)
    if a.out.exists():
        p.error(f"{a.out} exists; choose a new folder (nothing is overwritten)")
    length = 32 if a.tiny else 77
    with tempfile.TemporaryDirectory() as files:
        if a.xl:
            pipe = random_sdxl(*sdxl_tokenizers(files, length), tiny=a.tiny)
        else:
            pipe = random_sd(clip_tokenizer(files, length), tiny=a.tiny)
        pipe.save_pretrained(a.out)
    shape = "Stable Diffusion XL base 1.0" if a.xl else "Stable Diffusion 1.4"
    print(f"saved a random {'tiny ' if a.tiny else ''}{shape}-shaped pipeline to {a.out}")


if __name__ == "__main__":
    main()
